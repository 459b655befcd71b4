"""What a scheduler shows of its renderer, shared by the in-process worker
(:mod:`bot.queue.worker`) and the Redis dispatcher (:mod:`bot.queue.redis_backend`).

Torch-free: the renderer is only a type here.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.queue.eta import DurationModel
    from bot.queue.output import Classifier
    from bot.queue.render import Renderer


class RendererState:
    """What a scheduler (the in-process worker or the Redis dispatcher) shows of its
    renderer: the ETA model, recent timings, the image classifier, the running jobs."""

    renderer: Renderer

    @property
    def durations(self) -> DurationModel:
        """The ETA model the renderer teaches."""
        return self.renderer.durations

    @property
    def last_job_seconds(self) -> OrderedDict[int, dict[str, float]]:
        """Where the time of recent jobs went (render, encoders, decode, deliver)."""
        return self.renderer.last_job_seconds

    @property
    def classifier(self) -> Classifier | None:
        """The image classifier of the output step (None: none loaded)."""
        return self.renderer.output.classifier

    @property
    def classifier_error(self) -> str | None:
        """Why there is no working classifier, or None."""
        return self.renderer.output.classifier_error

    @property
    def running_job_ids(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def running_job_id(self) -> int | None:
        """The running job (the first of a micro-batch); ``None`` when idle."""
        return next(iter(self.running_job_ids), None)
