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
        ANIMAGINE_PREVIEWS__MAX_STEP_SHARE="10",
    )
    engine = Engine.load(settings)
    assert engine.previewer is not None
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
    strict = Previewer(taesd, max_side=64, max_step_share=1e-9)
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
