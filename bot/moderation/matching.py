"""Prompt matching that sees through the usual evasions, without flagging innocent tags.

A prompt is reduced to word sequences, one per tag (a tag is the text between commas), and
a term matches when its words appear as a contiguous run of whole words in one of them.
``sex`` therefore matches ``sex``, ``group sex`` and ``(sex:1.3)`` but never ``sextant``,
``Sussex`` or ``1girl``. Before that, the text goes through these steps:

1. characters: compatibility forms folded (NFKD then NFKC: fullwidth ``ｎｓｆｗ``, circled or
   mathematical letters), accents, zero-width and other format characters (Unicode
   category Cf) removed, common Cyrillic, Greek and small-capital look-alikes mapped to
   Latin letters (``nѕfw`` with a Cyrillic ``ѕ``), case folded;
2. A1111 markup: explicit weights (``:1.4)``) dropped, brackets read two ways (as word
   breaks, and as nothing, so that ``n(s)fw`` is caught too), escapes removed the way A1111
   reads them (``\\(`` is a literal paren, a backslash before anything else vanishes);
3. words: underscores, punctuation and spaces all separate words (``n_s_f_w``, ``n.s.f.w``);
4. extra views of each tag: runs of single letters joined (``N S F W``, ``s e x``), and
   leetspeak decoded (``0``->o, ``1``->i or l, ``3``->e, ``4``->a, ``5``->s, ``7``->t,
   ``@``->a, ``$``->s, ``!``->i) in words that hold a letter. Each view is only an extra
   chance to match a listed term: ``1girl`` reads ``igirl`` in the leet view, which matches
   nothing, so digits in innocent tags are safe.

A term matches its plural too (``nude`` matches ``nudes``; ``panty`` would match
``panties``), and a multi-word term matches its words run together (``butt plug`` matches
``buttplug``). Terms in CJK scripts match inside words, since those scripts do not put
spaces between words. Exceptions name innocent tags that contain a term (``gothic lolita``):
a match that lies inside one of them does not count.

Stated ages under 18 (``12 years old``, ``12-year-old``, ``12yo``, ``aged 12``,
``twelve years old``) are found by :func:`minor_age_terms`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ScannedPrompt",
    "TermSet",
    "minor_age_terms",
    "normalize_text",
    "scan",
    "tag_key",
]

_HOMOGLYPHS: Final[Mapping[str, str]] = {
    # Cyrillic capitals and small letters that look like Latin ones
    **dict(zip("АВЕКМНОРСТУХЅІЈԀҮԚԜҺ", "ABEKMHOPCTYXSIJDYQWH", strict=True)),
    **dict(zip("авекмнорстухѕіјԁүһԛԝӏ", "abekmhopctyxsijdyhqwl", strict=True)),
    # Greek capitals and small letters
    **dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "ABEZHIKMNOPTYX", strict=True)),
    **dict(zip("αεικνορτυχω", "aeikvoptuxw", strict=True)),
    # Latin look-alikes: dotless i, script g, small capitals
    **dict(zip("ıȷɑɡɩ", "ijagi", strict=True)),
    **dict(zip("ᴀʙᴄᴅᴇғɢʜɪᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢ", "abcdefghijklmnoprstuvwyz", strict=True)),
}
_HOMOGLYPH_TABLE: Final = str.maketrans(dict(_HOMOGLYPHS))
_KANA_VOICING: Final = frozenset("\u3099\u309a")  # dakuten, handakuten: keep them

_LEET_MARKS: Final = "@$!"
_LEET_I: Final = str.maketrans("013457@$!", "oieastasi")
_LEET_L: Final = str.maketrans("013457@$!", "oleastasi")
_LEET_SPLIT: Final = re.compile(r"[@$!]+")

# ":1.4" before a closing bracket (or the end): an A1111 weight, not text.
_WEIGHT: Final = re.compile(r":\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)\s*(?=[)\]]|$)")
_SEGMENT_BREAK: Final = re.compile(r"[,、;\n\r|]+")
_ESCAPABLE: Final = frozenset("()[]\\")

_NUMBER_WORDS: Final[Mapping[str, int]] = {
    word: value
    for value, word in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
        ]
    )
}
_AGE_WORD: Final = re.compile(r"(\d{1,2})(?:yo|yr|yrs|yearold|yearsold)")
_YEAR_WORDS: Final = frozenset({"year", "years", "yr", "yrs"})
ADULT_AGE: Final = 18


def normalize_text(text: str) -> str:
    """Step 1 of the module docstring: fold look-alikes, marks, format characters, case."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(
        ch
        for ch in decomposed
        if ch in _KANA_VOICING or unicodedata.category(ch) not in ("Mn", "Me", "Cf")
    )
    folded = kept.translate(_HOMOGLYPH_TABLE).casefold().translate(_HOMOGLYPH_TABLE)
    return unicodedata.normalize("NFKC", folded)


def _demarkup(text: str, *, glue: bool) -> str:
    """Step 2: weights dropped, escapes read as A1111 does, brackets as breaks or nothing."""
    text = _WEIGHT.sub("", text)
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            following = text[i + 1 : i + 2]
            if following and following in _ESCAPABLE:
                out.append(" ")  # a literal bracket or backslash: punctuation
                i += 2
            else:
                i += 1  # a backslash before anything else vanishes
            continue
        out.append(("" if glue else " ") if ch in "()[]" else ch)
        i += 1
    return "".join(out)


def _words(segment: str) -> list[str]:
    """Step 3: words of letters and digits (and leet marks, sorted out per view)."""
    chars = [ch if ch.isalnum() or ch in _LEET_MARKS else " " for ch in segment]
    return "".join(chars).split()


def _collapse(words: list[str], *, digits: bool) -> list[str]:
    """Join runs of two or more one-character words (``n s f w`` -> ``nsfw``); with
    ``digits`` false a one-digit word ends a run (``n s f w 1 3`` -> ``nsfw 13``)."""
    out: list[str] = []
    run: list[str] = []
    for word in [*words, ""]:
        if len(word) == 1 and run and (digits or word.isdigit() == run[-1].isdigit()):
            run.append(word)
            continue
        if len(run) >= 2:
            out.append("".join(run))
        else:
            out.extend(run)
        run = [word] if len(word) == 1 else []
        if len(word) > 1:
            out.append(word)
    return out


def _literal(words: list[str]) -> tuple[str, ...]:
    return tuple(part for word in words for part in _LEET_SPLIT.split(word) if part)


def _leet(words: list[str], table: Mapping[int, int]) -> tuple[str, ...]:
    out: list[str] = []
    for word in words:
        if any(ch.isalpha() for ch in word):
            out.append(word.translate(table))
        else:
            out.extend(part for part in _LEET_SPLIT.split(word) if part)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ScannedPrompt:
    """Every view of every tag of a prompt, as word tuples (see the module docstring)."""

    sequences: tuple[tuple[str, ...], ...]
    plain: tuple[tuple[str, ...], ...]  # the views without leetspeak (digits kept)


def scan(text: str) -> ScannedPrompt:
    """Reduce ``text`` to the word sequences that terms are matched against."""
    normalized = normalize_text(text)
    sequences: dict[tuple[str, ...], None] = {}
    plain: dict[tuple[str, ...], None] = {}
    for glue in (False, True):
        for segment in _SEGMENT_BREAK.split(_demarkup(normalized, glue=glue)):
            words = _words(segment)
            if not words:
                continue
            for view in (words, _collapse(words, digits=True), _collapse(words, digits=False)):
                literal = _literal(view)
                plain[literal] = None
                sequences[literal] = None
                sequences[_leet(view, _LEET_I)] = None
                sequences[_leet(view, _LEET_L)] = None
    return ScannedPrompt(
        sequences=tuple(seq for seq in sequences if seq),
        plain=tuple(seq for seq in plain if seq),
    )


def tag_key(tag: str) -> str:
    """A tag's comparable form: ``(Long_Hair:1.2)`` and ``long hair`` give ``long hair``."""
    normalized = normalize_text(tag)
    return " ".join(_literal(_words(_demarkup(normalized, glue=False))))


def _is_cjk(text: str) -> bool:
    return any(ord(ch) >= 0x2E80 for ch in text)


def _plurals(words: tuple[str, ...]) -> list[tuple[str, ...]]:
    *head, last = words
    forms = [last, f"{last}s", f"{last}es"]
    if last.endswith("y") and len(last) > 2:
        forms.append(f"{last[:-1]}ies")
    return [(*head, form) for form in forms]


def _contains(seq: tuple[str, ...], part: tuple[str, ...]) -> list[int]:
    n = len(part)
    return [i for i in range(len(seq) - n + 1) if seq[i : i + n] == part]


class TermSet:
    """A list of terms, compiled once, matched against prompts (see the module docstring)."""

    def __init__(
        self, terms: Iterable[str], exceptions: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        exceptions = exceptions or {}
        excepted_by_key = {tag_key(term): tuple(found) for term, found in exceptions.items()}
        self._terms: list[str] = []
        self._keys: set[str] = set()
        self._index: dict[str, list[tuple[tuple[str, ...], int]]] = {}
        self._substrings: list[tuple[str, int]] = []
        self._exceptions: dict[int, list[tuple[str, ...]]] = {}
        for term in terms:
            key = tag_key(term)
            if not key or key in self._keys:
                continue
            self._keys.add(key)
            number = len(self._terms)
            self._terms.append(term.strip())
            if _is_cjk(key):
                self._substrings.append((key.replace(" ", ""), number))
                continue
            words = tuple(key.split())
            # a multi-word term also matches written as one word ("buttplug", or spelled
            # out letter by letter: "a r e o l a s l i p" collapses to one word)
            forms = [words, ("".join(words),)] if len(words) > 1 else [words]
            for variant in (plural for form in forms for plural in _plurals(form)):
                self._index.setdefault(variant[0], []).append((variant, number))
            innocent = [tuple(tag_key(text).split()) for text in excepted_by_key.get(key, ())]
            if innocent:
                self._exceptions[number] = [
                    form for words in innocent if words for form in _plurals(words)
                ]

    @property
    def terms(self) -> tuple[str, ...]:
        """The terms as listed (first spelling of each; duplicates dropped)."""
        return tuple(self._terms)

    def __len__(self) -> int:
        return len(self._terms)

    def __contains__(self, term: object) -> bool:
        return isinstance(term, str) and tag_key(term) in self._keys

    def _excepted(self, number: int, seq: tuple[str, ...], start: int, length: int) -> bool:
        for innocent in self._exceptions.get(number, ()):
            for at in _contains(seq, innocent):
                if at <= start and start + length <= at + len(innocent):
                    return True
        return False

    def find(self, prompt: str | ScannedPrompt) -> tuple[str, ...]:
        """The terms found in ``prompt``, in list order."""
        scanned = scan(prompt) if isinstance(prompt, str) else prompt
        found: set[int] = set()
        for seq in scanned.sequences:
            for start, word in enumerate(seq):
                for variant, number in self._index.get(word, ()):
                    length = len(variant)
                    if (
                        number not in found
                        and seq[start : start + length] == variant
                        and not self._excepted(number, seq, start, length)
                    ):
                        found.add(number)
            if self._substrings:
                joined = "".join(seq)
                found.update(number for text, number in self._substrings if text in joined)
        return tuple(self._terms[number] for number in sorted(found))


def _number(word: str) -> int | None:
    if word.isdigit() and len(word) <= 3:
        return int(word)
    return _NUMBER_WORDS.get(word)


def minor_age_terms(prompt: str | ScannedPrompt) -> tuple[str, ...]:
    """Stated ages under 18 in ``prompt``, as ``"12 years old"`` (sorted, no duplicates)."""
    scanned = scan(prompt) if isinstance(prompt, str) else prompt
    ages: set[int] = set()
    for seq in scanned.plain:
        for i, word in enumerate(seq):
            if match := _AGE_WORD.fullmatch(word):
                ages.add(int(match.group(1)))
            age = _number(word)
            after = seq[i + 1 : i + 3]
            if age is not None and (
                (len(after) == 2 and after[0] in _YEAR_WORDS and after[1] == "old")
                or after[:1] in (("yo",), ("yrs",))
            ):
                ages.add(age)
            if word in ("age", "aged") and i + 1 < len(seq):
                stated = _number(seq[i + 1])
                if stated is not None:
                    ages.add(stated)
    return tuple(f"{age} years old" for age in sorted(ages) if age < ADULT_AGE)
