"""Wildcards: ``__name__`` in a prompt becomes a random line of ``name.txt``.

Lines are taken from a configured folder (``__colors/warm__`` reads ``colors/warm.txt``);
blank lines and lines starting with ``#`` are skipped. A chosen line may hold wildcards
itself; they are expanded too, up to a depth limit.

Choices are reproducible: each occurrence draws from its own ``random.Random`` seeded
with the job's seed, a stream label (``"prompt"`` or ``"negative"``) and the occurrence's
position (``"2"`` for the third wildcard of the prompt, ``"2.0"`` for the first wildcard
in the line it chose). Two occurrences of one wildcard may differ; a re-run with the same
seed and files gives the same text.

Names are letters, digits, ``_`` and ``-``, in folders separated by ``/``; anything that
looks like a wildcard but names a path outside the folder (``__../x__``, ``__/etc/x__``,
``__a\\b__``) is refused with :class:`InvalidWildcardNameError`. Symbolic links are
followed only while they stay inside the folder: a file or subfolder that links out of it
(``colors.txt -> /etc/passwd``) is refused with :class:`WildcardOutsideFolderError`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from bot.prompts.tags import PromptError

__all__ = [
    "MAX_WILDCARD_DEPTH",
    "MAX_WILDCARD_EXPANSIONS",
    "EmptyWildcardError",
    "InvalidWildcardNameError",
    "UnknownWildcardError",
    "WildcardError",
    "WildcardFolder",
    "WildcardLimitError",
    "WildcardOutsideFolderError",
    "WildcardSource",
    "WildcardsNotConfiguredError",
    "expand_wildcards",
    "find_wildcards",
    "is_valid_wildcard_name",
]

MAX_WILDCARD_DEPTH: Final = 8
MAX_WILDCARD_EXPANSIONS: Final = 500

# Candidates include "." and "\" so that path tricks are caught and refused, not ignored.
_WILDCARD: Final = re.compile(r"__(?P<name>[A-Za-z0-9\-/.\\][A-Za-z0-9_\-/.\\]*?)__")
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-]+")


class WildcardError(PromptError):
    """A wildcard that cannot be expanded; ``name`` is the wildcard's name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class InvalidWildcardNameError(WildcardError):
    """A wildcard name with characters or folder steps that are not allowed."""


class UnknownWildcardError(WildcardError):
    """A wildcard with no file."""


class EmptyWildcardError(WildcardError):
    """A wildcard file with no usable line."""


class WildcardOutsideFolderError(WildcardError):
    """A wildcard file that is, or lies under, a symbolic link out of the folder."""


class WildcardsNotConfiguredError(WildcardError):
    """A wildcard in a prompt while no wildcard folder is configured."""


class WildcardLimitError(WildcardError):
    """Wildcards nested too deep (a file naming itself) or expanding to too many."""


class WildcardSource(Protocol):
    """Where wildcard lines come from."""

    def options(self, name: str) -> Sequence[str]:
        """The usable lines of wildcard ``name``; raises :class:`WildcardError`."""
        ...


def is_valid_wildcard_name(name: str) -> bool:
    """Folder names and a file name (no ``.txt``) of ``[A-Za-z0-9_-]``, joined by ``/``."""
    return all(_SEGMENT.fullmatch(segment) for segment in name.split("/"))


def _check_name(name: str) -> None:
    if not is_valid_wildcard_name(name):
        raise InvalidWildcardNameError(
            name,
            f"invalid wildcard name __{name}__: use letters, digits, _ and -, "
            "with / between folder names",
        )


def find_wildcards(text: str) -> list[str]:
    """The wildcard names in ``text`` in order (not expanded, not validated)."""
    return [match.group("name") for match in _WILDCARD.finditer(text)]


@dataclass(frozen=True, slots=True)
class WildcardFolder:
    """Wildcards read from ``root``: ``__a/b__`` is ``root/a/b.txt`` (UTF-8), read per use."""

    root: Path

    def options(self, name: str) -> list[str]:
        _check_name(name)
        path = self.root / f"{name}.txt"
        if not path.is_file():
            raise UnknownWildcardError(
                name, f"unknown wildcard __{name}__: no {name}.txt in {self.root}"
            )
        try:
            inside = path.resolve(strict=True).is_relative_to(self.root.resolve(strict=True))
        except (OSError, RuntimeError):  # a link loop, or the file vanished meanwhile
            inside = False
        if not inside:
            raise WildcardOutsideFolderError(
                name,
                f"wildcard __{name}__ is refused: {name}.txt is a symbolic link (or lies under "
                f"one) that leads out of the wildcard folder {self.root}",
            )
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise WildcardError(name, f"cannot read wildcard __{name}__ ({path}): {exc}") from exc
        lines = [line.strip() for line in text.splitlines()]
        usable = [line for line in lines if line and not line.startswith("#")]
        if not usable:
            raise EmptyWildcardError(name, f"wildcard __{name}__ has no usable line in {path}")
        return usable


def expand_wildcards(
    text: str,
    source: WildcardSource | None,
    *,
    seed: int,
    stream: str = "prompt",
    max_depth: int = MAX_WILDCARD_DEPTH,
    max_expansions: int = MAX_WILDCARD_EXPANSIONS,
) -> str:
    """Replace every ``__name__`` in ``text`` by a seeded choice (see the module docstring).

    Raises :class:`WildcardError` subclasses: an invalid name, an unknown or empty
    wildcard, a wildcard while ``source`` is None, more than ``max_depth`` levels of
    nesting or more than ``max_expansions`` expansions in all.
    """
    expansions = 0

    def expand(chunk: str, position: str, depth: int) -> str:
        occurrence = 0

        def replace(match: re.Match[str]) -> str:
            nonlocal occurrence, expansions
            name = match.group("name")
            _check_name(name)
            if source is None:
                raise WildcardsNotConfiguredError(
                    name, f"wildcard __{name}__ used, but no wildcard folder is configured"
                )
            if depth >= max_depth:
                raise WildcardLimitError(
                    name, f"wildcards nested deeper than {max_depth} levels at __{name}__"
                )
            expansions += 1
            if expansions > max_expansions:
                raise WildcardLimitError(
                    name, f"wildcards expanded more than {max_expansions} times at __{name}__"
                )
            here = f"{position}.{occurrence}" if position else str(occurrence)
            occurrence += 1
            options = source.options(name)
            if not options:
                raise EmptyWildcardError(name, f"wildcard __{name}__ has no usable line")
            # Reproducibility, not secrecy: the seed is shown to users anyway.
            rng = random.Random(f"{stream}:{seed}:{here}")  # noqa: S311
            return expand(rng.choice(options), here, depth + 1)

        return _WILDCARD.sub(replace, chunk)

    return expand(text, "", 0)
