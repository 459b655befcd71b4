"""Live previews: TAESD decodes of the latents while a job renders."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.engine import Engine, Progress, RenderJob
from bot.engine.engine import Previewer
from bot.engine.loading import resolve_placement
from tests.conftest import tiny_settings
from tests.support.tiny_sdxl import save_tiny_taesd


@pytest.fixture(scope="session")
def tiny_taesd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_taesd(tmp_path_factory.mktemp("taesd"))


@pytest.fixture(scope="module")
def preview_engine(tiny_model_dir: Path, tiny_taesd_dir: Path) -> Engine:
    settings = tiny_settings(
        tiny_model_dir,
        ANIMAGINE_PREVIEWS__SOURCE=str(tiny_taesd_dir),
        ANIMAGINE_PREVIEWS__MAX_SIDE="64",
    )
    engine = Engine.load(settings, previews=True)
    assert engine.previewer is not None
    engine.previewer.max_share = 1e9  # a shared CI CPU: never off by itself here
    return engine


def job(**changes: object) -> RenderJob:
    base: dict[str, object] = {
        "prompt": "1girl, solo",
        "negative_prompt": "lowres",
        "width": 128,
        "height": 192,
        "steps": 4,
        "cfg": 7.0,
        "sampler": "Euler a",
        "seeds": (1234,),
    }
    base.update(changes)
    return RenderJob(**base)  # type: ignore[arg-type]


def test_a_due_preview_is_a_small_image_and_the_result_is_unchanged(
    preview_engine: Engine,
) -> None:
    seen: list[Progress] = []
    with_previews = preview_engine.render(job(), on_progress=seen.append, preview_every=0.0)
    plain = preview_engine.render(job())
    previews = [p.preview for p in seen if p.preview is not None]
    assert len(previews) == 4  # every step was due with an interval of 0
    for image in previews:
        assert isinstance(image, Image.Image)
        assert image.mode == "RGB"
        assert max(image.size) == 64  # decoded at 128x192, then made small
        assert image.size[0] < image.size[1]  # the job's aspect
    assert [p.step for p in seen] == [1, 2, 3, 4]
    assert all(p.seconds_left is not None and p.seconds_left >= 0 for p in seen)
    assert seen[-1].seconds_left == 0
    assert np.array_equal(
        np.asarray(with_previews.images[0].image), np.asarray(plain.images[0].image)
    )
    # Previews follow the latents as they change.
    assert not np.array_equal(np.asarray(previews[0]), np.asarray(previews[-1]))


def test_previews_come_per_job_at_most_once_per_interval(preview_engine: Engine) -> None:
    seen: list[Progress] = []
    preview_engine.render(job(), on_progress=seen.append, preview_every=3600.0)
    assert all(p.preview is None for p in seen)
    first: list[Progress] = []
    second: list[Progress] = []
    preview_engine.render_batch(
        [job(), job(seeds=(7, 8), prompt="1boy")],
        on_progress=[first.append, second.append],
        preview_every=[None, 0.0],
    )
    assert all(p.preview is None for p in first)
    assert sum(p.preview is not None for p in second) == 4  # one image: the job's first


def test_a_slow_decode_turns_previews_off(
    preview_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    assert preview_engine.previewer is not None
    taesd = preview_engine.previewer.taesd
    strict = Previewer(taesd, max_side=64, max_share=1e-9)
    preview_engine.previewer, kept = strict, preview_engine.previewer
    try:
        seen: list[Progress] = []
        with caplog.at_level(logging.WARNING, logger="bot.engine.engine"):
            preview_engine.render(job(), on_progress=seen.append, preview_every=0.0)
        assert sum(p.preview is not None for p in seen) == 1  # the one that was measured
        assert not strict.on
        assert "live previews off" in caplog.text
    finally:
        preview_engine.previewer = kept


def test_taesd_that_cannot_load_is_a_warning_not_a_failed_start(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = tiny_settings(tiny_model_dir, ANIMAGINE_PREVIEWS__SOURCE=str(tmp_path / "missing"))
    holder = Engine.__new__(Engine)
    holder.placement = resolve_placement(settings.engine)
    with caplog.at_level(logging.WARNING, logger="bot.engine.engine"):
        holder.load_previews(settings)
    assert holder.previewer is None
    assert "live previews off" in caplog.text


def test_previews_go_off_when_they_cost_too_much_of_the_render_time() -> None:
    previewer = Previewer(object(), max_share=0.05)
    previewer.judge(0.1, 0.05, 3.0)  # 100 ms every 3 s: 3.3 %
    assert previewer.on
    previewer.judge(0.1, 2.5, 0.0)  # every step of 2.5 s: 4 %
    assert previewer.on
    previewer.judge(0.2, 0.05, 3.0)  # 6.7 %
    assert not previewer.on
    assert "over 5%" in (previewer.off_reason or "")


async def test_the_renderer_gives_no_previews_while_the_queue_is_busy(
    tiny_model_dir: Path,
) -> None:
    from types import SimpleNamespace

    from bot.queue.render import Renderer

    settings = tiny_settings(
        tiny_model_dir, ANIMAGINE_PREVIEWS__SOURCE="x/y", ANIMAGINE_PREVIEWS__BUSY_QUEUE="2"
    )
    renderer = Renderer.__new__(Renderer)
    renderer._previews_loaded = False
    renderer.settings = settings
    renderer.engine = SimpleNamespace(previewer=Previewer(object()))  # type: ignore[assignment]
    job = SimpleNamespace(guild_id=None)
    renderer.queue = [1, 2]  # type: ignore[assignment]
    assert await renderer.preview_interval(job) == 3.0  # type: ignore[arg-type]
    renderer.queue = [1, 2, 3]  # type: ignore[assignment]
    assert await renderer.preview_interval(job) is None  # type: ignore[arg-type]
    renderer.queue = []  # type: ignore[assignment]
    renderer.engine.previewer.off_reason = "slow"  # type: ignore[union-attr]
    assert await renderer.preview_interval(job) is None  # type: ignore[arg-type]


def test_an_engine_without_previews_does_not_load_taesd(
    tiny_model_dir: Path, tiny_taesd_dir: Path
) -> None:
    settings = tiny_settings(tiny_model_dir, ANIMAGINE_PREVIEWS__SOURCE=str(tiny_taesd_dir))
    assert Engine.load(settings, previews=False).previewer is None  # the CLI, Redis workers
    off = tiny_settings(
        tiny_model_dir,
        ANIMAGINE_PREVIEWS__SOURCE=str(tiny_taesd_dir),
        ANIMAGINE_PREVIEWS__ENABLED="false",
    )
    assert Engine.load(off, previews=True).previewer is None


async def test_the_embedded_renderer_loads_taesd_once_before_its_first_job(
    tiny_model_dir: Path, tiny_taesd_dir: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from bot.queue.render import Renderer

    settings = tiny_settings(
        tiny_model_dir,
        ANIMAGINE_PREVIEWS__SOURCE=str(tiny_taesd_dir),
        ANIMAGINE_PREVIEWS__INTERVAL_S="2.5",
    )
    engine = Engine.load(settings)  # as the bot loads it: no TAESD yet
    assert engine.previewer is None
    renderer = Renderer.__new__(Renderer)
    renderer._previews_loaded = False
    renderer.settings = settings
    renderer.engine = engine
    renderer.queue = []  # type: ignore[assignment]
    renderer._gpu = ThreadPoolExecutor(max_workers=1)
    try:
        job = SimpleNamespace(guild_id=None)
        assert await renderer.preview_interval(job) == 2.5  # type: ignore[arg-type]
        loaded = engine.previewer
        assert loaded is not None
        assert await renderer.preview_interval(job) == 2.5  # type: ignore[arg-type]
        assert engine.previewer is loaded  # once
    finally:
        renderer.shutdown()
