"""What a request costs, in images (``limits.cost``).

A request's cost is ``count * max(1, round(base * max(1, pixels / reference_pixels) **
size_weight * (steps / reference_steps) ** steps_weight * (hires_factor if hires else 1)))``;
with the defaults a 896x1152, 28-step image without hires costs 1 and with hires 2. The
shape of a job is :class:`bot.shape.JobShape`.
"""

from __future__ import annotations

import math

from bot.config import LimitsSettings
from bot.shape import JobShape


def image_cost(shape: JobShape, c: LimitsSettings.Cost) -> int:
    """Images a request counts as: ``count`` times the per-image weight, rounded half up and
    at least 1. The weight is ``base * max(1, pixels / reference_pixels) ** size_weight *
    (steps / reference_steps) ** steps_weight``, times ``hires_factor`` with the hires pass."""
    size: float = max(1.0, (shape.width * shape.height) / c.reference_pixels) ** c.size_weight
    steps: float = (max(1, shape.steps) / c.reference_steps) ** c.steps_weight
    per_image = c.base * size * steps * (c.hires_factor if shape.hires else 1.0)
    return max(1, shape.count) * max(1, math.floor(per_image + 0.5))
