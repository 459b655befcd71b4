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

Live previews: the bot decides, as for the embedded renderer
(:meth:`~bot.queue.render.Renderer.previews_wanted`: its settings, the server's default, the
queue), whether a job gets previews and how often, and sends the interval with the job;
a worker with TAESD sends a small preview in the progress note of a step that has one. Each
is decoded (:func:`bot.queue.previews.decode_preview`) and passes the very same image check
as in the embedded renderer (:class:`bot.queue.previews.PreviewCheck`) before the adapter
hears of it; one that comes while the job's previous preview is in the check is dropped.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from PIL import Image
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from bot.engine.job import RenderJob
from bot.images import Infotext
from bot.logs import job_context
from bot.queue import protocol
from bot.queue.previews import decode_preview
from bot.queue.state import RendererState
from bot.storage.jobs import JobNotFoundError, JobRecord, JobStateError
from bot.storage.models import JobStatus
from bot.waiting import wait_event

if TYPE_CHECKING:
    from bot.planning import Plan
    from bot.queue.render import Renderer

log = logging.getLogger(__name__)

WORKERS_GROUP = "workers"
BOT_GROUP = "bot"
PROGRESS_MAXLEN = 10_000
CANCEL_TTL_S = 24 * 3600
READ_BLOCK_MS = 500  # the longest a read waits on Redis, so a stop never waits on one
DELIVERIES_AT_ONCE = 8  # results decoded, rated and stored at once


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
        # An explicit read timeout: redis-py otherwise reuses the connect timeout (5 s) for
        # every reply, and a busy machine's blocking reads then fail now and then. Every
        # blocking read here waits at most 1 s, so 30 s only catches a dead server.
        client: Redis = Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=30.0,
            socket_keepalive=True,
            health_check_interval=10,
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

    @property
    def cancels(self) -> str:
        """A stream of cancelled job ids: rendering workers hear a cancel at once."""
        return f"{self.prefix}:cancels"

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


async def stream_end(client: Redis, stream: str) -> Any:
    """The id of ``stream``'s last entry ("0-0" when empty): where a reader starts to see
    only what comes next. Not "$": read again after a reply, "$" skips what was added in
    between."""
    last = await client.xrevrange(stream, count=1)
    return last[0][0] if last else "0-0"


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
        self.telemetry = renderer.telemetry
        self.keys = Keys(self.settings.queue.redis_prefix)
        self.redis: Redis | None = None
        self.ready = asyncio.Event()
        self.ready.set()  # workers warm up on their own machines
        self.workers: list[protocol.Heartbeat] = []
        self.inflight: dict[int, str] = {}  # job id -> its job message (sent to Redis)
        self.plans: dict[int, Plan] = {}
        self.records: dict[int, JobRecord] = {}  # job id -> its row when it was handed out
        self.started: dict[int, float] = {}  # job id -> when a worker started it
        self.preview_every: dict[int, float] = {}  # job id -> seconds between its previews
        self.handled = 0  # results delivered (finished, failed, cancelled by a worker)
        self.refused_warned: set[str] = set()
        self._lock = asyncio.Lock()
        self._taking = False  # a job taken from the queue, not yet sent
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # results being delivered: job id -> its latest task (one at a time per job), and
        # the entries in hand (a re-read of one is skipped)
        self._delivering: dict[int, asyncio.Task[None]] = {}
        self._in_hand: set[Any] = set()
        self._delivery_slots = asyncio.Semaphore(DELIVERIES_AT_ONCE)
        self._reread_pending = True  # results read before but not acknowledged

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
        slot_of: dict[str, int] = {}  # a message -> its worker (a micro-batch shares one)
        running = [j for j, _ in sorted(self.started.items(), key=lambda i: i[1])]
        for job_id in [*running, *self.inflight]:
            if job_id not in self.inflight or job_id in done:
                continue
            left = self._estimate(job_id)
            if job_id in self.started:
                left = max(0.0, left - (now - self.started[job_id]))
            message = self.inflight[job_id]
            index = slot_of.get(message)
            if index is None:
                index = slot_of[message] = slots.index(min(slots))
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
        """Messages (a job or a micro-batch) Redis may hold at once: one per live worker,
        plus the prefetch."""
        return len(self.live_workers) + self.settings.queue.redis_prefetch

    @property
    def handed_out(self) -> int:
        """Messages handed to Redis and not yet done (a micro-batch counts once)."""
        return len(set(self.inflight.values()))

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
        assert self.redis is not None
        held = await self.redis.hgetall(self.keys.inflight)
        for job in running:
            try:
                plan = await self.renderer.plan(job)
            except Exception as exc:
                await self._fail(job, f"the request cannot be rendered: {exc}")
                continue
            self.plans[job.id] = plan
            self.records[job.id] = job
            await self._want_previews(job)
            message = held.get(str(job.id).encode(), held.get(str(job.id)))
            if isinstance(message, bytes):
                message = message.decode("utf-8", "replace")
            if not isinstance(message, str):
                message = await self._message([(job.id, plan.job)])
            self.inflight[job.id] = message
        await self._reconcile()

    def start(self) -> None:
        self._stopping.clear()
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
        the next start delivers their results or sends them again.

        The loops are asked to stop and end on their own (no read waits on Redis longer
        than :data:`READ_BLOCK_MS`): a Redis command cancelled halfway can leave its
        connection stuck (redis-py #2579), so cancelling is only the fallback. Results being
        delivered are finished within ``grace``."""
        self._stopping.set()
        self._wake.set()
        if self._tasks and not self._taking:
            self._tasks[0].cancel()  # the dispatcher, waiting for a job: no Redis command
        if self._tasks:
            _done, late = await asyncio.wait(self._tasks, timeout=READ_BLOCK_MS / 1000 + 2)
            for task in late:  # the dispatcher waiting for a queued job, or a stuck read
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        deliveries = list(self._delivering.values())
        if deliveries:
            await asyncio.wait(deliveries, timeout=grace)
        await self.renderer.drain()
        if self.redis is not None:
            redis, self.redis = self.redis, None
            try:
                await asyncio.wait_for(redis.aclose(), 5)
            except (TimeoutError, RedisError, OSError) as exc:
                log.warning("Redis did not close cleanly: %s", exc or type(exc).__name__)

    async def drain(self) -> None:
        while self._delivering:
            await asyncio.gather(*list(self._delivering.values()), return_exceptions=True)
        await self.renderer.drain()

    @property
    def busy(self) -> bool:
        """A job waits, is handed out, or its result is being delivered."""
        return bool(len(self.queue) or self.inflight or self._taking or self._delivering)

    async def run_burst(self, limit_s: float = 120.0) -> int:
        """Wait until nothing waits or runs; returns how many results were handled."""
        before = self.handled
        if not self._tasks:
            self.start()
        deadline = time.monotonic() + limit_s
        while self.busy:
            if time.monotonic() > deadline:
                raise TimeoutError("jobs still waiting or running")
            await asyncio.sleep(0.05)
        await self.drain()
        return self.handled - before

    async def _loop(self, once: Any) -> None:
        """Run ``once`` until stopped; Redis going away is waited out, never fatal."""
        while not self._stopping.is_set():
            try:
                await once()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("Redis: %s; retrying", exc)
                self._reread_pending = True
                await self._pause(0.5)
            except Exception:
                log.exception("the Redis dispatcher failed; retrying")
                await self._pause(0.5)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when the dispatcher stops."""
        await wait_event(self._stopping, seconds)

    # ----------------------------------------------------------------- dispatch
    async def _dispatch_once(self) -> None:
        while self.handed_out >= self.capacity:
            if self._stopping.is_set():
                return
            self._wake.clear()
            await wait_event(self._wake, 0.5)
        entry = await self.queue.get()
        if self._stopping.is_set():  # stopped while it waited: it stays queued in SQLite
            return
        self._taking = True
        try:
            # Micro-batching per worker: compatible jobs from the fair order's window go in
            # one message, rendered by one worker in one pipeline call.
            companions = await self.renderer.take_compatible(entry)
            await self._dispatch([entry.job_id, *(c.job_id for c in companions)])
        finally:
            self._taking = False

    async def _dispatch(self, job_ids: list[int]) -> None:
        groups: dict[object, list[tuple[JobRecord, Plan]]] = {}
        for job_id in job_ids:
            try:
                job = await self.db.run(self.jobs.mark_started, job_id)
            except JobStateError:
                continue  # cancelled (or handled) while it waited
            try:
                plan = await self.renderer.plan(job)
            except Exception as exc:  # refused by the policy now, or a wildcard gone
                await self._fail(job, f"the request cannot be rendered: {exc}", "not_renderable")
                continue
            self.plans[job.id] = plan
            self.records[job.id] = job
            await self._want_previews(job)
            # An img2img job goes alone, with its input image.
            key = (plan.job.shape.batch_key, None if plan.job.image is None else job.id)
            groups.setdefault(key, []).append((job, plan))
        for group in groups.values():
            await self._send([(job.id, plan.job) for job, plan in group])

    async def _want_previews(self, job: JobRecord) -> None:
        """Decide now whether ``job`` gets live previews, and how often (sent with it)."""
        every = await self.renderer.previews_wanted(job)
        if every is None:
            self.preview_every.pop(job.id, None)
        else:
            self.preview_every[job.id] = every

    async def _message(self, jobs: list[tuple[int, RenderJob]]) -> str:
        """The job message for ``jobs``, with the input image of an img2img job read from
        the image vault (a missing one is sent as such: the worker fails the job, saying
        so) and each job's preview interval."""
        vault = self.renderer.outbox.vault
        inputs: dict[int, bytes] = {}
        for job_id, render in jobs:
            if render.image is not None:
                png = await asyncio.to_thread(vault.read_input, render.image.source)
                if png is not None:
                    inputs[job_id] = png
        previews = {j: self.preview_every[j] for j, _ in jobs if j in self.preview_every}
        return protocol.job_message(jobs, inputs, previews)

    async def _send(self, jobs: list[tuple[int, RenderJob]]) -> None:
        """Record the jobs as handed out and hand them out in one message, under the lock
        that :meth:`_reconcile` takes: a job is never seen recorded but not yet sent (and
        sent twice). Should Redis fail here, the record stays and the jobs go when it is
        back."""
        assert self.redis is not None
        message = await self._message(jobs)
        async with self._lock:
            pipe = self.redis.pipeline(transaction=True)
            for job_id, _render in jobs:
                self.inflight[job_id] = message
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
        await self._pause(self.settings.queue.redis_heartbeat_s / 2)

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
                # Sent again as they went (a micro-batch together), without the jobs of
                # their message that are done meanwhile.
                together: dict[str, list[int]] = {}
                for job_id in lost:
                    together.setdefault(self.inflight[job_id], []).append(job_id)
                pipe = self.redis.pipeline(transaction=True)
                for group in together.values():
                    message = await self._message([(j, self.plans[j].job) for j in group])
                    for job_id in group:
                        self.started.pop(job_id, None)
                        self.inflight[job_id] = message
                        pipe.hset(self.keys.inflight, str(job_id), message)
                    pipe.xadd(self.keys.jobs, {"m": message})
                await pipe.execute()

    # ----------------------------------------------------------------- control
    def cancel(self, job_id: int) -> bool:
        """Cancel a job in flight: ended now for the member; the worker stops at its next
        step (or never starts it). ``False`` if it is not in flight."""
        if job_id not in self.inflight:
            return False
        self.inflight.pop(job_id)
        self.started.pop(job_id, None)
        self._forget(job_id)
        self.renderer.spawn(self._cancel(job_id))
        return True

    def _forget(self, job_id: int) -> None:
        self.plans.pop(job_id, None)
        self.records.pop(job_id, None)
        self.preview_every.pop(job_id, None)

    async def _cancel(self, job_id: int) -> None:
        if self.redis is not None:
            # The flag for a worker about to start it; the stream for the one rendering it.
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(self.keys.cancel(job_id), "1", ex=CANCEL_TTL_S)
            pipe.xadd(self.keys.cancels, {"job": str(job_id)}, maxlen=1000, approximate=True)
            pipe.hdel(self.keys.inflight, str(job_id))
            await pipe.execute()
        self._wake.set()
        try:
            record = await self.db.run(self.jobs.mark_cancelled, job_id, "cancelled while running")
        except JobStateError:
            return  # its result came first
        self.telemetry.cancelled(record)
        await self.renderer.notify(self.events.on_cancelled(record))

    # ----------------------------------------------------------------- results
    async def _results_once(self) -> None:
        assert self.redis is not None
        # After a start or a Redis error, first what was read but not acknowledged (a
        # restart; a delivery that failed), then new results.
        if self._reread_pending:
            self._reread_pending = False
            await self._read_results("0")
        await self._read_results(">")

    async def _read_results(self, start: str) -> None:
        assert self.redis is not None
        replies = await self.redis.xreadgroup(
            BOT_GROUP,
            "bot",
            {self.keys.results: start},
            count=64,
            block=None if start == "0" else READ_BLOCK_MS,
        )
        for entry_id, fields in stream_entries(replies):
            await self._handle_result(entry_id, fields)

    async def _handle_result(self, entry_id: Any, fields: dict[Any, Any]) -> None:
        """A result frees its worker's slot at once (the next job is sent while this one is
        delivered); the delivery runs beside the reading, one at a time per job."""
        assert self.redis is not None
        try:
            result = protocol.read_result(_field(fields))
        except protocol.ProtocolError as exc:
            log.error("a result was dropped: %s", exc)  # noqa: TRY400
            await self._acknowledge(entry_id)
            return
        if entry_id in self._in_hand:
            return  # read again while it is delivered; acknowledged when that is done
        if self.inflight.pop(result.job_id, None) is not None:
            self.started.pop(result.job_id, None)
            self._wake.set()
        await self._delivery_slots.acquire()
        self._in_hand.add(entry_id)
        # A second result for a job (it was sent twice) waits for the first: then the job
        # is no longer running and the second is dropped.
        before = self._delivering.get(result.job_id)
        task = asyncio.create_task(
            self._settle(entry_id, result, before), name=f"redis-deliver-{result.job_id}"
        )
        self._delivering[result.job_id] = task

    async def _settle(
        self, entry_id: Any, result: protocol.Result, before: asyncio.Task[None] | None
    ) -> None:
        """Deliver ``result`` (exactly once: see :meth:`_deliver`), then forget the job in
        Redis and acknowledge the result. Should the delivery fail, the result stays
        unacknowledged and is read again."""
        try:
            if before is not None:
                await asyncio.gather(before, return_exceptions=True)
            await self._deliver(result)
            self._forget(result.job_id)
            if self.redis is not None:
                await self.redis.hdel(self.keys.inflight, str(result.job_id))
                await self._acknowledge(entry_id)
        except Exception:
            log.exception("job %s: its result could not be delivered; again soon", result.job_id)
            self._reread_pending = True
        finally:
            if self._delivering.get(result.job_id) is asyncio.current_task():
                del self._delivering[result.job_id]
            self._in_hand.discard(entry_id)
            self._delivery_slots.release()

    async def _acknowledge(self, entry_id: Any) -> None:
        assert self.redis is not None
        pipe = self.redis.pipeline(transaction=True)
        pipe.xack(self.keys.results, BOT_GROUP, entry_id)
        pipe.xdel(self.keys.results, entry_id)
        await pipe.execute()

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
        with job_context(job_id=job.id, guild_id=job.guild_id, channel_id=job.channel_id):
            await self._settle_result(job, result)

    async def _settle_result(self, job: JobRecord, result: protocol.Result) -> None:
        if result.status == "failed":
            await self._fail(job, result.reason or "the worker failed", "worker")
            return
        if result.status == "cancelled":
            record = await self.db.run(self.jobs.mark_cancelled, job.id, "cancelled while running")
            self.telemetry.cancelled(record)
            await self.renderer.notify(self.events.on_cancelled(record))
            return
        plan = self.plans.get(job.id)
        if plan is None:
            try:
                plan = await self.renderer.plan(job)
            except Exception as exc:
                await self._fail(job, f"the request cannot be rendered: {exc}", "not_renderable")
                return
        try:
            rendered = await asyncio.to_thread(_images, result, plan.job)
        except ValueError as exc:
            await self._fail(job, f"the worker sent a broken image: {exc}", "worker")
            return
        self.durations.record(plan.job.shape.work_units, result.seconds)
        self.renderer._record_seconds(job.id, {"render": result.seconds, **result.timings})
        self.telemetry.rendered(job, result.seconds, result.worker)
        await self.renderer.notify(self.renderer._deliver(job, plan, rendered))

    async def _fail(self, job: JobRecord, reason: str, kind: str = "worker") -> None:
        try:
            record = await self.db.run(self.jobs.mark_failed, job.id, reason)
        except JobStateError:
            return
        self.telemetry.failed(record, reason, kind)
        await self.renderer.notify(self.events.on_failed(record, reason))

    # ----------------------------------------------------------------- progress
    async def _progress_loop(self) -> None:
        last: Any = None  # the id read up to; None: from the stream's end, as of now
        while not self._stopping.is_set():
            try:
                assert self.redis is not None
                if last is None:
                    last = await stream_end(self.redis, self.keys.progress)
                replies = await self.redis.xread(
                    {self.keys.progress: last}, count=100, block=READ_BLOCK_MS
                )
                for entry_id, fields in stream_entries(replies):
                    last = entry_id
                    await self._handle_progress(fields)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("Redis (progress): %s; retrying", exc)
                last = None
                await self._pause(0.5)
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
        job = self.records.get(note.job_id)  # no database read per note
        if job is None:
            job = await self.db.run(self.jobs.get, note.job_id)
        first = note.job_id not in self.started
        if note.step == 0 or first:
            # Started (again, by another worker, when taken over or handed back: its ETA
            # restarts). A first note past step 0 (its start was missed) counts as a start.
            self.started[note.job_id] = time.monotonic()
            if first:
                self.telemetry.started(job, note.worker)
                await self.renderer.notify(self.events.on_started(job))
            if note.step == 0:
                return
        progress = Progress(note.step, note.total, note.phase)
        plan = self.plans.get(note.job_id)
        previews = self.renderer.previews
        if note.preview is not None and plan is not None and not previews.busy(note.job_id):
            image = await asyncio.to_thread(decode_preview, note.preview)
            if image is not None:
                # Its text now; the preview to the adapter once it passed the image check.
                previews.offer(job, plan, replace(progress, preview=image))
                return
        await self.renderer.notify(self.events.on_progress(job, progress))


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
