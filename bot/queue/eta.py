"""How long jobs take: seconds per work unit, learnt from finished jobs.

A job's work units are its shape's (:attr:`bot.shape.JobShape.work_units`: denoising steps
times megapixels, over all images); the model turns them into seconds for ETAs.
"""

from __future__ import annotations


class DurationModel:
    """Seconds per work unit, learnt from finished jobs (a moving average)."""

    def __init__(self, initial_seconds_per_unit: float, weight: float = 0.3) -> None:
        self.seconds_per_unit = initial_seconds_per_unit
        self.weight = weight
        self.samples = 0

    def record(self, units: float, seconds: float) -> None:
        if units <= 0:
            return
        observed = seconds / units
        if self.samples == 0:
            self.seconds_per_unit = observed
        else:
            self.seconds_per_unit += self.weight * (observed - self.seconds_per_unit)
        self.samples += 1

    def estimate(self, units: float) -> float:
        return units * self.seconds_per_unit
