"""The built-in term lists: blocked tags, rating tags and the hard-block vocabulary.

Terms are written the way people type them (Danbooru tags with spaces); matching normalises
both sides (see :mod:`bot.moderation.matching`), so case, underscores, punctuation and plural
``s`` need not be listed. A term matches a whole tag or a run of whole words inside a tag,
never part of a word: ``sex`` matches ``sex``, ``group sex`` and ``s e x``, but not
``sextant`` or ``Sussex``. Terms written in CJK scripts match inside words as well, since
those scripts do not put spaces between words.

* :data:`DEFAULT_BLOCKED_TAGS`: refused outside age-restricted channels on a fresh install;
  configurable (``moderation.blocked_tags`` and per-server additions and removals).
* :data:`RATING_TERMS`: Animagine's own NSFW rating tags; refused outside age-restricted
  channels whatever the blocked list says.
* :data:`SEXUAL_TERMS` and :data:`MINOR_TERMS`: a prompt that holds one of each is
  hard-blocked in every channel, and so is one holding any of :data:`CHILD_SEXUAL_TERMS`.
  These lists are fixed: no setting changes them.
  :data:`TERM_EXCEPTIONS` names innocent tags that contain a term (``gothic lolita`` is a
  fashion style); a match inside one of them does not count.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "CHILD_SEXUAL_TERMS",
    "DEFAULT_BLOCKED_TAGS",
    "MINOR_TERMS",
    "RATING_TERMS",
    "SEXUAL_TERMS",
    "SUGGESTIVE_TERMS",
    "TERM_EXCEPTIONS",
]

RATING_TERMS: Final[tuple[str, ...]] = ("nsfw", "explicit")
"""The model card's NSFW rating tags (``nsfw`` is questionable, ``explicit, nsfw`` explicit)."""

DEFAULT_BLOCKED_TAGS: Final[tuple[str, ...]] = (
    # ratings and genres
    "nsfw",
    "explicit",
    "r18",
    "r 18",
    "r18g",
    "hentai",
    "porn",
    "pornography",
    "lewd",
    "erotic",
    "ecchi",
    # nudity
    "nude",
    "naked",
    "nudity",
    "topless",
    "bottomless",
    "no panties",
    "breasts out",
    "bare breasts",
    "exposed breasts",
    "nipple",
    "nipple slip",
    "areolae",
    "areola",
    "areola slip",
    "pubic hair",
    "cameltoe",
    "pantyshot",
    "upskirt",
    # genitals
    "pussy",
    "vagina",
    "vulva",
    "labia",
    "clitoris",
    "penis",
    "dick",
    "cock",
    "testicle",
    "erection",
    "futanari",
    # acts
    "sex",
    "sexual",
    "intercourse",
    "vaginal",
    "anal",
    "oral",
    "fellatio",
    "blowjob",
    "deepthroat",
    "irrumatio",
    "cunnilingus",
    "anilingus",
    "paizuri",
    "titjob",
    "handjob",
    "footjob",
    "masturbation",
    "fingering",
    "groping",
    "breast grab",
    "molestation",
    "missionary",
    "cowgirl position",
    "reverse cowgirl position",
    "doggystyle",
    "mating press",
    "orgasm",
    "ahegao",
    "after sex",
    "tentacle sex",
    "rape",
    "gangbang",
    "bukkake",
    "creampie",
    "cum",
    "cumdrip",
    "semen",
    "sperm",
    "ejaculation",
    "precum",
    # gear and censoring
    "sex toy",
    "dildo",
    "vibrator",
    "butt plug",
    "anal beads",
    "condom",
    "bdsm",
    "bondage",
    "shibari",
    "uncensored",
    "censored",
    "mosaic censoring",
    "bar censor",
    # Japanese
    "セックス",
    "全裸",
    "乳首",
    "ヌード",
    "性器",
    "中出し",
    "精液",
)
"""Common explicit and questionable Danbooru tags; a fresh install refuses them in plain
channels before anyone configures anything."""

SUGGESTIVE_TERMS: Final[tuple[str, ...]] = (
    "sexy",
    "seductive",
    "suggestive",
    "provocative",
    "lingerie",
    "underwear only",
    "panties",
    "spread legs",
    "bedroom eyes",
    "stripping",
    "undressing",
)
"""Not blocked on their own, but sexual next to a minor term."""

SEXUAL_TERMS: Final[tuple[str, ...]] = (*DEFAULT_BLOCKED_TAGS, *SUGGESTIVE_TERMS)
"""Sexual content for the hard block (fixed: server settings do not change it)."""

MINOR_TERMS: Final[tuple[str, ...]] = (
    "loli",
    "lolita",
    "rori",
    "shota",
    "toddler",
    "infant",
    "newborn",
    "child",
    "children",
    "kid",
    "cub",
    "minor",
    "underage",
    "under age",
    "under 18",
    "preteen",
    "pre teen",
    "early teen",
    "young teen",
    "young girl",
    "young boy",
    "little girl",
    "little boy",
    "aged down",
    "age regression",
    "elementary school",
    "elementary schooler",
    "grade school",
    "grade schooler",
    "primary school",
    "kindergarten",
    "kindergartener",
    "preschool",
    "preschooler",
    "middle schooler",
    "middle school student",
    "junior high student",
    "randoseru",
    # Japanese
    "ロリ",
    "ショタ",
    "幼女",
    "幼児",
    "児童",
    "小学生",
    "中学生",
    "子供",
    "子ども",
    "こども",
    "幼稚園",
)
"""Terms about minors for the hard block. Stated ages under 18 (``12 years old``, ``12yo``,
``aged 12``) count too; see :func:`bot.moderation.matching.minor_age_terms`."""

CHILD_SEXUAL_TERMS: Final[tuple[str, ...]] = (
    "lolicon",
    "shotacon",
    "toddlercon",
    "cunny",
    "jailbait",
    "pedo",
    "pedophile",
    "pedophilia",
    "paedophile",
    "paedophilia",
    "child porn",
    "ロリコン",
    "ショタコン",
)
"""Terms that sexualise minors by themselves: hard-blocked with no other term needed."""

TERM_EXCEPTIONS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "lolita": (
            "gothic lolita",
            "sweet lolita",
            "classic lolita",
            "wa lolita",
            "qi lolita",
            "punk lolita",
            "lolita fashion",
            "lolita hairband",
            "lolita dress",
            "lolita channel",
        ),
        "minor": ("minor injury", "minor character"),
        "dick": ("dick grayson", "moby dick", "philip k dick", "dick tracy"),
    }
)
"""Innocent tags that contain a term; a match inside one of them does not count."""
