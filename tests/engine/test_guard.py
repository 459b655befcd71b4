"""The correctness guard: bounds, edge cases, and the step-by-step noise comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bot.engine.guard import MAX_LATENT_REL_ERROR, MIN_IMAGE_PSNR_DB, compare_outputs


def test_compare_outputs_bounds_and_edge_cases() -> None:
    assert (MAX_LATENT_REL_ERROR, MIN_IMAGE_PSNR_DB) == (1e-2, 35.0)
    latents = torch.randn(1, 4, 8, 8)
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    same = compare_outputs(latents, latents.clone(), image, image.copy())
    assert same.passed
    assert same.rel_error == 0.0
    assert math.isinf(same.psnr_db)
    near = compare_outputs(latents, latents * (1 + 5e-3), image, image)
    assert near.passed
    assert near.rel_error == pytest.approx(5e-3, rel=1e-4)
    noisy = np.clip(image.astype(np.int16) + 12, 0, 255).astype(np.uint8)
    assert not compare_outputs(latents, latents, image, noisy).passed  # ~26 dB
    nan = latents.clone()
    nan[0, 0, 0, 0] = float("nan")
    assert not compare_outputs(latents, nan, image, image).passed
    with pytest.raises(ValueError, match="shapes differ"):
        compare_outputs(latents, latents[:, :2], image, image)


def test_the_guard_compares_every_steps_noise_prediction() -> None:
    latents = torch.randn(1, 4, 8, 8)
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    noise = [torch.randn(2, 4, 8, 8) for _ in range(5)]
    close = [n * (1 + 2e-3) for n in noise]
    result = compare_outputs(
        latents, latents, image, image, reference_noise=noise, candidate_noise=close
    )
    assert result.passed
    assert result.noise_rel_error == pytest.approx(2e-3, rel=1e-3)
    assert "noise predictions rel. error 2.00e-03 at step 1" in result.describe()
    assert "over 5 UNet calls" in result.describe()
    # Final latents and image identical, but the UNet decided differently at one step.
    moved = [n.clone() for n in noise]
    moved[3] = moved[3] + 0.05 * torch.randn_like(moved[3])
    failed = compare_outputs(
        latents, latents, image, image, reference_noise=noise, candidate_noise=moved
    )
    assert not failed.passed
    assert failed.noise_steps[3] > 1e-2
    assert max(failed.noise_steps[:3]) == 0.0
    with pytest.raises(ValueError, match="step by step"):
        compare_outputs(
            latents, latents, image, image, reference_noise=noise, candidate_noise=noise[:4]
        )
    assert compare_outputs(latents, latents, image, image).noise_rel_error is None
