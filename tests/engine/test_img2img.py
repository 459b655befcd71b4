"""img2img on the tiny random SDXL pipeline: size, strength, progress, infotext."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot.engine import CancelToken, Engine, JobCancelled, Progress, RenderJob
from bot.engine.engine import fit_to
from bot.request import HiresOptions, ImagePrompt

SOURCE = "0" * 64 + ".png"


def job(strength: float, **changes: Any) -> RenderJob:
    base: dict[str, Any] = {
        "prompt": "1girl, solo",
        "negative_prompt": "lowres",
        "width": 128,
        "height": 192,
        "steps": 10,
        "cfg": 7.0,
        "sampler": "Euler a",
        "seeds": (42,),
        "image": ImagePrompt(source=SOURCE, strength=strength),
    }
    base.update(changes)
    return RenderJob(**base)


def gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    rgb = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


@pytest.fixture(scope="module")
def source() -> Image.Image:
    return gradient(160, 200)  # not the job's size: the engine fits it


def test_output_is_the_card_size_and_strength_is_respected(
    engine: Engine, source: Image.Image
) -> None:
    # Zero steps (strength 0): only the VAE's round trip of the input, whatever the seed.
    none = engine.render(job(0.0), init_image=source).images[0]
    assert none.image.size == (128, 192)
    again = engine.render(job(0.0, seeds=(7,)), init_image=source).images[0]
    assert diff(none.image, again.image) == 0.0
    subtle = engine.render(job(0.3), init_image=source).images[0]
    strong = engine.render(job(1.0), init_image=source).images[0]
    assert subtle.image.size == strong.image.size == (128, 192)
    # The more strength, the further from the input (as the VAE renders it).
    assert diff(none.image, subtle.image) < diff(none.image, strong.image)
    assert subtle.infotext.params["Denoising strength"] == "0.3"
    assert subtle.infotext.params["Size"] == "128x192"
    # Same seed, same input: the same image.
    same = engine.render(job(0.3), init_image=source).images[0]
    assert diff(subtle.image, same.image) == 0.0


def test_progress_counts_the_img2img_steps_and_cancel_stops_it(
    engine: Engine, source: Image.Image
) -> None:
    seen: list[Progress] = []
    engine.render(job(0.5), init_image=source, on_progress=seen.append)
    assert [p.step for p in seen] == [1, 2, 3, 4, 5]
    assert {p.total for p in seen} == {5}
    token = CancelToken()

    def stop(progress: Progress) -> None:
        token.cancel()

    with pytest.raises(JobCancelled):
        engine.render(job(0.5), init_image=source, on_progress=stop, cancel=token)


def test_img2img_with_hires_and_several_seeds(engine: Engine, source: Image.Image) -> None:
    hires = HiresOptions(scale=1.5, strength=0.5)
    result = engine.render(job(0.4, seeds=(1, 2), hires=hires), init_image=source)
    assert [img.image.size for img in result.images] == [(192, 288)] * 2
    assert diff(result.images[0].image, result.images[1].image) > 0
    assert result.images[0].infotext.params["Denoising strength"] == "0.4"


def test_an_img2img_job_needs_its_image_and_renders_alone(
    engine: Engine, source: Image.Image
) -> None:
    with pytest.raises(ValueError, match="needs its input image"):
        engine.render(job(0.5))
    with pytest.raises(ValueError, match="renders alone"):
        engine.render_batch([job(0.5), job(0.5)], init_image=source)
    plain = job(0.5, image=None)
    with pytest.raises(ValueError, match="does not use one"):
        engine.render(plain, init_image=source)


def test_fit_to_covers_and_crops_without_stretching() -> None:
    wide = gradient(400, 100)
    fitted = fit_to(wide, 100, 100)
    assert fitted.size == (100, 100)
    # The middle kept: the left edge of the fitted image is the wide image's 150th column.
    left = np.asarray(fitted, np.float32)[:, 0, 0].mean()
    assert 80 < left < 110
