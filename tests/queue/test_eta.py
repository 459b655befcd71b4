"""The ETA model: seconds per work unit, learnt from finished jobs."""

from __future__ import annotations

import pytest

from bot.queue.eta import DurationModel
from bot.shape import JobShape


def test_the_first_sample_replaces_the_initial_guess_then_a_moving_average() -> None:
    model = DurationModel(initial_seconds_per_unit=2.0, weight=0.5)
    assert model.estimate(10) == 20.0
    model.record(10, 50.0)  # 5 s per unit
    assert model.seconds_per_unit == 5.0
    model.record(10, 30.0)  # 3 s per unit: halfway there
    assert model.seconds_per_unit == 4.0
    assert model.samples == 2


def test_jobs_without_work_teach_nothing() -> None:
    model = DurationModel(initial_seconds_per_unit=2.0)
    model.record(0, 99.0)
    assert (model.seconds_per_unit, model.samples) == (2.0, 0)


def test_work_units_grow_with_images_pixels_steps_and_the_hires_pass() -> None:
    one = JobShape(count=1, width=1024, height=1024, steps=28)
    assert one.work_units == pytest.approx(28.0)
    assert JobShape(count=2, width=1024, height=1024, steps=28).work_units == 56.0
    hires = JobShape(steps=28, hires=True, hires_scale=1.5, hires_strength=0.5)
    assert hires.hires_steps == 14
    assert hires.work_units == pytest.approx(28 + 14 * 2.25)
    assert one.hires_steps == 0
