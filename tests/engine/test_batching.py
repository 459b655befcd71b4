"""Micro-batching in the engine: compatible jobs in one pipeline call, each image as alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from bot.engine import CancelToken, Engine, EngineError, JobCancelled, Progress, RenderJob
from bot.engine.engine import RenderResult
from bot.engine.optimize import _pad_prompt_hook
from bot.request import HiresOptions

LONG_PROMPT = ", ".join(["1girl"] * 40)  # 4 chunks of the character-level tokenizer


def job(**changes: Any) -> RenderJob:
    base: dict[str, Any] = {
        "prompt": "1girl, solo, long hair",
        "negative_prompt": "lowres, (bad)",
        "width": 64,
        "height": 64,
        "steps": 3,
        "cfg": 7.0,
        "sampler": "Euler a",
        "seeds": (1234,),
    }
    base.update(changes)
    return RenderJob(**base)


def pixels(result: RenderResult, index: int = 0) -> np.ndarray:
    return np.asarray(result.images[index].image, dtype=np.int16)


def assert_same_images(batched: RenderResult, alone: RenderResult) -> None:
    assert [i.seed for i in batched.images] == [i.seed for i in alone.images]
    for index in range(len(alone.images)):
        # Batched and single kernels may round differently in the last float bit.
        assert np.abs(pixels(batched, index) - pixels(alone, index)).max() <= 2


@pytest.fixture
def unet_batches(engine: Engine) -> Iterator[list[tuple[int, bool]]]:
    """(rows, masked) of every UNet evaluation, as the UNet got them (after every pre-hook)."""
    seen: list[tuple[int, bool]] = []

    def spy(_m: Any, _args: tuple[Any, ...], kwargs: dict[str, Any], _out: Any) -> None:
        states = kwargs["encoder_hidden_states"]
        seen.append((states.shape[0], kwargs.get("encoder_attention_mask") is not None))

    handle = engine.pipeline.unet.register_forward_hook(spy, with_kwargs=True)
    yield seen
    handle.remove()


def test_a_batch_draws_each_jobs_images_as_alone_in_one_call(
    engine: Engine, unet_batches: list[tuple[int, bool]]
) -> None:
    first = job(seeds=(10, 11))
    second = job(prompt="1boy, short hair, smile", negative_prompt="", seeds=(77,))
    steps: dict[int, list[int]] = {0: [], 1: []}
    results = engine.render_batch(
        [first, second],
        on_progress=[lambda p: steps[0].append(p.step), lambda p: steps[1].append(p.step)],
        cancels=[CancelToken(), CancelToken()],
    )
    # One call: every step sees the 3 images twice (negative and positive prompt), unmasked.
    assert unet_batches == [(6, False)] * 3
    assert steps == {0: [1, 2, 3], 1: [1, 2, 3]}
    unet_batches.clear()
    assert_same_images(results[0], engine.render(first))
    assert_same_images(results[1], engine.render(second))
    assert unet_batches == [(4, False)] * 3 + [(2, False)] * 3
    info = results[1].images[0].infotext
    assert info.prompt == "1boy, short hair, smile"
    assert info.params["Seed"] == "77"
    assert results[0].images[1].infotext.params["Seed"] == "11"
    # Each job's share of the call's time, by images.
    assert results[0].seconds == pytest.approx(2 * results[1].seconds)


@pytest.mark.parametrize("cfg", [7.0, 1.0])
def test_prompts_of_different_lengths_are_padded_masked_and_draw_as_alone(
    engine: Engine, unet_batches: list[tuple[int, bool]], cfg: float
) -> None:
    short = job(cfg=cfg, seeds=(3,))
    long = job(prompt=LONG_PROMPT, cfg=cfg, seeds=(4,))
    results = engine.render_batch([short, long])
    rows = 4 if cfg > 1 else 2  # without guidance the UNet sees the positives only
    assert unet_batches == [(rows, True)] * 3
    assert_same_images(results[0], engine.render(short))
    assert_same_images(results[1], engine.render(long))


def test_padding_composes_with_the_compile_padding_hook(engine: Engine) -> None:
    short, long = job(seeds=(3,)), job(prompt=LONG_PROMPT, seeds=(4,))
    alone = engine.render(short)
    masks: list[torch.Tensor] = []

    def spy(_m: Any, _args: tuple[Any, ...], kwargs: dict[str, Any], _out: Any) -> None:
        masks.append(kwargs["encoder_attention_mask"])

    unet = engine.pipeline.unet
    handles = [
        unet.register_forward_pre_hook(_pad_prompt_hook(6), with_kwargs=True),
        unet.register_forward_hook(spy, with_kwargs=True),
    ]
    try:
        results = engine.render_batch([short, long])
    finally:
        for handle in handles:
            handle.remove()
    assert_same_images(results[0], alone)
    # Rows: negative short, negative long, positive short, positive long; 6 chunks in all.
    real = masks[0].sum(dim=1).tolist()
    assert masks[0].shape == (4, 6 * 77)
    assert real == [77, 4 * 77, 77, 4 * 77]


def test_a_hires_batch_draws_as_alone(engine: Engine) -> None:
    hires = HiresOptions(scale=1.5, strength=0.5)
    first, second = job(hires=hires, seeds=(5,)), job(hires=hires, prompt=LONG_PROMPT, seeds=(6,))
    seen: list[Progress] = []
    results = engine.render_batch([first, second], on_progress=[seen.append, None])
    assert [p.phase for p in seen] == ["base"] * 3 + ["hires"]
    assert results[0].images[0].image.size == (96, 96)
    assert_same_images(results[0], engine.render(first))
    assert_same_images(results[1], engine.render(second))


@pytest.mark.parametrize(
    "change",
    [
        {"width": 128},
        {"height": 128},
        {"steps": 4},
        {"cfg": 6.0},
        {"sampler": "DDIM"},
        {"hires": HiresOptions(scale=1.5)},
    ],
)
def test_incompatible_jobs_are_refused(engine: Engine, change: dict[str, Any]) -> None:
    other = job(**change)
    assert other.shape.batch_key != job().shape.batch_key
    with pytest.raises(ValueError, match="must share size, steps, CFG, sampler and hires"):
        engine.render_batch([job(), other])
    assert not engine.busy


def test_compatible_means_prompts_and_seeds_may_differ() -> None:
    assert (
        job().shape.batch_key
        == job(prompt=LONG_PROMPT, seeds=(1, 2), sampler="euler a").shape.batch_key
    )


def test_a_job_cancelled_in_a_batch_is_dropped_and_the_others_finish(engine: Engine) -> None:
    keep, drop = job(seeds=(21,)), job(prompt="1boy", seeds=(22,))
    tokens = [CancelToken(), CancelToken()]
    steps: list[int] = []

    def on_progress(p: Progress) -> None:
        steps.append(p.step)
        if p.step == 1:
            tokens[1].cancel()

    results = engine.render_batch([keep, drop], on_progress=[None, on_progress], cancels=tokens)
    assert steps == [1]  # a cancelled job hears no more progress
    assert results[1].cancelled
    assert results[1].images == []
    assert not results[0].cancelled
    assert_same_images(results[0], engine.render(keep))


def test_a_job_cancelled_before_the_call_is_left_out(
    engine: Engine, unet_batches: list[tuple[int, bool]]
) -> None:
    tokens = [CancelToken(), CancelToken()]
    tokens[0].cancel()
    results = engine.render_batch([job(seeds=(1,)), job(seeds=(2, 3))], cancels=tokens)
    assert results[0].cancelled
    assert [i.seed for i in results[1].images] == [2, 3]
    assert {rows for rows, _ in unet_batches} == {4}


def test_the_call_stops_when_every_job_is_cancelled(engine: Engine) -> None:
    tokens = [CancelToken(), CancelToken()]
    seen: list[int] = []

    def on_progress(p: Progress) -> None:
        seen.append(p.step)
        if p.step == 2:
            for token in tokens:
                token.cancel()

    with pytest.raises(JobCancelled):
        engine.render_batch(
            [job(steps=20), job(steps=20, prompt="1boy")],
            on_progress=[on_progress, None],
            cancels=tokens,
        )
    assert seen == [1, 2]
    assert not engine.busy


def test_out_of_memory_fails_the_call_and_counts_every_image(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(engine.pipeline.unet, "forward", boom)
    with pytest.raises(EngineError, match=r"ran out of memory rendering 3 image\(s\) at 64x64"):
        engine.render_batch([job(seeds=(1, 2)), job(seeds=(3,))])
    assert not engine.busy
