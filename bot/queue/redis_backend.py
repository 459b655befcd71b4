"""The Redis transport, and the bot's side of it: the dispatcher.

With ``queue.backend = "redis"`` the bot keeps Discord, SQLite, the limits and the fair
queue (:mod:`bot.queue.fair`); :class:`RedisDispatcher` takes the place of the embedded
scheduling loop (:mod:`bot.queue.worker`). It hands out only as many jobs as the live
workers can start now plus ``queue.redis_prefetch``, so the fair order is what members get
whatever the number of workers; it reads results and runs the same output step (rating,
PNG, image rows) and events as the embedded renderer. SQLite stays the record: a result for
a job that is no longer running there is dropped by job id, and a running job of which Redis
knows nothing (restarted, emptied) is dispatched again. Streams, keys and messages are
described in :mod:`bot.queue.protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from PIL import Image
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from bot.engine.job import RenderJob
from bot.images import Infotext
from bot.queue import protocol
from bot.queue.state import RendererState
from bot.storage.jobs import JobNotFoundError, JobRecord, JobStateError
from bot.storage.models import JobStatus

if TYPE_CHECKING:
    from bot.planning import Plan
    from bot.queue.render import Renderer

log = logging.getLogger(__name__)

WORKERS_GROUP = "workers"
BOT_GROUP = "bot"
PROGRESS_MAXLEN = 10_000
CANCEL_TTL_S = 24 * 3600


class RedisUnavailable(Exception):
    """Redis cannot be reached or refused us; the message is one line, password hidden."""


def safe_url(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


async def connect(url: str, *, connect_timeout: float = 5.0) -> Redis:
    """A client for ``url`` (redis://, rediss://, unix://), checked with a PING."""
    try:
        client: Redis = Redis.from_url(
            url, socket_connect_timeout=connect_timeout, health_check_interval=10
        )
    except ValueError as exc:
        raise RedisUnavailable(f"queue.redis_url {safe_url(url)!r}: {exc}") from None
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RedisUnavailable(f"cannot reach Redis at {safe_url(url)}: {reason}") from None
    return client


@dataclass(frozen=True)
class Keys:
    """The names of every stream and key, under one prefix."""

    prefix: str

    @property
    def jobs(self) -> str:
        return f"{self.prefix}:jobs"

    @property
    def results(self) -> str:
        return f"{self.prefix}:results"

    @property
    def progress(self) -> str:
        return f"{self.prefix}:progress"

    @property
    def inflight(self) -> str:
        return f"{self.prefix}:inflight"

    @property
    def protocol(self) -> str:
        return f"{self.prefix}:protocol"

    def cancel(self, job_id: int) -> str:
        return f"{self.prefix}:cancel:{job_id}"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    @property
    def worker_pattern(self) -> str:
        return f"{self.prefix}:worker:*"


async def ensure_group(client: Redis, stream: str, group: str) -> None:
    """Create ``group`` on ``stream`` (and the stream) unless it exists."""
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def list_workers(client: Redis, keys: Keys) -> list[protocol.Heartbeat]:
    """Every worker that sent a heartbeat lately, by name (unreadable ones skipped)."""
    names = [key async for key in client.scan_iter(match=keys.worker_pattern, count=500)]
    if not names:
        return []
    beats: list[protocol.Heartbeat] = []
    for raw in await client.mget(names):
        if raw is None:
            continue
        try:
            beats.append(protocol.read_heartbeat(raw))
        except protocol.ProtocolError as exc:
            log.warning("unreadable worker heartbeat: %s", exc)
    return sorted(beats, key=lambda b: b.name)


def stream_entries(replies: Any) -> list[tuple[Any, dict[Any, Any]]]:
    """The entries of an XREAD/XREADGROUP reply (redis-py's types are loose)."""
    return [(entry_id, fields) for _stream, found in replies or [] for entry_id, fields in found]


def _field(fields: dict[Any, Any]) -> bytes | str:
    raw = fields.get(b"m", fields.get("m"))
    if not isinstance(raw, bytes | str):
        raise protocol.ProtocolError("a stream entry without its message")
    return raw


class RedisDispatcher(RendererState):
    """The bot's scheduling loop for remote workers (same face as :class:`Worker`)."""

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer
        self.settings = renderer.settings
        self.db = renderer.db
        self.jobs = renderer.jobs
        self.queue = renderer.queue
        self.events = renderer.events
        self.output = renderer.output
        self.keys = Keys(self.settings.queue.redis_prefix)
        self.redis: Redis | None = None
        self.ready = asyncio.Event()
        self.ready.set()  # workers warm up on their own machines
        self.workers: list[protocol.Heartbeat] = []
        self.inflight: dict[int, str] = {}  # job id -> its job message (sent to Redis)
        self.plans: dict[int, Plan] = {}
        self.started: dict[int, float] = {}  # job id -> when a worker started it
        self.handled = 0  # results delivered (finished, failed, cancelled by a worker)
        self.refused_warned: set[str] = set()
        self._lock = asyncio.Lock()
        self._taking = False  # a job taken from the queue, not yet sent
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._progress_seen: OrderedDict[int, None] = OrderedDict()

    # ----------------------------------------------------------------- state

    @property
    def running_job_ids(self) -> tuple[int, ...]:
        return tuple(j for j in self.inflight if j in self.started)

    def remaining_seconds(self) -> float:
        """Until the first live worker is free for the next job (0 when one is idle)."""
        return min(self.slots())

    @property
    def parallel(self) -> int:
        """How many jobs render at once: the live, compatible workers (at least 1, so an
        ETA while no worker is up reads as if one were)."""
        return max(1, len(self.live_workers))

    def _estimate(self, job_id: int) -> float:
        plan = self.plans.get(job_id)
        return 0.0 if plan is None else self.durations.estimate(plan.job.shape.work_units)

    def _schedule(self) -> tuple[dict[int, float], list[float]]:
        """The jobs handed to Redis shared out over :attr:`parallel` workers, first come
        first served: each job -> seconds until it is done, and each worker -> seconds
        until it is free. A running job counts its estimate less the time it has run."""
        now = time.monotonic()
        slots = [0.0] * self.parallel
        done: dict[int, float] = {}
        running = [j for j, _ in sorted(self.started.items(), key=lambda i: i[1])]
        for job_id in [*running, *self.inflight]:
            if job_id not in self.inflight or job_id in done:
                continue
            left = self._estimate(job_id)
            if job_id in self.started:
                left = max(0.0, left - (now - self.started[job_id]))
            index = slots.index(min(slots))
            slots[index] += left
            done[job_id] = slots[index]
        return done, slots

    def in_flight_seconds(self) -> dict[int, float]:
        """Each job handed to Redis -> seconds until it is done."""
        return self._schedule()[0]

    def slots(self) -> list[float]:
        """Seconds until each live worker is free (one entry per worker, at least one)."""
        return self._schedule()[1]

    @property
    def live_workers(self) -> list[protocol.Heartbeat]:
        """Compatible workers taking jobs (not draining), from the latest heartbeats."""
        return [w for w in self.workers if w.compatible and w.state in ("idle", "rendering")]

    @property
    def capacity(self) -> int:
        """Jobs Redis may hold at once: one per live worker, plus the prefetch."""
        return len(self.live_workers) + self.settings.queue.redis_prefetch

    # ----------------------------------------------------------------- lifecycle
    async def connect(self) -> None:
        """Reach Redis (raises :class:`RedisUnavailable` in one line) and set up streams."""
        if self.redis is None:
            self.redis = await connect(self.settings.queue.redis_url)
        await self._setup()

    async def _setup(self) -> None:
        assert self.redis is not None
        await ensure_group(self.redis, self.keys.jobs, WORKERS_GROUP)
        await ensure_group(self.redis, self.keys.results, BOT_GROUP)
        await self.redis.set(self.keys.protocol, protocol.PROTOCOL_VERSION)

    async def adopt(self, running: list[JobRecord]) -> None:
        """Jobs left running by the previous process: Redis may still hold them (their
        results are delivered when they come); those it does not hold are sent again."""
        for job in running:
            try:
                plan = await self.renderer.plan(job)
            except Exception as exc:
                await self._fail(job, f"the request cannot be rendered: {exc}")
                continue
            self.plans[job.id] = plan
            self.inflight[job.id] = protocol.job_message(job.id, plan.job)
        await self._reconcile()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._loop(self._dispatch_once), name="redis-dispatch"),
            asyncio.create_task(self._loop(self._results_once), name="redis-results"),
            asyncio.create_task(self._progress_loop(), name="redis-progress"),
            asyncio.create_task(self._loop(self._watch_once), name="redis-watch"),
        ]

    async def warm_up(self) -> None:
        return None

    async def stop(self, grace: float = 30.0) -> None:
        """Stop dispatching and reading. Jobs in flight stay in Redis and SQLite (running):
        the next start delivers their results or sends them again."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.renderer.drain()
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None

    async def drain(self) -> None:
        await self.renderer.drain()

    async def run_burst(self, limit_s: float = 120.0) -> int:
        """Wait until nothing waits or runs; returns how many results were handled."""
        before = self.handled
        if not self._tasks:
            self.start()
        deadline = time.monotonic() + limit_s
        while len(self.queue) or self.inflight or self._taking:
            if time.monotonic() > deadline:
                raise TimeoutError("jobs still waiting or running")
            await asyncio.sleep(0.05)
        await self.drain()
        return self.handled - before

    async def _loop(self, once: Any) -> None:
        """Run ``once`` forever; Redis going away is waited out, never fatal."""
        while True:
            try:
                await once()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("Redis: %s; retrying", exc)
                await asyncio.sleep(0.5)
            except Exception:
                log.exception("the Redis dispatcher failed; retrying")
                await asyncio.sleep(0.5)

    # ----------------------------------------------------------------- dispatch
    async def _dispatch_once(self) -> None:
        while len(self.inflight) >= self.capacity:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.5)
        entry = await self.queue.get()
        self._taking = True
        try:
            await self._dispatch(entry.job_id)
        finally:
            self._taking = False

    async def _dispatch(self, job_id: int) -> None:
        try:
            job = await self.db.run(self.jobs.mark_started, job_id)
        except JobStateError:
            return  # cancelled (or handled) while it waited
        try:
            plan = await self.renderer.plan(job)
        except Exception as exc:  # refused by the policy now, or a wildcard gone
            await self._fail(job, f"the request cannot be rendered: {exc}")
            return
        self.plans[job.id] = plan
        message = protocol.job_message(job.id, plan.job)
        self.inflight[job.id] = message
        await self._send(job.id, message)

    async def _send(self, job_id: int, message: str) -> None:
        assert self.redis is not None
        async with self._lock:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(self.keys.inflight, str(job_id), message)
            pipe.xadd(self.keys.jobs, {"m": message})
            await pipe.execute()

    async def _watch_once(self) -> None:
        """Heartbeats read, streams and groups checked, lost jobs sent again."""
        assert self.redis is not None
        self.workers = await list_workers(self.redis, self.keys)
        for beat in self.workers:
            if not beat.compatible and beat.name not in self.refused_warned:
                self.refused_warned.add(beat.name)
                log.error(
                    "worker %s on %s speaks protocol version %s, this bot %s: it is not sent "
                    "jobs; run the same release on both",
                    beat.name,
                    beat.host,
                    beat.version,
                    protocol.PROTOCOL_VERSION,
                )
        await self._reconcile()
        self._wake.set()
        await asyncio.sleep(self.settings.queue.redis_heartbeat_s / 2)

    async def _reconcile(self) -> None:
        """Jobs running in SQLite that Redis no longer holds (restarted, emptied) go again."""
        assert self.redis is not None
        async with self._lock:
            if not await self.redis.exists(self.keys.protocol):
                await self._setup()
            held = {int(k) for k in await self.redis.hkeys(self.keys.inflight)}
            lost = [j for j in self.inflight if j not in held]
            if lost:
                await self._setup()
                log.warning("Redis holds nothing for job(s) %s: sent again", lost)
                pipe = self.redis.pipeline(transaction=True)
                for job_id in lost:
                    self.started.pop(job_id, None)
                    pipe.hset(self.keys.inflight, str(job_id), self.inflight[job_id])
                    pipe.xadd(self.keys.jobs, {"m": self.inflight[job_id]})
                await pipe.execute()

    # ----------------------------------------------------------------- control
    def cancel(self, job_id: int) -> bool:
        """Cancel a job in flight: ended now for the member; the worker stops at its next
        step (or never starts it). ``False`` if it is not in flight."""
        if job_id not in self.inflight:
            return False
        self.inflight.pop(job_id)
        self.started.pop(job_id, None)
        self.renderer.spawn(self._cancel(job_id))
        return True

    async def _cancel(self, job_id: int) -> None:
        if self.redis is not None:
            await self.redis.set(self.keys.cancel(job_id), "1", ex=CANCEL_TTL_S)
            await self.redis.hdel(self.keys.inflight, str(job_id))
        self._wake.set()
        try:
            record = await self.db.run(self.jobs.mark_cancelled, job_id, "cancelled while running")
        except JobStateError:
            return  # its result came first
        await self.renderer.notify(self.events.on_cancelled(record))

    # ----------------------------------------------------------------- results
    async def _results_once(self) -> None:
        assert self.redis is not None
        # First what was read but not acknowledged before (a restart), then new results.
        for start in ("0", ">"):
            replies = await self.redis.xreadgroup(
                BOT_GROUP,
                "bot",
                {self.keys.results: start},
                count=16,
                block=None if start == "0" else 1000,
            )
            for entry_id, fields in stream_entries(replies):
                await self._handle_result(entry_id, fields)

    async def _handle_result(self, entry_id: Any, fields: dict[Any, Any]) -> None:
        assert self.redis is not None
        try:
            result = protocol.read_result(_field(fields))
        except protocol.ProtocolError as exc:
            log.error("a result was dropped: %s", exc)  # noqa: TRY400
        else:
            await self._deliver(result)
            self.inflight.pop(result.job_id, None)
            self.started.pop(result.job_id, None)
            self.plans.pop(result.job_id, None)
            await self.redis.hdel(self.keys.inflight, str(result.job_id))
            self._wake.set()
        await self.redis.xack(self.keys.results, BOT_GROUP, entry_id)
        await self.redis.xdel(self.keys.results, entry_id)

    async def _deliver(self, result: protocol.Result) -> None:
        """Exactly once: only a job still running in SQLite is delivered."""
        try:
            job = await self.db.run(self.jobs.get, result.job_id)
        except JobNotFoundError:
            return
        if job.status is not JobStatus.RUNNING:
            log.info("a result for job %s (now %s) was dropped", job.id, job.status.value)
            return
        self.handled += 1
        if result.status == "failed":
            await self._fail(job, result.reason or "the worker failed")
            return
        if result.status == "cancelled":
            record = await self.db.run(self.jobs.mark_cancelled, job.id, "cancelled while running")
            await self.renderer.notify(self.events.on_cancelled(record))
            return
        plan = self.plans.get(job.id)
        if plan is None:
            try:
                plan = await self.renderer.plan(job)
            except Exception as exc:
                await self._fail(job, f"the request cannot be rendered: {exc}")
                return
        try:
            rendered = await asyncio.to_thread(_images, result, plan.job)
        except ValueError as exc:
            await self._fail(job, f"the worker sent a broken image: {exc}")
            return
        self.durations.record(plan.job.shape.work_units, result.seconds)
        self.renderer._record_seconds(job.id, {"render": result.seconds, **result.timings})
        await self.renderer.notify(self.renderer._deliver(job, plan, rendered))

    async def _fail(self, job: JobRecord, reason: str) -> None:
        try:
            record = await self.db.run(self.jobs.mark_failed, job.id, reason)
        except JobStateError:
            return
        await self.renderer.notify(self.events.on_failed(record, reason))

    # ----------------------------------------------------------------- progress
    async def _progress_loop(self) -> None:
        last = "$"
        while True:
            try:
                assert self.redis is not None
                replies = await self.redis.xread({self.keys.progress: last}, count=100, block=1000)
                for entry_id, fields in stream_entries(replies):
                    last = entry_id
                    await self._handle_progress(fields)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("Redis (progress): %s; retrying", exc)
                last = "$"
                await asyncio.sleep(0.5)
            except Exception:
                log.exception("a progress note failed")

    async def _handle_progress(self, fields: dict[Any, Any]) -> None:
        from bot.engine import Progress

        try:
            note = protocol.read_progress(_field(fields))
        except protocol.ProtocolError as exc:
            log.warning("a progress note was dropped: %s", exc)
            return
        if note.job_id not in self.inflight:
            return
        job = await self.db.run(self.jobs.get, note.job_id)
        if note.step == 0:
            # Started again by another worker (taken over, handed back): its ETA restarts.
            first = note.job_id not in self.started
            self.started[note.job_id] = time.monotonic()
            if first:
                await self.renderer.notify(self.events.on_started(job))
            return
        await self.renderer.notify(
            self.events.on_progress(job, Progress(note.step, note.total, note.phase))
        )


def _images(result: protocol.Result, render: RenderJob) -> list[Any]:
    """The result's PNGs decoded, each checked to be the size the job asked for."""
    from bot.engine import RenderedImage

    if len(result.images) != len(render.seeds):
        raise ValueError(f"{len(result.images)} images for {len(render.seeds)} seeds")
    images = []
    for item in result.images:
        with Image.open(io.BytesIO(item.png)) as opened:
            if opened.format != "PNG" or opened.size != render.output_size:
                raise ValueError(f"expected a {render.output_size} PNG, got {opened.size}")
            image = opened.convert("RGB")
        infotext = Infotext(item.prompt, item.negative_prompt, dict(item.params))
        images.append(RenderedImage(image, item.seed, infotext))
    return images


def describe_workers(beats: list[protocol.Heartbeat], now: float) -> list[str]:
    """One line per worker, for ``python -m bot workers`` and the admin view."""
    lines = []
    for b in beats:
        state = b.state if b.compatible else f"refused (protocol {b.version})"
        lines.append(
            f"{b.name}  host={b.host}  gpu={b.gpu}  model={b.model}  state={state}  "
            f"jobs={b.jobs_done}  last heartbeat {max(0.0, now - b.at):.1f} s ago"
        )
    return lines
