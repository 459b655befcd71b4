"""Tag hygiene, and the rating and year tags."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.prompts import (
    RATINGS,
    YEARS,
    PromptError,
    UnknownTagOptionError,
    add_tags,
    clean_tags,
    rating_tags,
    resolve_rating,
    resolve_year,
    year_tags,
)
from bot.prompts.tags import leaf_tags, split_tags


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("", ""),
        ("   ", ""),
        (" , ,, ", ""),
        ("1girl, solo", "1girl, solo"),
        ("  1girl ,solo ,  smile  ", "1girl, solo, smile"),
        ("1girl,, solo,,, smile,", "1girl, solo, smile"),
        (",1girl , , solo", "1girl, solo"),
        ("long   hair,\n\tblue  eyes", "long hair, blue eyes"),
        ("a\n\nb", "a b"),
        # Underscores.
        ("long_hair, looking_at_viewer", "long hair, looking at viewer"),
        ("ganyu_\\(genshin_impact\\)", "ganyu \\(genshin impact\\)"),
        ("hatsune_miku_\\(append\\)", "hatsune miku \\(append\\)"),
        ("(long_hair:1.2), [blue_eyes]", "(long hair:1.2), [blue eyes]"),
        ("trailing_", "trailing"),
        # Emoticons keep their underscores, alone or inside groups.
        ("^_^, >_<, 0_0, o_o, -_-, =_=", "^_^, >_<, 0_0, o_o, -_-, =_="),
        ("x_x, u_u, T_T, ;_;, @_@, <o>_<o>", "x_x, u_u, T_T, ;_;, @_@, <o>_<o>"),
        ("(^_^:1.2), [>_<], (o_o, long_hair)", "(^_^:1.2), [>_<], (o_o, long hair)"),
        # Duplicates: the first wins, compared after the tidying above.
        ("1girl, solo, 1girl", "1girl, solo"),
        ("long_hair, long hair,  long   hair", "long hair"),
        ("Solo, solo", "Solo, solo"),  # exact duplicates only
        ("(a, b:1.2), a, b, (a, b:1.2)", "(a, b:1.2), a, b"),
        ("(a), a", "(a), a"),
        # Commas inside emphasis groups do not split tags; the group is left alone.
        ("(a, a, b:1.2)", "(a, a, b:1.2)"),
        ("[a, a], a", "[a, a], a"),
        ("(a,,  b)", "(a,, b)"),
        ("(unclosed, a, a", "(unclosed, a, a"),
        ("a), a), b", "a), b"),
        ("\\(a, a\\)", "\\(a, a\\)"),
        ("\\(a, \\(a", "\\(a"),
        # BREAK stays, repeats included.
        ("a, BREAK, b, BREAK, c", "a, BREAK, b, BREAK, c"),
        ("a BREAK b,  BREAK ,c", "a BREAK b, BREAK, c"),
    ],
)
def test_clean_tags(raw: str, clean: str) -> None:
    assert clean_tags(raw) == clean


def test_split_tags_respects_groups_and_escapes() -> None:
    assert split_tags("a, (b, c:1.2), [d, e], \\(f, g\\), h) , i") == [
        "a",
        " (b, c:1.2)",
        " [d, e]",
        " \\(f",
        " g\\)",
        " h) ",
        " i",
    ]


def test_leaf_tags() -> None:
    assert leaf_tags("a, (b, [c]:1.2), \\(d\\)") == ["a", "b", "c", "1.2", "\\(d\\)"]


_TAGGY = st.lists(
    st.sampled_from(
        ["a", "b_c", "^_^", "o_o", "BREAK", " ", ",", "(", ")", "[", "]", ":1.2", "\\", "\n"]
    ),
    max_size=30,
).map("".join)


@given(st.one_of(st.text(), _TAGGY))
def test_clean_tags_is_stable(text: str) -> None:
    once = clean_tags(text)
    assert clean_tags(once) == once


@given(st.one_of(st.text(), _TAGGY))
def test_clean_tags_keeps_no_blank_or_repeated_tag(text: str) -> None:
    tags = [tag.strip() for tag in split_tags(clean_tags(text))]
    if tags != [""]:
        assert all(tags)
    ordinary = [tag for tag in tags if tag != "BREAK"]
    assert len(ordinary) == len(set(ordinary))


# -- rating and year ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "tags"),
    [
        ("safe", ("safe",)),
        ("general", ("safe",)),
        ("sensitive", ("sensitive",)),
        ("nsfw", ("nsfw",)),
        ("explicit", ("explicit", "nsfw")),
        ("Explicit", ("explicit", "nsfw")),
        (" General ", ("safe",)),
        (None, ()),
    ],
)
def test_rating_tags(option: str | None, tags: tuple[str, ...]) -> None:
    assert rating_tags(option) == tags


@pytest.mark.parametrize(
    ("option", "tags"),
    [
        ("newest", ("newest",)),
        ("recent", ("recent",)),
        ("mid", ("mid",)),
        ("early", ("early",)),
        ("OLDEST", ("oldest",)),
        (None, ()),
    ],
)
def test_year_tags(option: str | None, tags: tuple[str, ...]) -> None:
    assert year_tags(option) == tags


def test_option_names() -> None:
    assert list(RATINGS) == ["safe", "sensitive", "nsfw", "explicit"]
    assert list(YEARS) == ["newest", "recent", "mid", "early", "oldest"]
    assert resolve_rating("general") == "safe"
    assert resolve_year("Mid") == "mid"


def test_unknown_options_list_the_choices() -> None:
    with pytest.raises(UnknownTagOptionError, match="safe, sensitive, nsfw, explicit, general"):
        resolve_rating("questionable")
    with pytest.raises(UnknownTagOptionError, match="newest, recent, mid, early, oldest"):
        year_tags("2020")
    with pytest.raises(PromptError):
        rating_tags("")


@pytest.mark.parametrize(
    ("prompt", "tags", "result"),
    [
        ("1girl, solo", ["safe", "newest"], "1girl, solo, safe, newest"),
        ("", ["safe"], "safe"),
        ("1girl", [], "1girl"),
        ("1girl, nsfw", ["explicit", "nsfw"], "1girl, nsfw, explicit"),
        ("1girl, NSFW", ["nsfw"], "1girl, NSFW"),
        ("1girl, (nsfw:1.2)", ["explicit", "nsfw"], "1girl, (nsfw:1.2), explicit"),
        ("1girl, [newest]", ["newest"], "1girl, [newest]"),
        ("1girl, nsfw style", ["nsfw"], "1girl, nsfw style, nsfw"),
        ("1girl", ["nsfw", "nsfw"], "1girl, nsfw"),
    ],
)
def test_add_tags_skips_tags_already_there(prompt: str, tags: list[str], result: str) -> None:
    assert add_tags(prompt, tags) == result
