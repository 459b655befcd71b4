"""Live previews on their way to the adapter: the image check, and the wire's encoding.

Both backends hand a job's previews to :class:`PreviewCheck`: the embedded renderer
(:mod:`bot.queue.render`) as the engine attaches them to a step, the Redis dispatcher
(:mod:`bot.queue.redis_backend`) as they arrive in a worker's progress notes (decoded by
:func:`decode_preview`). Each preview passes the image check (the classifier on its own
thread, the channel's policy as for results: :func:`bot.moderation.preview_shown`) before
the adapter hears of it; the step's text progress goes on at once without it. While one
preview of a job is being checked, later ones of that job are dropped, never queued.

On the wire (:mod:`bot.queue.protocol`) a preview is a small lossy WebP
(:func:`encode_preview`, at most :data:`~bot.queue.protocol.MAX_PREVIEW_BYTES`; one that
does not fit is not sent), at most :data:`~bot.queue.protocol.MAX_PREVIEW_SIDE` pixels a
side.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from PIL import Image

from bot.moderation import image_verdict, preview_shown
from bot.queue.protocol import MAX_PREVIEW_BYTES, MAX_PREVIEW_SIDE, is_webp

if TYPE_CHECKING:
    from bot.engine import Progress
    from bot.planning import Plan
    from bot.queue.events import JobEvents
    from bot.queue.output import ImageOutput
    from bot.storage.jobs import JobRecord

log = logging.getLogger(__name__)

_QUALITIES = (75, 40)  # a second, smaller try when the first is over the limit
_SMALLEST_SIDE = 64  # then halved, down to this
_CHECKS_KEPT = 64


class PreviewCheck:
    """Where every live preview passes the image check before the adapter sees it."""

    def __init__(
        self,
        output: ImageOutput,
        events: JobEvents,
        spawn: Callable[[Awaitable[None]], None],
    ) -> None:
        self.output = output
        self.events = events
        self.spawn = spawn
        self._checking: set[int] = set()  # jobs with a preview in the image check now
        self.seconds: list[float] = []  # recent preview checks, newest last

    def busy(self, job_id: int) -> bool:
        """A preview of the job is in the check now (the next one would be dropped)."""
        return job_id in self._checking

    def offer(self, job: JobRecord, plan: Plan, progress: Progress) -> None:
        """On the loop: a step's progress to the adapter now; its preview once checked
        (dropped while an earlier preview of the job is still in the check)."""
        preview = progress.preview
        if preview is None:
            self.spawn(self.events.on_progress(job, progress))
            return
        self.spawn(self.events.on_progress(job, replace(progress, preview=None)))
        if job.id in self._checking:
            return  # the previous preview is still in the check: this one is dropped
        self._checking.add(job.id)
        self.spawn(self._checked(job, plan, progress, preview))

    async def _checked(
        self, job: JobRecord, plan: Plan, progress: Progress, preview: Image.Image
    ) -> None:
        try:
            started = time.perf_counter()
            scores, error = await self.output.rate(preview)
            self.seconds = [*self.seconds[-(_CHECKS_KEPT - 1) :], time.perf_counter() - started]
            verdict = image_verdict(
                scores, plan.channel, plan.policy, error=error, minors=plan.decision.minors
            )
            if not preview_shown(verdict):
                log.info("job %s: a live preview was not shown (%s)", job.id, verdict.reason)
                return
            await self.events.on_progress(job, progress)
        finally:
            self._checking.discard(job.id)


def encode_preview(image: Image.Image) -> bytes | None:
    """A preview as the worker sends it: a lossy WebP of at most
    :data:`~bot.queue.protocol.MAX_PREVIEW_BYTES` (a coarser one, then a smaller one, when
    the first is over: a preview of noise), or None when nothing fits (the note then goes
    without it) or the image is larger than :data:`~bot.queue.protocol.MAX_PREVIEW_SIDE`."""
    if max(image.size) > MAX_PREVIEW_SIDE:
        return None
    image = image.convert("RGB")
    while True:
        for quality in _QUALITIES:
            buffer = io.BytesIO()
            image.save(buffer, format="WEBP", quality=quality, method=4)
            data = buffer.getvalue()
            if len(data) <= MAX_PREVIEW_BYTES:
                return data
        if max(image.size) <= _SMALLEST_SIDE:
            return None
        image = image.resize(
            (max(1, image.width // 2), max(1, image.height // 2)), Image.Resampling.BILINEAR
        )


def decode_preview(data: bytes) -> Image.Image | None:
    """A preview received from a worker as RGB pixels, or None (logged) when it is not a
    WebP of at most :data:`~bot.queue.protocol.MAX_PREVIEW_SIDE` pixels a side. The size is
    read from the header before any pixel is decoded."""
    if len(data) > MAX_PREVIEW_BYTES or not is_webp(data):
        log.warning("a live preview was dropped: not a small WebP")
        return None
    try:
        with Image.open(io.BytesIO(data), formats=["WEBP"]) as opened:
            if max(opened.size) > MAX_PREVIEW_SIDE:
                log.warning("a live preview was dropped: %s pixels is too large", opened.size)
                return None
            return opened.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        log.warning("a live preview was dropped: %s", exc)
        return None
