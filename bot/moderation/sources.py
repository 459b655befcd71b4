"""Vocabulary from maintained sources, loaded once and cached.

* **Sexual terms in many languages**: the LDNOOBW lists ("List of Dirty, Naughty, Obscene
  and Otherwise Bad Words", CC BY 4.0, commit ``5faf2ba`` of 2020-07-13), vendored per
  language under ``vocab/ldnoobw/`` with their licence. Those lists hold every kind of bad
  word; ``vocab/ldnoobw_excluded.txt`` names the entries the bot leaves out (insults,
  slurs, drugs, ordinary words such as Portuguese ``comer``), so that what remains is
  sexual: :func:`sourced_sexual_terms`.
* **Look-alike characters**: Unicode's confusables (``confusables.txt``, as packaged by
  ``confusable-homoglyphs``): every non-ASCII character listed as a homoglyph of an ASCII
  letter maps to that letter (:func:`confusable_letters`), CJK and Hangul excepted.
* **Transliteration**: ``anyascii`` turns kana, Hangul, Cyrillic and Greek into Latin
  letters (:func:`romanize`), so ``はだか`` reads ``hadaka`` and ``10살`` reads ``10 sal``.
* **Dictionary words**: the English word list of ``pyspellchecker`` (from OpenSubtitles)
  tells a word that merely contains a term (``cocktail``, ``sextant``) from two tags glued
  together (``girlnude``): :func:`dictionary_words`.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Final

__all__ = [
    "SOURCED_LANGUAGES",
    "confusable_letters",
    "dictionary_words",
    "ldnoobw_terms",
    "romanize",
    "sourced_sexual_terms",
]

SOURCED_LANGUAGES: Final = ("en", "ja", "zh", "ko", "es", "pt", "fr", "de", "ru", "it")
"""The LDNOOBW languages the bot reads (files under ``vocab/ldnoobw/``)."""

_VOCAB: Final = resources.files("bot.moderation").joinpath("vocab")


@functools.cache
def ldnoobw_terms(language: str) -> tuple[str, ...]:
    """The entries of one LDNOOBW list, as published (blank lines dropped)."""
    text = _VOCAB.joinpath("ldnoobw", language).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@functools.cache
def _excluded() -> Mapping[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    section = ""
    text = _VOCAB.joinpath("ldnoobw_excluded.txt").read_text(encoding="utf-8")
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        out.setdefault(section, set()).add(line.casefold())
    return {language: frozenset(words) for language, words in out.items()}


@functools.cache
def sourced_sexual_terms(languages: tuple[str, ...] = SOURCED_LANGUAGES) -> tuple[str, ...]:
    """The sexual entries of the LDNOOBW lists of ``languages`` (exclusions applied)."""
    excluded = _excluded()
    out: list[str] = []
    for language in languages:
        skip = excluded.get(language, frozenset())
        out.extend(t for t in ldnoobw_terms(language) if t.casefold() not in skip)
    return tuple(dict.fromkeys(out))


def _is_cjk_or_hangul(ch: str) -> bool:
    return ord(ch) >= 0x2E80


@functools.cache
def confusable_letters() -> Mapping[str, str]:
    """Non-ASCII characters that Unicode lists as confusable with an ASCII letter."""
    data = resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text()
    table: dict[str, list[dict[str, str]]] = json.loads(data)
    out: dict[str, str] = {}
    for letter in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
        for entry in table.get(letter, ()):
            glyph = entry["c"]
            if len(glyph) == 1 and not glyph.isascii() and not _is_cjk_or_hangul(glyph):
                out.setdefault(glyph, letter.lower())
    return out


_SMALL_Y: Final = frozenset("ゃゅょャュョ")
_SOKUON: Final = frozenset("っッ")
_ROMANIZED_SCRIPTS: Final = re.compile(
    "[\u0370-\u03ff\u0400-\u04ff\u3040-\u30ff\u31f0-\u31ff\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]"
)


def romanize(text: str) -> str | None:
    """``text`` with kana, Hangul, Cyrillic and Greek in Latin letters (kana in Hepburn:
    ``しょうがくせい`` -> ``shougakusei``, ``おっぱい`` -> ``oppai``); None when it holds
    none of those scripts. Han characters are left as they are (they are matched as
    written, and their Chinese readings would read as unrelated Latin words)."""
    if not _ROMANIZED_SCRIPTS.search(text):
        return None
    from anyascii import anyascii

    out: list[str] = []
    double_next = False
    for ch in text:
        if ch in _SOKUON:
            double_next = True
            continue
        if ord(ch) < 0x80 or not (_ROMANIZED_SCRIPTS.match(ch)):
            out.append(ch)
            double_next = False
            continue
        latin = anyascii(ch).lower()
        if ch in _SMALL_Y and out and out[-1].endswith("i") and len(latin) == 2:
            previous = out.pop()
            stem = previous[:-1]
            latin = stem + (latin[1] if stem in ("sh", "ch", "j") else latin)
        elif double_next and latin and latin[0] not in "aeiou":
            latin = ("t" if latin.startswith("ch") else latin[0]) + latin
        double_next = False
        out.append(latin)
    return "".join(out)


@functools.cache
def dictionary_words() -> frozenset[str]:
    """English words (pyspellchecker's list): a glued run that is one of them is read as
    that word (``cocktail``), not as a term inside it."""
    try:
        data = resources.files("spellchecker").joinpath("resources", "en.json.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):  # pragma: no cover - a broken install
        return frozenset()
    words: Iterable[str] = json.loads(gzip.decompress(data))
    return frozenset(w for w in words if w.isascii() and w.isalpha())
