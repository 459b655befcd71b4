"""Prompt matching: evasions are seen through, innocent tags are left alone."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.moderation.lists import (
    CHILD_SEXUAL_TERMS,
    DEFAULT_BLOCKED_TAGS,
    MINOR_TERMS,
    SEXUAL_TERMS,
    TERM_EXCEPTIONS,
)
from bot.moderation.matching import TermSet, minor_age_terms, normalize_text, scan, tag_key

BLOCKED = TermSet(DEFAULT_BLOCKED_TAGS, TERM_EXCEPTIONS)
MINORS = TermSet(MINOR_TERMS, TERM_EXCEPTIONS)

# (prompt as typed, the blocked term it must be read as)
EVASIONS: list[tuple[str, str]] = [
    ("nsfw", "nsfw"),
    ("NSFW", "nsfw"),
    ("1girl, (nsfw:1.4)", "nsfw"),
    ("1girl, ( nsfw : 1.4 )", "nsfw"),
    ("[[explicit]]", "explicit"),
    ("((((nude))))", "nude"),
    ("(1girl, nude:1.2)", "nude"),
    ("n_s_f_w", "nsfw"),
    ("N S F W", "nsfw"),
    ("n.s.f.w.", "nsfw"),
    ("n-s-f-w", "nsfw"),
    ("ｎｓｆｗ", "nsfw"),
    ("Ｎ Ｓ Ｆ Ｗ", "nsfw"),
    ("（ｎｓｆｗ：１．４）", "nsfw"),
    ("n\u0455fw", "nsfw"),  # Cyrillic dze
    ("\u039dSFW", "nsfw"),  # Greek capital nu
    ("\u0274s\u0493\u1d21", "nsfw"),  # small capitals
    ("\U0001d427\U0001d42c\U0001d41f\U0001d430", "nsfw"),  # mathematical bold
    ("n\u200bs\u200cf\u200dw\u2060", "nsfw"),  # zero-width characters
    ("nu\u00adde", "nude"),  # soft hyphen
    ("nu\u0300de", "nude"),  # combining accent
    ("n\u0336s\u0336f\u0336w\u0336", "nsfw"),  # strike-through overlay
    ("\\nsfw", "nsfw"),  # a backslash before a letter vanishes in A1111
    ("\\(nude\\)", "nude"),  # escaped parens are literal text
    ("n(s)fw", "nsfw"),
    ("(n:1.1)(s:1.1)(f:1.1)(w:1.1)", "nsfw"),
    ("s3x", "sex"),
    ("$ex", "sex"),
    ("nud3", "nude"),
    ("n@ked", "naked"),
    ("completely_nude", "nude"),
    ("nudes", "nude"),
    ("covered nipples", "nipple"),
    ("1girl BREAK nsfw", "nsfw"),
    ("group sex, 2boys", "sex"),
    ("__nsfw__", "nsfw"),  # a wildcard left unexpanded is still read
    ("1girl; nsfw", "nsfw"),
    ("全裸の女の子", "全裸"),
]


@pytest.mark.parametrize(("prompt", "term"), EVASIONS)
def test_evasion_forms_are_matched(prompt: str, term: str) -> None:
    assert term in BLOCKED.find(prompt)


INNOCENT = [
    "1girl, solo, long hair",
    "class",
    "assassin",
    "sextant, Sussex, Essex, middlesex, sexton",
    "cocktail dress, peacock, cockpit, shuttlecock",
    "scunthorpe",
    "analysis, canal, banal",
    "grapes, drape, rapeseed",
    "coral, floral, choral",
    "cucumber, cumulonimbus, document",
    "therapist",
    "1girl, 2boys, 3d, 4k, 7th dragon, 1990s \\(style\\), 00s",
    "hatsune miku, twintails, aqua eyes",
    "ganyu \\(genshin impact\\), souryuu asuka langley",
    "o_o, ^_^, 0_0, >_<, =_=, -_-",
    "explicitly stated, penistone, nudibranch, condominium, direction, porco rosso",
    "sexy pose",  # suggestive, but not on the blocked list
    "score_9, score_8_up, masterpiece, best quality, very aesthetic, absurdres",
    "newest, safe, sensitive",
    "v, peace sign, v over eye",
    "x-ray, t-shirt, a-line skirt",
    "裸足, 女の子",  # barefoot
    "dick grayson, batman \\(series\\), moby dick",
]


@pytest.mark.parametrize("prompt", INNOCENT)
def test_innocent_prompts_match_nothing_blocked(prompt: str) -> None:
    assert BLOCKED.find(prompt) == ()


@pytest.mark.parametrize(
    "prompt",
    ["gothic lolita, frills", "lolita fashion", "(sweet_lolita:1.2)", "classic lolitas"],
)
def test_fashion_tags_are_not_minor_terms(prompt: str) -> None:
    assert MINORS.find(prompt) == ()


@pytest.mark.parametrize(
    ("prompt", "term"),
    [
        ("lolita", "lolita"),
        ("gothic lolita, lolita", "lolita"),
        ("l0li", "loli"),
        ("10li", "loli"),
        ("L O L I", "loli"),
        ("k1d", "kid"),
        ("kids", "kid"),
        ("children", "children"),
        ("aged_down", "aged down"),
        ("(elementary school:1.3) student", "elementary school"),
        ("ロリ巨乳", "ロリ"),
        ("ﾛﾘ", "ロリ"),  # half-width katakana
    ],
)
def test_minor_terms(prompt: str, term: str) -> None:
    assert term in MINORS.find(prompt)


@pytest.mark.parametrize(
    ("prompt", "ages"),
    [
        ("12 years old", ("12 years old",)),
        ("12-year-old", ("12 years old",)),
        ("12yo", ("12 years old",)),
        ("5 y.o.", ("5 years old",)),
        ("aged 9", ("9 years old",)),
        ("ten years old", ("10 years old",)),
        ("17_years_old, 12yo", ("12 years old", "17 years old")),
        ("18 years old", ()),
        ("25yo, 100 years old", ()),
        ("1girl, 2boys, 4k", ()),
    ],
)
def test_stated_ages_under_18(prompt: str, ages: tuple[str, ...]) -> None:
    assert minor_age_terms(prompt) == ages


def test_normalize_text_folds_lookalikes_and_removes_invisible_characters() -> None:
    assert normalize_text("ＮＳＦＷ\u200b") == "nsfw"
    assert normalize_text("\u0430\u0435\u043e\u0440\u0441") == "aeopc"  # Cyrillic
    assert normalize_text("Ｌｏｎｇ　Ｈａｉｒ") == "long hair"


def test_tag_key_ignores_markup_and_spelling() -> None:
    assert tag_key("(Long_Hair:1.2)") == tag_key("long hair") == "long hair"
    assert tag_key("\\(genshin impact\\)") == "genshin impact"
    assert tag_key("^_^") == ""


def test_terms_keep_their_spelling_and_order() -> None:
    terms = TermSet(["Nude", "nude", "  group_sex "])
    assert terms.terms == ("Nude", "group_sex")
    assert len(terms) == 2
    assert "NUDE" in terms
    assert terms.find("group sex, nude") == ("Nude", "group_sex")


def test_multi_word_terms_match_as_whole_words_inside_tags() -> None:
    terms = TermSet(["young girl"])
    assert terms.find("(a young girl:1.2) standing") == ("young girl",)
    assert terms.find("young, girl") == ()  # different tags
    assert terms.find("young girls") == ("young girl",)


def test_every_listed_term_matches_itself() -> None:
    for listed in (SEXUAL_TERMS, CHILD_SEXUAL_TERMS):
        assert len(TermSet(listed)) == len(listed)  # no duplicates in the lists
    for terms in (
        BLOCKED,
        MINORS,
        TermSet(SEXUAL_TERMS, TERM_EXCEPTIONS),
        TermSet(CHILD_SEXUAL_TERMS, TERM_EXCEPTIONS),
    ):
        for term in terms.terms:
            assert term in terms.find(term), term


def test_scan_keeps_digits_in_the_plain_view() -> None:
    scanned = scan("1girl, (s e x:1.2)")
    assert ("1girl",) in scanned.plain
    assert ("sex",) in scanned.sequences


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_can_be_scanned(text: str) -> None:
    scanned = scan(text)
    BLOCKED.find(scanned)
    MINORS.find(scanned)
    minor_age_terms(scanned)
    assert tag_key(tag_key(text)) == tag_key(text)


# How the tag itself is written...
SPELLINGS = st.sampled_from(
    [
        lambda t: t.upper(),
        lambda t: t.replace(" ", "_"),
        "\u200b".join,
        " ".join,
        lambda t: t.translate(str.maketrans("aeos", "\u0430\u0435\u043e\u0455")),
        lambda t: "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in t),
    ]
)
# ...and what it is wrapped in (spelling the wrapper out letter by letter, as in
# "( r 1 8 : 1 . 3 )", is no longer emphasis syntax, so wrappers come after spellings).
WRAPPERS = st.sampled_from(
    [
        lambda t: f"({t}:1.3)",
        lambda t: f"[[{t}]]",
        lambda t: f"1girl, {t}, smile",
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([t for t in DEFAULT_BLOCKED_TAGS if t.isascii()]),
    st.lists(SPELLINGS, max_size=2),
    st.lists(WRAPPERS, max_size=2),
)
def test_disguised_blocked_tags_are_still_found(
    tag: str, spellings: list[Any], wrappers: list[Any]
) -> None:
    text = tag
    for disguise in [*spellings, *wrappers]:
        text = disguise(text)
    assert tag in BLOCKED.find(text), text
