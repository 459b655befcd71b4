"""Chunked, weighted prompt encoding for both SDXL text encoders (tiny pipeline, CPU)."""

from __future__ import annotations

import pytest
import torch

from bot.engine import Engine, RenderJob
from bot.prompts.encoder import CHUNK_TOKENS, PromptEncoder, PromptTooLong, tokenize_chunks
from tests.support.tiny_sdxl import TEXT_HIDDEN_1

# The tiny tokenizer has one token per character (spaces excepted).


@pytest.fixture(scope="module")
def pipe(engine: Engine) -> object:
    return engine.pipeline


def test_short_plain_prompt_encodes_exactly_as_diffusers(pipe: object) -> None:
    prompt, negative = "1girl, solo, smile", "lowres, bad anatomy"
    ours = PromptEncoder(pipe).encode(prompt, negative)
    theirs = pipe.encode_prompt(  # type: ignore[attr-defined]
        prompt,
        negative_prompt=negative,
        device=torch.device("cpu"),
        num_images_per_prompt=1,
        do_classifier_free_guidance=True,
    )
    for mine, reference in zip(
        (
            ours.prompt_embeds,
            ours.negative_prompt_embeds,
            ours.pooled_prompt_embeds,
            ours.negative_pooled_prompt_embeds,
        ),
        theirs,
        strict=True,
    ):
        assert torch.equal(mine, reference)


def test_long_prompts_are_chunked_not_truncated(pipe: object) -> None:
    encoder = PromptEncoder(pipe)
    prompt = " ".join(["x"] * 160)  # 160 tokens: 3 chunks of 75
    out = encoder.encode(prompt, "lowres")
    assert out.chunks == 3
    assert out.prompt_embeds.shape == (1, 3 * 77, 48)
    # The negative prompt is padded with empty chunks to the same length.
    assert out.negative_prompt_embeds.shape == out.prompt_embeds.shape
    # The end of the prompt matters: a change in the last chunk changes the embedding there.
    other = encoder.encode(" ".join(["x"] * 159 + ["y"]), "lowres")
    assert torch.equal(other.prompt_embeds[:, :154], out.prompt_embeds[:, :154])
    assert not torch.equal(other.prompt_embeds[:, 154:], out.prompt_embeds[:, 154:])
    # The pooled embedding comes from the first chunk alone.
    first = encoder.encode(" ".join(["x"] * 75), "lowres")
    assert torch.equal(first.pooled_prompt_embeds, out.pooled_prompt_embeds)


def test_chunk_counts(pipe: object) -> None:
    tokenizer = pipe.tokenizer  # type: ignore[attr-defined]
    assert tokenize_chunks(tokenizer, "").count == 1
    assert tokenize_chunks(tokenizer, "a" * CHUNK_TOKENS).count == 1
    assert tokenize_chunks(tokenizer, "a" * (CHUNK_TOKENS + 1)).count == 2
    assert tokenize_chunks(tokenizer, "abc BREAK def").ids == [
        tokenizer("abc", add_special_tokens=False).input_ids,
        tokenizer("def", add_special_tokens=False).input_ids,
    ]
    weighted = tokenize_chunks(tokenizer, "a (bc:1.5) [d]")
    assert weighted.weights == [[1.0, 1.5, 1.5, pytest.approx(1 / 1.1)]]


def test_too_many_chunks_is_a_clear_error(pipe: object) -> None:
    encoder = PromptEncoder(pipe, max_chunks=2)
    with pytest.raises(PromptTooLong, match="takes 3 chunks of 75 tokens; the limit is 2"):
        encoder.encode("x" * 200, "")
    with pytest.raises(PromptTooLong, match="negative prompt"):
        encoder.encode("ok", "x" * 200)


def test_weights_change_only_the_weighted_tokens_before_the_mean_rescale(pipe: object) -> None:
    encoder = PromptEncoder(pipe)
    # Runs are tokenized one by one (as in A1111); these split at word boundaries, so both
    # prompts give the same token ids.
    plain = encoder.encode("ab cd ef", "").prompt_embeds
    weighted = encoder.encode("ab (cd:1.5) ef", "").prompt_embeds
    assert not torch.equal(plain, weighted)
    ratio = (weighted / plain)[0]  # (77 tokens, 16 + 32 features of the two encoders)
    # Each encoder's chunk is rescaled by its own factor k to keep its mean; within one
    # encoder every token's features share one scale: k, or 1.5 k where the weight is.
    for part in (ratio[:, :TEXT_HIDDEN_1], ratio[:, TEXT_HIDDEN_1:]):
        per_token = part.mean(dim=1)
        assert torch.allclose(part, per_token[:, None].expand_as(part), rtol=1e-4, atol=1e-5)
        # Token positions: BOS, a, b, c, d, e, f, EOS...; c and d carry weight 1.5.
        expected = torch.full_like(per_token, float(per_token[1]))
        expected[3:5] *= 1.5
        assert torch.allclose(per_token, expected, rtol=1e-4)


def test_emphasis_and_a_long_prompt_render(engine: Engine) -> None:
    prompt = "1girl, (long hair:1.3), [blurry], " + ", ".join(f"tag{i}" for i in range(40))
    job = RenderJob(prompt, "nsfw, (bad)", 64, 64, 2, 7.0, "Euler a", (1,))
    result = engine.render(job)
    assert result.images[0].infotext.prompt == prompt
