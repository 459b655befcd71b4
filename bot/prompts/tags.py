"""Danbooru tag hygiene and Animagine's rating and year tags.

:func:`clean_tags` tidies a comma-separated tag prompt without changing what it asks for:

* whitespace runs (newlines included) become one space; each tag is trimmed; empty tags
  (``a,, b`` or a trailing comma) are dropped; tags are joined with ``", "``;
* Danbooru underscores become spaces (``long_hair`` -> ``long hair``,
  ``ganyu_\\(genshin_impact\\)`` -> ``ganyu \\(genshin impact\\)``), except in emoticon tags
  (``^_^``, ``>_<``, ``0_0``, ``o_o``, ``-_-``, ``=_=``...: a tag with no letter or digit,
  three characters with the underscore in the middle, or a few longer known ones);
* a tag that repeats an earlier one (after the steps above) is dropped, the first wins.

Emphasis groups are respected: a comma inside ``(a, b:1.2)`` or ``[a, b]`` does not split
tags, so the whole group is one tag for de-duplication and the tags inside it are left
alone (only their underscores and whitespace are tidied). Escaped brackets (``\\(``) are
text, as in A1111. ``BREAK`` is kept wherever it stands and is never de-duplicated.

Rating and year options (:data:`RATINGS`, :data:`YEARS`) map to the model card's tags.
:func:`add_tags` appends the ones the prompt does not already hold; a tag counts as held
when it stands alone or inside an emphasis group, compared without regard to case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Final

from bot.errors import ReadableError, Text, words

__all__ = [
    "RATINGS",
    "RATING_ALIASES",
    "YEARS",
    "YEAR_RANGES",
    "PromptError",
    "UnknownTagOptionError",
    "add_tags",
    "clean_tags",
    "join_tags",
    "leaf_tags",
    "rating_tags",
    "resolve_rating",
    "resolve_year",
    "split_tags",
    "year_tags",
]


class PromptError(ReadableError, ValueError):
    """A prompt or prompt option the bot cannot use; the message is meant for the user."""


_PROMPT_WORDS: Final[Mapping[str, Text]] = MappingProxyType(
    {"prompt": words("prompt"), "negative prompt": words("negative prompt")}
)


def prompt_word(what: str) -> Text | str:
    """``"prompt"`` or ``"negative prompt"`` as a text for an error (translatable)."""
    return _PROMPT_WORDS.get(what, what)


class UnknownTagOptionError(PromptError):
    """A rating or year option that does not exist."""


RATINGS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "safe": ("safe",),
        "sensitive": ("sensitive",),
        "nsfw": ("nsfw",),
        "explicit": ("explicit", "nsfw"),
    }
)
RATING_ALIASES: Final[Mapping[str, str]] = MappingProxyType({"general": "safe"})
YEARS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {name: (name,) for name in ("newest", "recent", "mid", "early", "oldest")}
)
YEAR_RANGES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "newest": "2021-2024",
        "recent": "2018-2020",
        "mid": "2015-2017",
        "early": "2011-2014",
        "oldest": "2005-2010",
    }
)

BREAK: Final = "BREAK"
_ESCAPABLE: Final = frozenset("()[]\\")  # what a backslash escapes in A1111's syntax
_LEAF_SEPARATORS: Final = frozenset("()[],:")
_WHITESPACE: Final = re.compile(r"\s+")
_LONG_EMOTICONS: Final = frozenset({"<o>_<o>", "(o)_(o)", "^_^;", "o_0", "0_o"})


def _resolve(kind: str, name: str, options: Iterable[str], aliases: Mapping[str, str]) -> str:
    key = name.strip().casefold()
    key = aliases.get(key, key)
    valid = list(options)
    if key not in valid:
        choices = ", ".join([*valid, *aliases])
        raise UnknownTagOptionError(
            "unknown {kind} {name}; choose one of: {choices}",
            kind=kind,
            name=repr(name),
            choices=choices,
        )
    return key


def resolve_rating(name: str) -> str:
    """The canonical rating for ``name`` (any case; ``general`` is ``safe``)."""
    return _resolve("rating", name, RATINGS, RATING_ALIASES)


def resolve_year(name: str) -> str:
    """The canonical year option for ``name`` (any case)."""
    return _resolve("year", name, YEARS, {})


def rating_tags(rating: str | None) -> tuple[str, ...]:
    """The tags a rating option adds: ``explicit`` adds ``explicit, nsfw``; None adds none."""
    return () if rating is None else RATINGS[resolve_rating(rating)]


def year_tags(year: str | None) -> tuple[str, ...]:
    """The tag a year option adds; None adds none."""
    return () if year is None else YEARS[resolve_year(year)]


def _scan(text: str) -> Iterator[tuple[str, bool]]:
    """Yield ``(piece, escaped)``: an escape pair such as ``\\(`` or one other character."""
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPABLE:
            yield text[i : i + 2], True
            i += 2
        else:
            yield text[i], False
            i += 1


def split_tags(text: str) -> list[str]:
    """Split at the commas that stand outside every emphasis group (tags are not trimmed).

    Brackets are counted the way A1111 reads them: ``)`` and ``]`` with nothing to close
    are text, and an unclosed ``(`` keeps the rest of the prompt in one piece.
    """
    pieces: list[str] = []
    current: list[str] = []
    depth = {"(": 0, "[": 0}
    for piece, escaped in _scan(text):
        if not escaped:
            if piece in depth:
                depth[piece] += 1
            elif piece == ")" and depth["("]:
                depth["("] -= 1
            elif piece == "]" and depth["["]:
                depth["["] -= 1
            elif piece == "," and not depth["("] and not depth["["]:
                pieces.append("".join(current))
                current = []
                continue
        current.append(piece)
    pieces.append("".join(current))
    return pieces


def _leaves(text: str) -> Iterator[tuple[str, bool]]:
    """Yield ``(piece, is_leaf)``: the markup ``()[],:`` and the tag text between it."""
    current: list[str] = []
    for piece, escaped in _scan(text):
        if not escaped and piece in _LEAF_SEPARATORS:
            if current:
                yield "".join(current), True
                current = []
            yield piece, False
        else:
            current.append(piece)
    if current:
        yield "".join(current), True


def leaf_tags(text: str) -> list[str]:
    """Every tag in ``text``, including those inside emphasis groups, trimmed.

    Weights count as tags here (``(a:1.2)`` gives ``a`` and ``1.2``); that is harmless for
    the presence checks this serves.
    """
    return [stripped for leaf, is_leaf in _leaves(text) if is_leaf and (stripped := leaf.strip())]


def _is_emoticon(tag: str) -> bool:
    return (
        not any(ch.isalnum() for ch in tag)
        or (len(tag) == 3 and tag[1] == "_")
        or tag in _LONG_EMOTICONS
    )


def _spaces_for_underscores(tag: str) -> str:
    parts = [
        piece.replace("_", " ") if is_leaf and not _is_emoticon(piece.strip()) else piece
        for piece, is_leaf in _leaves(tag)
    ]
    return _WHITESPACE.sub(" ", "".join(parts)).strip()


def join_tags(*parts: str) -> str:
    """Join the non-empty parts with ``", "``."""
    return ", ".join(part for part in parts if part)


def clean_tags(text: str) -> str:
    """Tidy a tag prompt (see the module docstring); the result is stable under reuse."""
    seen: set[str] = set()
    tags: list[str] = []
    for raw in split_tags(_WHITESPACE.sub(" ", text)):
        tag = _spaces_for_underscores(raw)
        if not tag or (tag in seen and tag != BREAK):
            continue
        seen.add(tag)
        tags.append(tag)
    return ", ".join(tags)


def add_tags(prompt: str, tags: Iterable[str]) -> str:
    """Append ``tags`` to ``prompt``, skipping those it already holds (any case, any group)."""
    held = {tag.casefold() for tag in leaf_tags(prompt)}
    new: list[str] = []
    for tag in tags:
        if tag.casefold() not in held:
            held.add(tag.casefold())
            new.append(tag)
    return join_tags(prompt, ", ".join(new))
