"""Model loading, samplers, and the engine that renders jobs on one SDXL pipeline.

The names of :mod:`bot.engine.engine` (torch) load on first use, so importing the leaf
:mod:`bot.engine.job` (what a job renders, stored with every job) stays torch-free.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bot.engine.job import RenderJob
from bot.errors import DeviceError, EngineError, ModelLoadError

if TYPE_CHECKING:
    from bot.engine.engine import (
        CancelToken,
        Engine,
        JobCancelled,
        Progress,
        RenderedImage,
        RenderResult,
    )

_FROM_ENGINE = frozenset(
    {"CancelToken", "Engine", "JobCancelled", "Progress", "RenderedImage", "RenderResult"}
)

__all__ = [
    "CancelToken",
    "DeviceError",
    "Engine",
    "EngineError",
    "JobCancelled",
    "ModelLoadError",
    "Progress",
    "RenderJob",
    "RenderResult",
    "RenderedImage",
]


def __getattr__(name: str) -> Any:
    if name in _FROM_ENGINE:
        return getattr(importlib.import_module("bot.engine.engine"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
