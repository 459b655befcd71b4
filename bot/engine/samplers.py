"""Sampler names users know, and the diffusers scheduler each one means.

Schedulers keep per-run state (timesteps, step index, solver history) and are not
thread-safe, so every job gets a fresh one built from the pipeline's scheduler config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
)

from bot.request import SAMPLERS, find_sampler

_SCHEDULERS: dict[str, tuple[Any, dict[str, Any]]] = {
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "Euler": (EulerDiscreteScheduler, {}),
    "DPM++ 2M Karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    "DPM++ SDE Karras": (DPMSolverSinglestepScheduler, {"use_karras_sigmas": True}),
    "DPM++ 2M SDE Karras": (
        DPMSolverMultistepScheduler,
        {"use_karras_sigmas": True, "algorithm_type": "sde-dpmsolver++"},
    ),
    "DDIM": (DDIMScheduler, {}),
}
assert tuple(_SCHEDULERS) == SAMPLERS, "every sampler name needs a scheduler"


def make_scheduler(name: str, base_config: Mapping[str, Any]) -> Any:
    """A new scheduler for sampler ``name``, configured from the model's own scheduler."""
    cls, overrides = _SCHEDULERS[find_sampler(name)]
    return cls.from_config(dict(base_config), **overrides)
