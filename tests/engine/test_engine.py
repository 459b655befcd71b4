"""The engine on a tiny random SDXL pipeline, on the CPU in float32."""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import numpy as np
import pytest
import torch

from bot.engine import CancelToken, Engine, EngineError, JobCancelled, Progress, RenderJob
from bot.engine.engine import image_problem
from bot.prompts.emphasis import WeightOutOfRange
from bot.request import SAMPLERS, HiresOptions
from tests.conftest import tiny_settings
from tests.support.broken_sdxl import save_broken_model


def job(**changes: Any) -> RenderJob:
    base: dict[str, Any] = {
        "prompt": "1girl, solo, long hair",
        "negative_prompt": "lowres, (bad)",
        "width": 128,
        "height": 192,
        "steps": 4,
        "cfg": 7.0,
        "sampler": "Euler a",
        "seeds": (1234,),
    }
    base.update(changes)
    return RenderJob(**base)


def pixels(result: Any, index: int = 0) -> np.ndarray:
    return np.asarray(result.images[index].image, dtype=np.int16)


def test_same_job_and_seed_give_the_same_pixels(engine: Engine) -> None:
    first = engine.render(job())
    second = engine.render(job())
    assert np.array_equal(pixels(first), pixels(second))
    other_seed = engine.render(job(seeds=(1235,)))
    assert not np.array_equal(pixels(first), pixels(other_seed))


def test_each_image_of_a_batch_is_reproduced_by_its_own_seed(engine: Engine) -> None:
    batch = engine.render(job(seeds=(10, 11, 12)))
    assert [img.seed for img in batch.images] == [10, 11, 12]
    alone = engine.render(job(seeds=(11,)))
    # Batched and single convolutions may round differently in the last float bit.
    assert np.abs(pixels(batch, 1) - pixels(alone)).max() <= 2
    assert np.abs(pixels(batch, 0) - pixels(alone)).max() > 10
    assert batch.images[1].infotext.params["Seed"] == "11"


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_renders(engine: Engine, sampler: str) -> None:
    result = engine.render(job(sampler=sampler, width=64, height=64, steps=3))
    image = result.images[0].image
    assert image.size == (64, 64)
    assert np.asarray(image).std() > 0
    assert result.images[0].infotext.params["Sampler"] == sampler


def test_a_fresh_scheduler_per_job_leaves_the_pipeline_scheduler_alone(engine: Engine) -> None:
    before = type(engine.pipeline.scheduler)
    engine.render(job(sampler="DDIM", width=64, height=64, steps=2))
    assert type(engine.pipeline.scheduler) is before


def test_progress_is_reported_after_every_step(engine: Engine) -> None:
    seen: list[Progress] = []
    engine.render(job(steps=5, width=64, height=64), on_progress=seen.append)
    assert [p.step for p in seen] == [1, 2, 3, 4, 5]
    assert {p.total for p in seen} == {5}


def test_cancel_stops_within_one_step_and_engine_keeps_serving(engine: Engine) -> None:
    cancel = CancelToken()
    seen: list[int] = []

    def on_progress(p: Progress) -> None:
        seen.append(p.step)
        if p.step == 2:
            cancel.cancel()

    with pytest.raises(JobCancelled):
        engine.render(job(steps=20), on_progress=on_progress, cancel=cancel)
    assert seen == [1, 2]
    assert not engine.busy
    assert len(engine.render(job(width=64, height=64)).images) == 1


def test_cancel_from_another_thread_during_a_run(engine: Engine) -> None:
    cancel = CancelToken()
    started = threading.Event()
    seen: list[int] = []

    def on_progress(p: Progress) -> None:
        seen.append(p.step)
        started.set()

    def cancel_soon() -> None:
        started.wait(30)
        cancel.cancel()

    thread = threading.Thread(target=cancel_soon)
    thread.start()
    with pytest.raises(JobCancelled):
        engine.render(job(steps=40, width=256, height=256), on_progress=on_progress, cancel=cancel)
    thread.join()
    assert len(seen) < 40


def test_hires_pass_upscales_and_records_its_settings(engine: Engine) -> None:
    seen: list[Progress] = []
    hires = HiresOptions(scale=1.5, strength=0.55)
    result = engine.render(
        job(width=128, height=128, steps=4, hires=hires), on_progress=seen.append
    )
    image = result.images[0]
    assert image.image.size == (192, 192)
    assert [p.phase for p in seen] == ["base"] * 4 + ["hires"] * 2
    assert seen[-1].step == seen[-1].total == 6
    assert image.infotext.params["Hires upscale"] == "1.5"
    assert image.infotext.params["Denoising strength"] == "0.55"
    assert image.infotext.params["Size"] == "128x128"


def test_hires_shares_the_loaded_weights(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    unet = engine.pipeline.unet
    original = unet.forward

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(id(unet))
        return original(*args, **kwargs)

    monkeypatch.setattr(unet, "forward", counting)
    engine.render(job(width=64, height=64, steps=2, hires=HiresOptions(scale=1.0)))
    assert len(calls) == 3
    assert set(calls) == {id(unet)}


def test_out_of_memory_fails_only_that_job(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    unet = engine.pipeline.unet
    original = unet.forward

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(unet, "forward", boom)
    with pytest.raises(EngineError, match="ran out of memory") as info:
        engine.render(job(seeds=(1, 2)))
    assert "2 image(s) at 128x192" in str(info.value)
    monkeypatch.setattr(unet, "forward", original)
    assert not engine.busy
    assert len(engine.render(job(width=64, height=64)).images) == 1


def test_two_jobs_never_enter_the_pipeline_at_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside = 0
    overlap: list[int] = []
    lock = threading.Lock()
    unet = engine.pipeline.unet
    original = unet.forward

    def tracking(*args: Any, **kwargs: Any) -> Any:
        nonlocal inside
        with lock:
            inside += 1
            overlap.append(inside)
        time.sleep(0.01)
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                inside -= 1

    monkeypatch.setattr(unet, "forward", tracking)
    threads = [
        threading.Thread(target=engine.render, args=(job(width=64, height=64, steps=3),))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlap
    assert max(overlap) == 1


def test_half_precision_stock_vae_decodes_in_float32(engine: Engine) -> None:
    vae = engine.pipeline.vae
    seen: list[torch.dtype] = []
    handle = vae.decoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0].dtype))
    torch.nn.Module.to(vae, torch.bfloat16)
    try:
        assert vae.config.force_upcast
        images = engine.decode(torch.randn(1, 4, 8, 8))
    finally:
        torch.nn.Module.to(vae, torch.float32)
        handle.remove()
    assert seen == [torch.float32]
    assert vae.dtype == torch.float32
    assert images[0].size == (64, 64)


def test_overflowing_half_precision_decode_is_redone_in_float32(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    vae = engine.pipeline.vae
    original = vae.decode

    def overflow_in_half(latents: torch.Tensor, **kwargs: Any) -> Any:
        out = original(latents, **kwargs)
        if latents.dtype != torch.float32:
            return (torch.full_like(out[0], float("nan")),)
        return out

    monkeypatch.setattr(vae, "decode", overflow_in_half)
    monkeypatch.setitem(vae.config, "force_upcast", False)
    torch.nn.Module.to(vae, torch.bfloat16)
    try:
        with caplog.at_level(logging.WARNING):
            images = engine.decode(torch.randn(1, 4, 8, 8))
    finally:
        torch.nn.Module.to(vae, torch.float32)
    assert np.asarray(images[0]).std() > 0
    assert "decoding again in float32" in caplog.text


# --- broken images and weights --------------------------------------------------------------


@pytest.fixture(scope="module")
def nan_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    root = tmp_path_factory.mktemp("nan-vae")
    return Engine.load(tiny_settings(save_broken_model(root, "nan")))


@pytest.fixture(scope="module")
def flat_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    root = tmp_path_factory.mktemp("flat-vae")
    return Engine.load(tiny_settings(save_broken_model(root, "flat")))


def test_image_problem_finds_nan_and_flat_images() -> None:
    good = torch.rand(3, 8, 8) * 2 - 1
    assert image_problem(good) is None
    nan = good.clone()
    nan[0, 0, 0] = float("nan")
    assert "NaN or infinite" in (image_problem(nan) or "")
    inf = good.clone()
    inf[1, 2, 3] = float("inf")
    assert image_problem(inf) is not None
    black = torch.full((3, 8, 8), -4.0)  # far below -1: clamped to black
    assert image_problem(black) == "the image came out as one flat colour (every pixel about 0/255)"
    grey = torch.zeros(3, 8, 8)
    grey[0, 0, 0] = 1 / 255  # well within one 8-bit step (0-1 scale: 1/510)
    assert "flat colour" in (image_problem(grey) or "")
    almost = torch.zeros(3, 8, 8)
    almost[0, 0, 0] = 4 / 255  # two 8-bit steps apart: a (very faint) picture
    assert image_problem(almost) is None


def test_a_vae_that_decodes_to_nan_fails_the_job(nan_engine: Engine) -> None:
    with pytest.raises(EngineError) as info:
        nan_engine.render(job(width=64, height=64, steps=2))
    message = str(info.value)
    assert message.startswith("the image came out broken and was not posted: came out as NaN")


def test_a_vae_that_decodes_to_one_colour_fails_the_job(flat_engine: Engine) -> None:
    with pytest.raises(EngineError, match=r"one flat colour \(every pixel about 0/255\)"):
        flat_engine.render(job(width=64, height=64, steps=2))


def test_in_a_batch_broken_images_fail_their_job_not_the_call(nan_engine: Engine) -> None:
    results = nan_engine.render_batch(
        [job(width=64, height=64, steps=2), job(width=64, height=64, steps=2, seeds=(1, 2))]
    )
    assert [r.images for r in results] == [[], []]
    assert results[0].error is not None
    assert results[0].error.startswith("the image came out")
    assert results[1].error is not None
    assert results[1].error.startswith("image 1 of 2 came out")


@pytest.mark.parametrize(
    ("prompt", "negative", "message"),
    [
        ("(1girl:" + "9" * 400 + ")", "", "weights '1girl' by a number too large"),
        ("(1girl:70000)", "", "weights '1girl' by 7e+04"),
        ("1girl", "((((lowres:2.9))))", "negative prompt weights 'lowres' by 3.86"),
    ],
)
def test_weights_out_of_range_are_refused_before_any_work(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, prompt: str, negative: str, message: str
) -> None:
    def no_encoding(*_: object) -> None:
        raise AssertionError("nothing is encoded for a refused prompt")

    monkeypatch.setattr(engine.encoder, "encode", no_encoding)
    with pytest.raises(WeightOutOfRange, match=re.escape(message)):
        engine.render(job(prompt=prompt, negative_prompt=negative, width=64, height=64))
