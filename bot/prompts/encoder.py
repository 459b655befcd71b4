"""Long, weighted prompts for both SDXL text encoders, the A1111 way.

Plain diffusers truncates prompts at 77 CLIP tokens and reads ``(bad)`` as literal text. This
encoder, written for the bot (compel covers part of it but truncates differently and does not
rescale chunks the A1111 way):

* parses A1111 emphasis with :func:`bot.prompts.emphasis.parse_emphasis`;
* splits the tokens into chunks of 75, each wrapped as ``BOS tokens EOS pad...`` (77 ids);
  ``BREAK`` closes the current chunk early; nothing is truncated;
* encodes every chunk with each text encoder (penultimate hidden state, as SDXL does),
  scales each token's hidden state by its weight and rescales the chunk so its mean equals
  the unweighted mean, then concatenates chunks along the sequence;
* pads the shorter of prompt and negative prompt with empty chunks to the same length;
* takes the pooled embedding from the first chunk of the second encoder.

A prompt of at most 75 tokens without weights encodes to exactly the tensors that
``StableDiffusionXLPipeline.encode_prompt`` produces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bot.prompts.emphasis import parse_emphasis
from bot.prompts.tags import PromptError, prompt_word

CHUNK_TOKENS = 75


class PromptTooLong(PromptError):
    """The prompt needs more 75-token chunks than allowed."""


@dataclass(frozen=True)
class TokenChunks:
    """Token ids and weights of one prompt, cut into 75-token chunks."""

    ids: list[list[int]]
    weights: list[list[float]]

    @property
    def count(self) -> int:
        return len(self.ids)


def tokenize_chunks(tokenizer: Any, text: str) -> TokenChunks:
    """Cut ``text`` into chunks of at most 75 (token id, weight) pairs."""
    ids: list[list[int]] = [[]]
    weights: list[list[float]] = [[]]
    for fragment, weight in parse_emphasis(text):
        if weight == -1.0 and fragment == "BREAK":
            if ids[-1]:
                ids.append([])
                weights.append([])
            continue
        tokens = tokenizer(
            fragment, add_special_tokens=False, truncation=False, verbose=False
        ).input_ids
        for token in tokens:
            if len(ids[-1]) == CHUNK_TOKENS:
                ids.append([])
                weights.append([])
            ids[-1].append(int(token))
            weights[-1].append(float(weight))
    if len(ids) > 1 and not ids[-1]:
        ids.pop()
        weights.pop()
    return TokenChunks(ids, weights)


def count_chunks(tokenizer: Any, text: str) -> int:
    """How many 75-token chunks ``text`` takes."""
    return tokenize_chunks(tokenizer, text).count


def check_chunks(chunks: int, max_chunks: int, what: str = "prompt") -> None:
    if chunks > max_chunks:
        raise PromptTooLong(
            "the {what} takes {chunks} chunks of {size} tokens; the limit is {most} "
            "({tokens} tokens)",
            what=prompt_word(what),
            chunks=chunks,
            size=CHUNK_TOKENS,
            most=max_chunks,
            tokens=max_chunks * CHUNK_TOKENS,
        )


def check_lengths(tokenizer: Any, prompt: str, negative_prompt: str, max_chunks: int) -> None:
    """Both prompts fit in ``max_chunks`` chunks (both SDXL tokenizers share a vocabulary)."""
    check_chunks(count_chunks(tokenizer, prompt), max_chunks, "prompt")
    check_chunks(count_chunks(tokenizer, negative_prompt), max_chunks, "negative prompt")


def _pad_chunks(chunks: TokenChunks, count: int) -> TokenChunks:
    missing = count - chunks.count
    return TokenChunks(chunks.ids + [[]] * missing, chunks.weights + [[]] * missing)


def _framed(tokenizer: Any, chunk: list[int]) -> list[int]:
    """``BOS chunk EOS pad...``: 77 ids, the way the tokenizer itself pads."""
    length = CHUNK_TOKENS + 2
    ids = [tokenizer.bos_token_id, *chunk, tokenizer.eos_token_id]
    return ids + [tokenizer.pad_token_id] * (length - len(ids))


@dataclass
class PromptEmbeddings:
    """The four tensors the SDXL pipelines take instead of prompt strings."""

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    negative_pooled_prompt_embeds: torch.Tensor
    chunks: int


class PromptEncoder:
    """Encodes prompt pairs with the pipeline's tokenizers and text encoders."""

    def __init__(self, pipeline: Any, *, max_chunks: int = 8) -> None:
        self.tokenizers = [pipeline.tokenizer, pipeline.tokenizer_2]
        self.encoders = [pipeline.text_encoder, pipeline.text_encoder_2]
        self.max_chunks = max_chunks

    def _check_length(self, chunks: int, what: str) -> None:
        check_chunks(chunks, self.max_chunks, what)

    def check(self, prompt: str, negative_prompt: str) -> None:
        """Raise :class:`PromptTooLong` now, before a job waits in the queue for nothing."""
        check_lengths(self.tokenizers[0], prompt, negative_prompt, self.max_chunks)

    @torch.no_grad()
    def encode(self, prompt: str, negative_prompt: str) -> PromptEmbeddings:
        encoder = self.encoders[1]
        device, dtype = encoder.device, encoder.dtype
        pos = [tokenize_chunks(t, prompt) for t in self.tokenizers]
        neg = [tokenize_chunks(t, negative_prompt) for t in self.tokenizers]
        count = max(c.count for c in pos + neg)
        self._check_length(max(c.count for c in pos), "prompt")
        self._check_length(max(c.count for c in neg), "negative prompt")
        # An empty negative prompt is encoded as "" (as A1111 does), never zeroed.
        pos_embeds, pos_pooled = self._encode_side([_pad_chunks(c, count) for c in pos])
        neg_embeds, neg_pooled = self._encode_side([_pad_chunks(c, count) for c in neg])
        return PromptEmbeddings(
            pos_embeds.to(device, dtype),
            neg_embeds.to(device, dtype),
            pos_pooled.to(device, dtype),
            neg_pooled.to(device, dtype),
            count,
        )

    def _encode_side(self, per_encoder: list[TokenChunks]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        for index, (tokenizer, encoder, chunks) in enumerate(
            zip(self.tokenizers, self.encoders, per_encoder, strict=True)
        ):
            parts = []
            for n, (ids, weights) in enumerate(zip(chunks.ids, chunks.weights, strict=True)):
                framed = torch.tensor([_framed(tokenizer, ids)], device=encoder.device)
                out = encoder(framed, output_hidden_states=True)
                states = out.hidden_states[-2]
                parts.append(_apply_weights(states, weights))
                if index == 1 and n == 0:
                    pooled = out[0]
            hidden.append(torch.cat(parts, dim=1))
        assert pooled is not None
        return torch.cat(hidden, dim=-1), pooled


def _apply_weights(states: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """Scale each token's hidden state by its weight; keep the chunk's mean."""
    if all(w == 1.0 for w in weights):
        return states
    full = [1.0, *weights] + [1.0] * (states.shape[1] - len(weights) - 1)
    scale = torch.tensor(full, dtype=states.dtype, device=states.device).view(1, -1, 1)
    original_mean = states.float().mean()
    weighted = states * scale
    return weighted * (original_mean / weighted.float().mean()).to(states.dtype)
