"""Prometheus metrics: one registry per bot, instruments, and the gauges read when scraped.

Every metric lives on the :class:`Metrics` object's own ``CollectorRegistry`` (never
``prometheus_client``'s global one), so tests and several bots in one process do not
collide. Names follow Prometheus conventions: ``animagine_`` prefix, base units
(seconds, bytes) in the name, ``_total`` for counters; every label value comes from a fixed
vocabulary or a bounded set:

=====================================================  ==================================
``animagine_jobs_total{outcome}``                      finished, undelivered, failed,
                                                       timed_out, cancelled
``animagine_render_seconds{size,worker}``              histogram; size: a model-card
                                                       ``WxH`` or ``other``; worker:
                                                       ``local`` or a worker's name
``animagine_queue_wait_seconds{size,worker}``          histogram, accepted -> started
``animagine_queue_jobs_waiting``                       gauge
``animagine_queue_members_waiting``                    gauge
``animagine_images_withheld_total{reason}``            moderation withhold codes
``animagine_prompts_refused_total{reason}``            moderation refusal codes
``animagine_requests_refused_total{reason}``           limits, queue_full, restarting
``animagine_deliveries_pending``                       gauge (the outbox)
``animagine_delivery_retries_total``                   counter
``animagine_gpu_memory_used_bytes{worker}``            gauge (CUDA memory reserved)
``animagine_workers_up``                               gauge
``animagine_discord_rest_request_duration_seconds``    histogram {method, route}: the
                                                       route template, never an id
``animagine_discord_rate_limit_hits_total{scope}``     route, user, shared, global
``animagine_discord_gateway_latency_seconds{shard}``   gauge
``animagine_event_loop_stall_seconds``                 gauge: the longest lateness of a
                                                       0.25 s tick in the last minute
``animagine_build_info{version}``                      always 1
=====================================================  ==================================

Worker names come from the fleet: the first :data:`MAX_WORKER_LABELS` distinct names get
their own label value, later ones share ``other`` (a worker named after its host and pid
is new at each restart; a bot that runs for months must not grow without bound).

The gauges that can be read on demand (queue, deliveries, workers, GPU memory, gateway
latency) are read when Prometheus scrapes: the server awaits :meth:`Metrics.sample` (a
:class:`Sampler` the adapter provides, which may read the database), and a collector
writes the snapshot out. Nothing is updated per change on the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from bot import __version__
from bot.observability.telemetry import (
    CARD_SIZES,
    IMAGE_WITHHOLDS,
    LOCAL_WORKER,
    OTHER,
    OUTCOMES,
    PROMPT_REFUSALS,
    REQUEST_REFUSALS,
)

log = logging.getLogger(__name__)

__all__ = ["CONTENT_TYPE_LATEST", "LoopWatch", "Metrics", "Sampler", "Snapshot"]

RENDER_BUCKETS: Final = (
    0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0,
)  # fmt: skip
WAIT_BUCKETS: Final = (
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
)  # fmt: skip
REST_BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RATE_LIMIT_SCOPES: Final = ("route", "user", "shared", "global")
MAX_WORKER_LABELS: Final = 64
SAMPLE_TIMEOUT_S: Final = 5.0


@dataclass
class Snapshot:
    """The on-demand gauges as read for one scrape; ``None``: not known (no sample)."""

    jobs_waiting: int | None = None
    members_waiting: int | None = None
    deliveries_pending: int | None = None
    workers_up: int | None = None
    gpu_memory_used_bytes: dict[str, int] = field(default_factory=dict)  # worker -> bytes
    gateway_latency_seconds: dict[str, float] = field(default_factory=dict)  # shard -> s


class Sampler(Protocol):
    """Reads the on-demand gauges (the adapter's: it knows the bot and its service)."""

    async def sample(self) -> Snapshot: ...


class LoopWatch:
    """How late a ``tick``-second timer wakes on the event loop: the loop's stalls.

    :attr:`recent_stall` is the longest lateness seen in the last ``window`` seconds.
    """

    def __init__(self, tick: float = 0.25, window: float = 60.0) -> None:
        self.tick = tick
        self.window = window
        self._late: deque[tuple[float, float]] = deque()  # (when, how late), newest last
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="loop-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.tick)
            now = time.monotonic()
            self.record(now, max(0.0, now - before - self.tick))

    def record(self, now: float, late: float) -> None:
        samples = self._late
        # Keep only what can still be the window's maximum: later, and at least as late.
        while samples and samples[-1][1] <= late:
            samples.pop()
        samples.append((now, late))
        while samples and samples[0][0] < now - self.window:
            samples.popleft()

    @property
    def recent_stall(self) -> float:
        """Seconds: the longest lateness in the last ``window`` (0 before any tick)."""
        now = time.monotonic()
        for when, late in self._late:
            if when >= now - self.window:
                return late
        return 0.0


class _OnDemand(Collector):
    """Writes the last :class:`Snapshot` out (the server samples before each scrape)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return list(self._families(Snapshot(), 0.0))

    def collect(self) -> Iterable[Metric]:
        watch = self.metrics.loop_watch
        stall = watch.recent_stall if watch is not None else None
        return list(self._families(self.metrics.snapshot, stall))

    @staticmethod
    def _families(snap: Snapshot, stall: float | None) -> Iterator[Metric]:
        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc)
            if value is not None:
                family.add_metric([], value)
            return family

        yield gauge("animagine_queue_jobs_waiting", "Jobs waiting in the queue.", snap.jobs_waiting)
        yield gauge(
            "animagine_queue_members_waiting",
            "Members with at least one job waiting in the queue.",
            snap.members_waiting,
        )
        yield gauge(
            "animagine_deliveries_pending",
            "Finished jobs whose result is not delivered yet (the outbox).",
            snap.deliveries_pending,
        )
        yield gauge(
            "animagine_workers_up",
            "Renderers taking jobs: the local engine once warm, or live remote workers.",
            snap.workers_up,
        )
        gpu = GaugeMetricFamily(
            "animagine_gpu_memory_used_bytes",
            "GPU memory held by the renderer (CUDA memory reserved by PyTorch).",
            labels=["worker"],
        )
        for worker, used in sorted(snap.gpu_memory_used_bytes.items()):
            gpu.add_metric([worker], used)
        yield gpu
        gateway = GaugeMetricFamily(
            "animagine_discord_gateway_latency_seconds",
            "Discord gateway heartbeat latency, per shard.",
            labels=["shard"],
        )
        for shard, seconds in sorted(snap.gateway_latency_seconds.items()):
            if math.isfinite(seconds):
                gateway.add_metric([shard], seconds)
        yield gateway
        yield gauge(
            "animagine_event_loop_stall_seconds",
            "The longest lateness of a 0.25 s timer on the bot's event loop in the last minute.",
            stall,
        )


class Metrics:
    """The bot's instruments on their own registry (a :class:`~bot.observability.
    telemetry.MetricsSink`, plus Discord's REST and rate limits)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Counter(
            "animagine_jobs", "Jobs by how their life ended.", ["outcome"], registry=r
        )
        self.render_seconds = Histogram(
            "animagine_render_seconds",
            "Seconds a job's images took to render (its share of a micro-batch).",
            ["size", "worker"],
            buckets=RENDER_BUCKETS,
            registry=r,
        )
        self.queue_wait_seconds = Histogram(
            "animagine_queue_wait_seconds",
            "Seconds from a job's acceptance to the start of its render.",
            ["size", "worker"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.images_withheld = Counter(
            "animagine_images_withheld",
            "Images the moderation policy held back, by reason.",
            ["reason"],
            registry=r,
        )
        self.prompts_refused = Counter(
            "animagine_prompts_refused",
            "Prompts the channel's moderation policy refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.requests_refused = Counter(
            "animagine_requests_refused",
            "Requests refused by a limit, a full queue or a shutdown, by reason.",
            ["reason"],
            registry=r,
        )
        self.delivery_retries = Counter(
            "animagine_delivery_retries",
            "Delivery attempts after a first one that did not go through.",
            registry=r,
        )
        self.rest_seconds = Histogram(
            "animagine_discord_rest_request_duration_seconds",
            "Seconds Discord's REST API took to answer, by method and route template.",
            ["method", "route"],
            buckets=REST_BUCKETS,
            registry=r,
        )
        self.rate_limit_hits = Counter(
            "animagine_discord_rate_limit_hits",
            "429 answers from Discord's REST API, by scope.",
            ["scope"],
            registry=r,
        )
        build = Gauge(
            "animagine_build_info", "The bot's version (always 1).", ["version"], registry=r
        )
        build.labels(__version__).set(1)
        # Every known label value exists from the start (at 0): rates work from the first
        # scrape, and a dashboard shows a zero rather than nothing.
        for outcome in OUTCOMES:
            self.jobs.labels(outcome)
        for reason in (*IMAGE_WITHHOLDS, OTHER):
            self.images_withheld.labels(reason)
        for reason in (*PROMPT_REFUSALS, OTHER):
            self.prompts_refused.labels(reason)
        for reason in (*REQUEST_REFUSALS, OTHER):
            self.requests_refused.labels(reason)
        for scope in RATE_LIMIT_SCOPES:
            self.rate_limit_hits.labels(scope)
        self.snapshot = Snapshot()
        self.sampler: Sampler | None = None
        self.loop_watch: LoopWatch | None = None
        self._workers: set[str] = {LOCAL_WORKER}
        self._sizes = {f"{w}x{h}" for w, h in CARD_SIZES} | {OTHER}
        r.register(_OnDemand(self))

    # ------------------------------------------------------------------ labels
    def worker_label(self, name: str) -> str:
        """``name`` for the first :data:`MAX_WORKER_LABELS` workers seen, then ``other``."""
        if name in self._workers:
            return name
        if len(self._workers) >= MAX_WORKER_LABELS or not name:
            return OTHER
        self._workers.add(name)
        return name

    def _size(self, size: str) -> str:
        return size if size in self._sizes else OTHER

    # ------------------------------------------------------------------ MetricsSink
    def job_ended(self, outcome: str) -> None:
        self.jobs.labels(outcome if outcome in OUTCOMES else OTHER).inc()

    def job_started(self, size: str, worker: str, waited: float) -> None:
        self.queue_wait_seconds.labels(self._size(size), self.worker_label(worker)).observe(waited)

    def job_rendered(self, size: str, worker: str, seconds: float) -> None:
        self.render_seconds.labels(self._size(size), self.worker_label(worker)).observe(seconds)

    def image_withheld(self, reason: str) -> None:
        self.images_withheld.labels(reason if reason in IMAGE_WITHHOLDS else OTHER).inc()

    def prompt_refused(self, reason: str) -> None:
        self.prompts_refused.labels(reason if reason in PROMPT_REFUSALS else OTHER).inc()

    def request_refused(self, reason: str) -> None:
        self.requests_refused.labels(reason if reason in REQUEST_REFUSALS else OTHER).inc()

    def delivery_retried(self) -> None:
        self.delivery_retries.inc()

    # ------------------------------------------------------------------ Discord
    def rest_answered(self, method: str, route: str, seconds: float) -> None:
        """One REST answer; ``route`` is a template (``/channels/{channel_id}/messages``)."""
        self.rest_seconds.labels(method, route).observe(seconds)

    def rate_limited(self, scope: str) -> None:
        self.rate_limit_hits.labels(scope if scope in RATE_LIMIT_SCOPES else "route").inc()

    # ------------------------------------------------------------------ exposition
    async def sample(self) -> None:
        """Read the on-demand gauges (bounded by :data:`SAMPLE_TIMEOUT_S`); on failure the
        gauges are left out of this scrape rather than showing stale values."""
        if self.sampler is None:
            return
        try:
            self.snapshot = await asyncio.wait_for(self.sampler.sample(), SAMPLE_TIMEOUT_S)
        except Exception as exc:  # a scrape never fails for a gauge
            log.warning("metrics: could not read the gauges (%s)", type(exc).__name__)
            self.snapshot = Snapshot()

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
