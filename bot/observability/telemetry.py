"""The core's observer of job lifecycle steps: one INFO line each, and metrics when on.

The service, the renderer, the Redis dispatcher and the outbox call a :class:`Telemetry` at
each step of a job's life. It logs one INFO line per step on the ``bot.jobs`` logger with
``extra={"event": "job.<step>", "job_id", "guild_id", "channel_id"}`` (the JSON log format
writes them as fields, see :mod:`bot.logs`), and, when given a :class:`MetricsSink`
(:class:`bot.observability.metrics.Metrics`), counts the step there. Without one (metrics
off) a step costs a level check and, at INFO, one log record.

Nothing here imports Prometheus. Every label value it hands the sink comes from a fixed
vocabulary (:data:`OUTCOMES`, the moderation codes, :data:`REQUEST_REFUSALS`) or from
:func:`size_label`; never a user id, a prompt or free text. Log lines carry ids and those
codes, never a prompt (a refusal's matched words are the prompt's words: not logged here).

Steps and their events:

========================  ==========================================================
``job.accepted``          queued (``position``)
``job.refused``           a prompt the channel's policy refused (``code``), or a request
                          a limit or a full queue refused (no job was made)
``job.started``           its render began (``worker``; the queue wait)
``job.finished``          its render is done (render seconds, ``worker``)
``job.failed``            failed (``kind``: timed_out, not_renderable, engine, ...)
``job.cancelled``         cancelled while queued or running
``job.images_withheld``   the moderation policy held back images (their codes)
``job.delivered``         the member has the result
``job.undelivered``       the delivery was given up (the member is told)
========================  ==========================================================

A job's outcome (``animagine_jobs_total{outcome}``) is counted once, when its life ends:
``finished`` once its result is delivered, ``undelivered`` when its delivery is given up,
else ``failed``, ``timed_out`` or ``cancelled``. A finished job whose delivery is still
being retried is in ``animagine_deliveries_pending`` meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from bot.limits.buckets import LimitKind
from bot.moderation.image_check import WITHHOLD_CODES
from bot.moderation.prompt_check import REFUSAL_CODES
from bot.request import ASPECTS
from bot.storage.clock import utc_now

if TYPE_CHECKING:
    from bot.queue.events import OutputImage
    from bot.storage.jobs import JobRecord

log = logging.getLogger("bot.jobs")

OUTCOMES: Final = ("finished", "undelivered", "failed", "timed_out", "cancelled")
"""``animagine_jobs_total{outcome}``: how a job's life ended (each job once)."""

FAILURE_KINDS: Final = (
    "timed_out",  # longer than queue.job_timeout_s
    "not_renderable",  # refused by the policy of now, or a wildcard gone, when it was due
    "engine",  # the engine refused it (out of memory, a broken image)
    "internal",  # a bug: an unexpected exception
    "output",  # rating, encoding or storing its images failed
    "worker",  # a remote worker reported it failed, or sent something broken
)
"""What :meth:`Telemetry.failed` is told (logs; ``timed_out`` is also an outcome)."""

PROMPT_REFUSALS: Final = REFUSAL_CODES
"""``animagine_prompts_refused_total{reason}``: why the channel's policy refused a prompt."""

IMAGE_WITHHOLDS: Final = WITHHOLD_CODES
"""``animagine_images_withheld_total{reason}``: why the policy held an image back."""

REQUEST_REFUSALS: Final = (*(kind.value for kind in LimitKind), "queue_full", "restarting")
"""``animagine_requests_refused_total{reason}``: a limit, a full queue, or shutting down."""

CARD_SIZES: Final = frozenset((a.width, a.height) for a in ASPECTS)
OTHER: Final = "other"

LOCAL_WORKER: Final = "local"
"""The ``worker`` label of the engine in this process (the embedded backend)."""


def size_label(width: object, height: object) -> str:
    """``"WxH"`` for one of the model card's resolutions, else ``"other"`` (bounded)."""
    if isinstance(width, int) and isinstance(height, int) and (width, height) in CARD_SIZES:
        return f"{width}x{height}"
    return OTHER


def job_size(job: JobRecord) -> str:
    """:func:`size_label` of the size the member asked for (read from the row, no parsing)."""
    request = job.request_data.get("request")
    if not isinstance(request, dict):
        return OTHER
    return size_label(request.get("width"), request.get("height"))


def _code(value: str, vocabulary: Iterable[str]) -> str:
    return value if value in vocabulary else OTHER


class MetricsSink(Protocol):
    """Where :class:`Telemetry` counts (:class:`bot.observability.metrics.Metrics`)."""

    def job_ended(self, outcome: str) -> None: ...

    def job_started(self, size: str, worker: str, waited: float) -> None: ...

    def job_rendered(self, size: str, worker: str, seconds: float) -> None: ...

    def image_withheld(self, reason: str) -> None: ...

    def prompt_refused(self, reason: str) -> None: ...

    def request_refused(self, reason: str) -> None: ...

    def delivery_retried(self) -> None: ...


class Telemetry:
    """Logs each lifecycle step of a job, and counts it in ``metrics`` when given one."""

    def __init__(self, metrics: MetricsSink | None = None) -> None:
        self.metrics = metrics

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _log(event: str, job: JobRecord | None, message: str, *args: Any, **ids: Any) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        extra: dict[str, Any] = {"event": event}
        if job is not None:
            extra.update(job_id=job.id, guild_id=job.guild_id, channel_id=job.channel_id)
        extra.update(ids)
        log.info(message, *args, extra=extra)

    # ----------------------------------------------------------------- steps
    def accepted(self, job: JobRecord, position: int) -> None:
        self._log("job.accepted", job, "job %s accepted (position %d)", job.id, position)

    def prompt_refused(self, code: str, *, guild_id: int | None, channel_id: int | None) -> None:
        """The channel's policy refused a prompt (``code``: :data:`PROMPT_REFUSALS`)."""
        reason = _code(code, PROMPT_REFUSALS)
        if self.metrics is not None:
            self.metrics.prompt_refused(reason)
        self._log(
            "job.refused",
            None,
            "prompt refused (%s)",
            reason,
            guild_id=guild_id,
            channel_id=channel_id,
        )

    def request_refused(self, reason: str, *, guild_id: int | None, channel_id: int | None) -> None:
        """A limit, a full queue or a shutdown refused a request (:data:`REQUEST_REFUSALS`)."""
        code = _code(reason, REQUEST_REFUSALS)
        if self.metrics is not None:
            self.metrics.request_refused(code)
        self._log(
            "job.refused",
            None,
            "request refused (%s)",
            code,
            guild_id=guild_id,
            channel_id=channel_id,
        )

    def started(self, job: JobRecord, worker: str = LOCAL_WORKER) -> None:
        """Its render begins now on ``worker`` (a remote worker's name, or ``local``): the
        queue wait is from its acceptance until now (with Redis, the time a job handed out
        waited there for a worker included)."""
        waited = _seconds_between(job.queued_at, utc_now())
        if self.metrics is not None:
            self.metrics.job_started(job_size(job), worker, waited)
        self._log(
            "job.started",
            job,
            "job %s started on %s after %.1f s in the queue",
            job.id,
            worker,
            waited,
        )

    def rendered(self, job: JobRecord, seconds: float, worker: str = LOCAL_WORKER) -> None:
        """Its images are rendered (its share of the engine call's time)."""
        if self.metrics is not None:
            self.metrics.job_rendered(job_size(job), worker, seconds)
        self._log(
            "job.finished",
            job,
            "job %s finished: rendered in %.2f s on %s",
            job.id,
            seconds,
            worker,
        )

    def failed(self, job: JobRecord, reason: str, kind: str = "engine") -> None:
        """It failed; ``kind`` from :data:`FAILURE_KINDS` (``reason`` is logged unless the
        prompt's own words may be in it: ``not_renderable``)."""
        kind = _code(kind, FAILURE_KINDS)
        if self.metrics is not None:
            self.metrics.job_ended("timed_out" if kind == "timed_out" else "failed")
        if kind == "not_renderable":
            self._log("job.failed", job, "job %s failed (%s)", job.id, kind)
        else:
            self._log("job.failed", job, "job %s failed (%s): %s", job.id, kind, reason)

    def cancelled(self, job: JobRecord) -> None:
        if self.metrics is not None:
            self.metrics.job_ended("cancelled")
        self._log("job.cancelled", job, "job %s cancelled", job.id)

    def withheld(self, job: JobRecord, images: Iterable[OutputImage]) -> None:
        """Count the images the moderation policy held back (once per job, when made)."""
        codes = [_code(i.verdict.code, IMAGE_WITHHOLDS) for i in images if not i.verdict.posted]
        if not codes:
            return
        if self.metrics is not None:
            for code in codes:
                self.metrics.image_withheld(code)
        self._log(
            "job.images_withheld",
            job,
            "job %s: %d image(s) withheld (%s)",
            job.id,
            len(codes),
            ", ".join(sorted(set(codes))),
        )

    def delivered(self, job: JobRecord) -> None:
        if self.metrics is not None:
            self.metrics.job_ended("finished")
        self._log(
            "job.delivered",
            job,
            "job %s delivered (attempt %d)",
            job.id,
            job.delivery_attempts + 1,
        )

    def undelivered(self, job: JobRecord, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.job_ended("undelivered")
        self._log("job.undelivered", job, "job %s undelivered: %s", job.id, reason)

    def delivery_retried(self, job: JobRecord) -> None:
        """Another delivery attempt starts (the outbox logs why the last one failed)."""
        if self.metrics is not None:
            self.metrics.delivery_retried()


def _seconds_between(start: datetime, end: datetime) -> float:
    try:
        return max(0.0, (end - start).total_seconds())
    except TypeError:  # one naive, one aware: never from the stores
        return 0.0
