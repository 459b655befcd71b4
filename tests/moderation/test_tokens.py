"""The tokenizer's view: the shipped CLIP BPE reads prompts as SDXL's text encoder does."""

from __future__ import annotations

import pytest

from bot.moderation.tokens import (
    CLIP_VOCAB_SIZE,
    ClipBpe,
    letter_runs,
    piece_reader,
    shipped_tokenizer,
)


def test_shipped_tokenizer_has_the_clip_vocabulary() -> None:
    tokenizer = shipped_tokenizer()
    assert len(tokenizer) == CLIP_VOCAB_SIZE
    assert tokenizer.encoder["girl</w>"] == 1611  # openai/clip-vit-large-patch14's id


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("loli1", ["lo", "li</w>", "1</w>"]),
        ("loli 1", ["lo", "li</w>", "1</w>"]),
        ("1girlnude", ["1</w>", "girl", "nude</w>"]),
        ("nsfw1", ["nsfw</w>", "1</w>"]),
    ],
)
def test_pieces_as_the_issue_reports_them(text: str, pieces: list[str]) -> None:
    assert shipped_tokenizer().tokenize(text) == pieces


def test_same_pieces_as_transformers_clip_tokenizer() -> None:
    transformers = pytest.importorskip("transformers")
    ours = shipped_tokenizer()
    merges = list(ours._ranks)
    theirs = transformers.CLIPTokenizer(vocab=dict(ours.encoder), merges=merges)
    for text in [
        "1girl, nude, loli1",
        "masterpiece, best quality, hatsune miku, twintails",
        "summa cum laude, cocktail dress, shuttlecock",
        "unclothed undressed girlsex sextant titania",
    ]:
        assert ours.tokenize(text) == theirs.tokenize(text), text
    assert theirs.convert_tokens_to_ids(ours.tokenize("nude")) == [ours.encoder["nude</w>"]]


class _CharTokenizer:
    """Like the tiny test pipeline's tokenizer: one piece per character."""

    def tokenize(self, text: str) -> list[str]:
        return [*text[:-1], text[-1] + "</w>"] if text else []


class _WordTokenizer:
    def __init__(self) -> None:
        self.calls = 0

    def tokenize(self, text: str) -> list[str]:
        self.calls += 1
        return shipped_tokenizer().tokenize(text)


def test_a_loaded_clip_tokenizer_is_used_and_a_character_tokenizer_is_not() -> None:
    assert piece_reader(None) is shipped_tokenizer()
    assert piece_reader(_CharTokenizer()) is shipped_tokenizer()
    word = _WordTokenizer()
    reader = piece_reader(word)
    assert list(reader("girlnude")) == ["girl", "nude</w>"]
    assert word.calls == 2  # the probe, then the run


def test_letter_runs_mark_piece_boundaries() -> None:
    runs = letter_runs("1girlnude, x", ClipBpe.__call__.__get__(shipped_tokenizer()))
    assert runs.letters == "girlnudex"
    assert runs.aligned(4, 8)  # "nude"
    assert not runs.aligned(5, 8)
