"""Model loading, samplers, and the engine that renders jobs on one SDXL pipeline."""

from bot.engine.engine import (
    CancelToken,
    Engine,
    JobCancelled,
    Progress,
    RenderedImage,
    RenderResult,
)
from bot.engine.job import RenderJob
from bot.errors import DeviceError, EngineError, ModelLoadError

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
