"""What the model reads: the CLIP tokenizer's pieces of a prompt.

SDXL's first text encoder reads a prompt as CLIP BPE pieces. The tokenizer splits text into
runs of letters, single digits and runs of punctuation, then cuts every letter run into
pieces from its vocabulary: ``loli1`` and ``loli 1`` are both ``lo li</w> 1</w>``, and
``1girlnude`` is ``1</w> girl nude</w>``. Matching whole words misses the second; matching
substrings refuses ``sextant``. The policy therefore also matches terms on *piece
boundaries*: a term is read by the model when the letters of one tag, run together, hold the
term's letters starting and ending where pieces start and end (see
:class:`bot.moderation.matching.TermSet`).

:class:`LetterRuns` is that view of one tag: its letters run together, and the offsets where
pieces begin or end. Any CLIP tokenizer gives it (:func:`piece_reader`): the loaded
pipeline's at run time, and without a model the shipped one, :func:`shipped_tokenizer`,
built from OpenAI's CLIP BPE merges (``vocab/clip/bpe_simple_vocab_16e6.txt.gz``, MIT
licence, the file behind ``openai/clip-vit-large-patch14``'s 49,408-token vocabulary).

Only Latin letters are read this way; other scripts are matched as words or, for CJK
scripts, inside words (:mod:`bot.moderation.matching`).
"""

from __future__ import annotations

import functools
import gzip
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, Protocol

__all__ = [
    "CLIP_VOCAB_SIZE",
    "ClipBpe",
    "LetterRuns",
    "PieceReader",
    "letter_runs",
    "piece_reader",
    "shipped_tokenizer",
]

CLIP_VOCAB_SIZE: Final = 49408
_MERGES_FILE: Final = ("vocab", "clip", "bpe_simple_vocab_16e6.txt.gz")
_END: Final = "</w>"
_LETTER_RUN: Final = re.compile(r"[a-z]+")
_PROBE: Final = "girl"  # a word every CLIP vocabulary holds as one piece


class PieceReader(Protocol):
    """Cuts one run of lowercase letters into the pieces the model reads."""

    def __call__(self, run: str) -> Sequence[str]: ...


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible map from bytes to printable characters."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = list(keep)
    extra = 0
    for byte in range(256):
        if byte not in keep:
            keep.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars), strict=True))


class ClipBpe:
    """OpenAI CLIP's BPE tokenizer (the reference ``SimpleTokenizer`` algorithm).

    Built from the merges file alone, as CLIP builds it: 256 byte characters, the same with
    ``</w>``, one token per merge, and the two special tokens, 49,408 in all.
    """

    def __init__(self, merges: Sequence[tuple[str, str]]) -> None:
        byte_chars = list(_bytes_to_unicode().values())
        vocab = [*byte_chars, *(c + _END for c in byte_chars)]
        vocab.extend(a + b for a, b in merges)
        vocab.extend(["<|startoftext|>", "<|endoftext|>"])
        self.encoder: dict[str, int] = {token: i for i, token in enumerate(vocab)}
        self._ranks = {pair: i for i, pair in enumerate(merges)}
        self._byte_encoder = _bytes_to_unicode()

    @classmethod
    def from_file(cls, data: bytes) -> ClipBpe:
        lines = gzip.decompress(data).decode("utf-8").split("\n")
        # The first line is a version header; CLIP uses the next 48,894 merges.
        merges = [line.split() for line in lines[1 : CLIP_VOCAB_SIZE - 256 * 2 - 2 + 1]]
        return cls([(a, b) for a, b in merges])

    def __len__(self) -> int:
        return len(self.encoder)

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one tokenizer lives for the process
    def bpe(self, word: str) -> tuple[str, ...]:
        """The pieces of one pre-token (a run of letters), the last one ending in ``</w>``."""
        symbols = ["".join(self._byte_encoder[b] for b in ch.encode("utf-8")) for ch in word]
        if not symbols:
            return ()
        symbols[-1] += _END
        while len(symbols) > 1:
            pairs = [(symbols[i], symbols[i + 1]) for i in range(len(symbols) - 1)]
            best = min(pairs, key=lambda pair: self._ranks.get(pair, len(self._ranks)))
            if best not in self._ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return tuple(symbols)

    def tokenize(self, text: str) -> list[str]:
        """Pieces of ``text`` (lowercased; letter runs, digits and punctuation, as CLIP)."""
        out: list[str] = []
        for match in re.finditer(r"[^\W\d_]+|\d|[^\s\w]+|_+", text.lower()):
            out.extend(self.bpe(match.group(0)))
        return out

    def __call__(self, run: str) -> Sequence[str]:
        return self.bpe(run)


@functools.cache
def shipped_tokenizer() -> ClipBpe:
    """CLIP's BPE from the merges file shipped with the bot (loaded once, ~1 s)."""
    data = resources.files("bot.moderation").joinpath(*_MERGES_FILE).read_bytes()
    return ClipBpe.from_file(data)


def piece_reader(tokenizer: Any | None) -> PieceReader:
    """A :class:`PieceReader` for ``tokenizer``: a Hugging Face CLIP tokenizer (``tokenize``
    returning pieces with ``</w>``), a :class:`ClipBpe`, or None for the shipped one.

    A tokenizer that does not read common words as one piece (a character-level test
    tokenizer) cannot show what CLIP reads: the shipped tokenizer is used instead.
    """
    if tokenizer is None or isinstance(tokenizer, ClipBpe):
        return tokenizer or shipped_tokenizer()
    tokenize: Callable[[str], list[str]] | None = getattr(tokenizer, "tokenize", None)
    if tokenize is None:
        return shipped_tokenizer()
    try:
        probe = [p.removesuffix(_END) for p in tokenize(_PROBE)]
    except Exception:
        return shipped_tokenizer()
    if probe != [_PROBE]:
        return shipped_tokenizer()
    return _HuggingFaceReader(tokenize)


class _HuggingFaceReader:
    def __init__(self, tokenize: Callable[[str], list[str]]) -> None:
        self._tokenize = tokenize
        self._cache: dict[str, tuple[str, ...]] = {}

    def __call__(self, run: str) -> Sequence[str]:
        cached = self._cache.get(run)
        if cached is None:
            cached = tuple(self._tokenize(run))
            if len(self._cache) < 65536:
                self._cache[run] = cached
        return cached


@dataclass(frozen=True, slots=True)
class LetterRuns:
    """One tag as the model reads its Latin letters: ``letters`` run together, and the
    offsets into it where a piece begins or ends (``starts``, ``ends``: 0 and the end
    included)."""

    letters: str
    bounds: frozenset[int]
    word_ends: frozenset[int]

    def aligned(self, start: int, end: int) -> bool:
        return start in self.bounds and end in self.bounds


def letter_runs(text: str, read: PieceReader) -> LetterRuns:
    """The :class:`LetterRuns` of ``text`` (already normalised: lowercase, look-alikes
    folded); characters other than ``a``-``z`` separate runs, as digits and punctuation
    separate pre-tokens in CLIP."""
    letters: list[str] = []
    bounds = {0}
    word_ends: set[int] = set()
    at = 0
    for match in _LETTER_RUN.finditer(text):
        run = match.group(0)
        bounds.add(at)
        for piece in read(run):
            at += len(piece.removesuffix(_END))
            bounds.add(at)
        if at != sum(map(len, letters)) + len(run):  # a reader that changed the text
            at = sum(map(len, letters)) + len(run)
            bounds.add(at)
        letters.append(run)
        word_ends.add(at)
    return LetterRuns("".join(letters), frozenset(bounds), frozenset(word_ends))
