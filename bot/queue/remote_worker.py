"""A remote worker: one engine on one GPU, fed through Redis (``python -m bot worker``).

It needs no Discord token and no database: its settings hold the model, the engine and the
queue's Redis keys. It takes one job at a time from the ``workers`` consumer group
(XAUTOCLAIM first: jobs whose worker died, then XREADGROUP), renews its claim while it
renders (XCLAIM ... JUSTID every third of the claim timeout, so a long render is never
taken over), checks the job's cancel flag after every step, publishes progress at most once a
second, then its result (PNG bytes, infotext, timings) and only then acknowledges the job
(XACK): a worker killed at any point leaves the job to another.

Live previews: the worker loads TAESD as ``[previews]`` says (as the embedded engine does:
a hub id or a local folder, ``model.offline`` honoured), beside its first jobs rather than
before them (:func:`load_previews`); one that cannot be loaded means no previews and one
warning, never a failed or late worker. A job the bot sent with a preview
interval renders with it; each preview goes, as a small WebP (:func:`bot.queue.previews.
encode_preview`; one over :data:`~bot.queue.protocol.MAX_PREVIEW_BYTES` is left out), in
the progress note of its step, and the bot checks it before it is shown. The engine's
auto-off (a decode costing more than ``previews.max_share`` of the time between two
previews) holds here as in the bot: this worker then sends none. A heartbeat says who it is
and what it does. On SIGTERM it drains: it takes no new job, says "draining" (the bot no
longer counts it), and finishes the job it renders within ``queue.redis_drain_grace_s``
(``--grace``); past that it stops the render and hands the job back to the stream, where
another worker takes it at once, then exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from bot.config import Settings
from bot.engine import (
    CancelToken,
    Engine,
    EngineError,
    JobCancelled,
    Progress,
    RenderJob,
    RenderResult,
)
from bot.images import encode_png, stored_rgb
from bot.prompts import PromptError
from bot.queue import protocol
from bot.queue.previews import encode_preview
from bot.queue.redis_backend import (
    WORKERS_GROUP,
    Keys,
    RedisUnavailable,
    connect,
    ensure_group,
    stream_end,
    stream_entries,
)

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1.0
CANCEL_POLL_S = 1.0  # the cancel flags are read this often while rendering (a fallback)


class _HandBack(Exception):
    """The grace period ran out mid-render: the job goes back to Redis."""


class RemoteWorker:
    """Takes jobs from Redis, renders them on ``engine``, publishes the results."""

    def __init__(
        self, settings: Settings, engine: Engine, redis: Redis, *, name: str | None = None
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.redis = redis
        self.keys = Keys(settings.queue.redis_prefix)
        self.host = socket.gethostname()
        self.name = name or f"{self.host}-{os.getpid()}"
        self.claim_ms = int(settings.queue.redis_claim_timeout_s * 1000)
        self.state = "starting"
        self.job_id: int | None = None
        self.jobs_done = 0
        self.stopping = asyncio.Event()
        self.grace = settings.queue.redis_drain_grace_s
        self.handing_back = False  # the drain's grace period is over
        self._tokens: list[CancelToken] = []  # of the jobs rendering now
        self._rendering: dict[int, CancelToken] = {}  # job id -> its token, while rendering
        self._inputs: dict[int, bytes] = {}  # the input images (img2img) of the jobs in hand
        self._previews: dict[int, float] = {}  # job id -> seconds between its live previews
        self._closing = False
        self._grace_timer: asyncio.TimerHandle | None = None
        self._draining_beat: asyncio.Task[None] | None = None
        self._gpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")

    @property
    def gpu(self) -> str:
        device = self.engine.placement.device
        if device.type != "cuda":
            return device.type
        import torch

        return str(torch.cuda.get_device_name(device))

    # ----------------------------------------------------------------- heartbeat
    def heartbeat(self, problem: str = "") -> protocol.Heartbeat:
        return protocol.Heartbeat(
            name=self.name,
            host=self.host,
            gpu=self.gpu,
            model=self.settings.model.source,
            state="draining"
            if self.stopping.is_set() and self.state in ("idle", "rendering")
            else self.state,
            jobs_done=self.jobs_done,
            at=time.time(),
            job_id=self.job_id,
            problem=problem,
            gpu_memory_used_bytes=self.engine.gpu_memory_used(),
        )

    async def beat(self, problem: str = "") -> None:
        ttl = max(1000, int(self.settings.queue.redis_heartbeat_s * 3000))
        await self.redis.set(
            self.keys.worker(self.name), protocol.heartbeat_message(self.heartbeat(problem)), px=ttl
        )

    async def _heartbeats(self) -> None:
        while True:
            try:
                await self.beat()
            except (RedisError, OSError) as exc:
                log.warning("heartbeat: %s", exc)
            await asyncio.sleep(self.settings.queue.redis_heartbeat_s)

    async def check_version(self) -> None:
        """Refuse to run next to a bot of another protocol version (both sides say so)."""
        theirs = await self.redis.get(self.keys.protocol)
        if theirs is None or int(theirs) == protocol.PROTOCOL_VERSION:
            return
        error = protocol.IncompatibleVersion(int(theirs))
        self.state = "refused"
        await self.beat(str(error))
        raise error

    def drain(self) -> None:
        """SIGTERM: take no new job; finish the one in hand within :attr:`grace` seconds,
        else hand it back."""
        if self.stopping.is_set():
            return
        log.info("draining: no new jobs; %.1f s to finish the current one", self.grace)
        self.stopping.set()
        loop = asyncio.get_running_loop()
        self._grace_timer = loop.call_later(self.grace, self._grace_over)
        # Say so now: the bot stops counting this worker at once.
        self._draining_beat = loop.create_task(self._beat_quietly(), name="draining-beat")

    async def _beat_quietly(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.beat()

    def _grace_over(self) -> None:
        self.handing_back = True
        for token in self._tokens:
            token.cancel()

    def _input_image(self, jobs: list[tuple[int, RenderJob]]) -> Image.Image | None:
        """The pixels of the img2img job's input image (it came with the job), or None for
        jobs drawn from noise. Raises :class:`EngineError` when it is missing or unreadable."""
        job_id, render = jobs[0]
        if render.image is None:
            return None
        png = self._inputs.get(job_id)
        if png is None:
            raise EngineError("its input image did not come with the job (no longer stored)")
        try:
            return stored_rgb(png)
        except ValueError as exc:
            raise EngineError(f"its input image could not be read: {exc}") from None

    async def _hand_back(
        self,
        entry_id: Any,
        jobs: list[tuple[int, RenderJob]],
        results: list[protocol.Result] | None = None,
    ) -> None:
        """``jobs`` go back to the end of the stream for another worker, now (not after the
        claim timeout), with the ``results`` of the others of their message; the bot's
        record of them is untouched."""
        pipe = self.redis.pipeline(transaction=True)
        for result in results or ():
            pipe.xadd(self.keys.results, {"m": protocol.result_message(result)})
        message = protocol.job_message(jobs, self._inputs, self._previews)
        pipe.xadd(self.keys.jobs, {"m": message})
        pipe.xack(self.keys.jobs, WORKERS_GROUP, entry_id)
        pipe.xdel(self.keys.jobs, entry_id)
        await pipe.execute()
        log.info("job(s) %s handed back for another worker", ", ".join(str(j) for j, _ in jobs))

    # ----------------------------------------------------------------- the loop
    async def run(self) -> None:
        """Serve jobs until :attr:`stopping` is set; the job in hand is finished first."""
        await self.check_version()
        await ensure_group(self.redis, self.keys.jobs, WORKERS_GROUP)
        self.state = "idle"
        beats = asyncio.create_task(self._heartbeats(), name="heartbeat")
        hearing = asyncio.create_task(self._hear_cancels(), name="cancels")
        try:
            while not self.stopping.is_set():
                try:
                    taken = await self._take()
                except ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    await ensure_group(self.redis, self.keys.jobs, WORKERS_GROUP)
                    continue
                except (RedisError, OSError) as exc:
                    log.warning("Redis: %s; retrying", exc)
                    await asyncio.sleep(0.5)
                    continue
                if taken is None:
                    continue
                try:
                    await self._serve(*taken)
                except (RedisError, OSError) as exc:
                    # Redis went away mid-job: the bot sends the job again if Redis lost it.
                    log.warning("Redis: %s during a job; taking the next one", exc)
                    await asyncio.sleep(0.5)
        finally:
            self.state = "stopped"
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            beats.cancel()
            await asyncio.gather(beats, return_exceptions=True)
            self._closing = True  # the listener ends after its current read (at most 1 s)
            try:
                await asyncio.wait_for(asyncio.shield(hearing), 2)
            except TimeoutError:
                hearing.cancel()
                await asyncio.gather(hearing, return_exceptions=True)
            with contextlib.suppress(RedisError, OSError):
                await self.redis.delete(self.keys.worker(self.name))
            self._gpu.shutdown(wait=True)

    async def _hear_cancels(self) -> None:
        """Cancels as the bot publishes them (``P:cancels``): a job rendering here stops at
        its next step, with no Redis round trip per step."""
        last: Any = None  # None: from the stream's end, as of now (see stream_end)
        while not self._closing:
            try:
                if last is None:
                    last = await stream_end(self.redis, self.keys.cancels)
                replies = await self.redis.xread({self.keys.cancels: last}, count=100, block=1000)
            except (RedisError, OSError) as exc:
                log.warning("cancels: %s", exc)
                last = None
                await asyncio.sleep(0.5)
                continue
            for entry_id, fields in stream_entries(replies):
                last = entry_id
                raw = fields.get(b"job", fields.get("job")) if fields else None
                try:
                    job_id = int(raw) if isinstance(raw, bytes | str) else -1
                except ValueError:
                    continue
                token = self._rendering.get(job_id)
                if token is not None:
                    token.cancel()

    async def _take(self) -> tuple[Any, bytes | str] | None:
        """A job whose worker went silent, else a new one (waits up to half a second)."""
        claimed = await self.redis.xautoclaim(
            self.keys.jobs, WORKERS_GROUP, self.name, self.claim_ms, "0-0", count=1
        )
        entries = claimed[1] if claimed else []
        taken_over = bool(entries)
        if not entries:
            replies = await self.redis.xreadgroup(
                WORKERS_GROUP, self.name, {self.keys.jobs: ">"}, count=1, block=500
            )
            entries = stream_entries(replies)
        for entry_id, fields in entries:
            if not fields:
                await self.redis.xack(self.keys.jobs, WORKERS_GROUP, entry_id)
                continue  # deleted meanwhile
            raw = fields.get(b"m", fields.get("m"))
            if not isinstance(raw, bytes | str):
                await self._done(entry_id)
            elif taken_over and await self._given_up(entry_id, raw):
                continue
            else:
                return entry_id, raw
        return None

    async def _deliveries(self, entry_id: Any) -> int:
        """How many times the group handed this entry out (renewals do not count)."""
        pending = await self.redis.xpending_range(
            self.keys.jobs, WORKERS_GROUP, min=entry_id, max=entry_id, count=1
        )
        return int(pending[0]["times_delivered"]) if pending else 1

    async def _given_up(self, entry_id: Any, raw: bytes | str) -> bool:
        """Jobs taken over from a silent worker that were lost ``queue.redis_max_attempts``
        times already (each worker crashed or vanished on them) fail instead of crashing
        another: the bot refunds them and tells the members why."""
        attempts = self.settings.queue.redis_max_attempts
        lost = await self._deliveries(entry_id) - 1
        if lost < attempts:
            return False
        try:
            jobs = protocol.read_jobs(raw)
        except protocol.ProtocolError:
            await self._done(entry_id)
            return True
        ids = [job_id for job_id, _ in jobs]
        log.error("job(s) %s lost on %d workers in a row: failed", ids, lost)
        reason = (
            f"the render stopped {lost} times in a row (the worker rendering it crashed or "
            "went silent each time), so it is not tried again"
        )
        failed = [protocol.Result(job_id, "failed", self.name, reason=reason) for job_id in ids]
        await self._publish(failed, entry_id)
        return True

    async def _done(self, entry_id: Any) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.xack(self.keys.jobs, WORKERS_GROUP, entry_id)
        pipe.xdel(self.keys.jobs, entry_id)
        await pipe.execute()

    async def _publish(self, results: list[protocol.Result], entry_id: Any) -> None:
        """The results first, then the acknowledgement: a kill between them doubles the
        work, never loses it (the bot drops a second result by job id)."""
        pipe = self.redis.pipeline(transaction=False)
        for result in results:
            pipe.xadd(self.keys.results, {"m": protocol.result_message(result)})
        await pipe.execute()
        await self._done(entry_id)

    async def _serve(self, entry_id: Any, raw: bytes | str) -> None:
        try:
            batch = protocol.read_job_batch(raw)
            jobs, self._inputs, self._previews = batch.jobs, batch.inputs, batch.previews
        except protocol.IncompatibleVersion as exc:
            self.state = "refused"
            await self.beat(str(exc))
            log.error("refused a job: %s", exc)  # noqa: TRY400
            self.stopping.set()
            raise
        except protocol.ProtocolError as exc:
            log.error("dropped an unreadable job: %s", exc)  # noqa: TRY400
            await self._done(entry_id)
            return
        pipe = self.redis.pipeline(transaction=False)
        for job_id, _render in jobs:
            pipe.exists(self.keys.cancel(job_id))
        flags = await pipe.execute()
        cancelled = [job_id for (job_id, _), flag in zip(jobs, flags, strict=True) if flag]
        jobs = [(job_id, render) for job_id, render in jobs if job_id not in cancelled]
        results = [protocol.Result(job_id, "cancelled", self.name) for job_id in cancelled]
        if not jobs:  # every one cancelled before it started
            await self._publish(results, entry_id)
            return
        if self.stopping.is_set():  # taken as the drain began: not started here
            await self._hand_back(entry_id, jobs, results)
            return
        self.state, self.job_id = "rendering", jobs[0][0]
        await self._beat_quietly()  # who renders what is known at once, not a beat later
        try:
            try:
                done, back = await self._render(entry_id, jobs)
            except _HandBack:
                await self._hand_back(entry_id, jobs, results)
                return
            results += done
            if back:
                await self._hand_back(entry_id, back, results)
            else:
                await self._publish(results, entry_id)
            # jobs done: rendered, not cancelled or failed
            self.jobs_done += sum(result.status == "finished" for result in results)
        finally:
            self.state, self.job_id = "idle", None

    async def _render(
        self, entry_id: Any, jobs: list[tuple[int, RenderJob]]
    ) -> tuple[list[protocol.Result], list[tuple[int, RenderJob]]]:
        """Render ``jobs`` (one, or a micro-batch) in one engine call: a result per job, and
        the jobs stopped by the end of the drain's grace period (to hand back). Raises
        :class:`_HandBack` when the grace ended the whole call."""
        loop = asyncio.get_running_loop()
        tokens = [CancelToken() for _ in jobs]
        self._tokens = tokens
        if self.handing_back:
            raise _HandBack
        cancel_keys = [self.keys.cancel(job_id) for job_id, _ in jobs]
        checking = threading.Event()  # a read of the cancel flags is under way
        last: dict[int, float] = {}
        checked = [time.monotonic()]  # when the flags were read last
        for (job_id, _), token in zip(jobs, tokens, strict=True):
            self._rendering[job_id] = token

        async def note(
            job_id: int, step: int, total: int, phase: str, preview: Image.Image | None = None
        ) -> None:
            data = None if preview is None else await asyncio.to_thread(encode_preview, preview)
            if preview is not None and data is None:
                log.info(
                    "job %s: a live preview over %d bytes was left out",
                    job_id,
                    protocol.MAX_PREVIEW_BYTES,
                )
            message = protocol.progress_message(job_id, self.name, step, total, phase, preview=data)
            await self.redis.xadd(
                self.keys.progress, {"m": message}, maxlen=10_000, approximate=True
            )

        async def check_cancel() -> None:
            try:
                flags = await self.redis.mget(cancel_keys)
                for token, flag in zip(tokens, flags, strict=True):
                    if flag is not None:
                        token.cancel()
            except (RedisError, OSError) as exc:
                log.warning("cannot read the cancel flags: %s", exc)
            finally:
                checking.clear()

        def reporter(job_id: int, first: bool) -> Callable[[Progress], None]:
            def progress(p: Progress) -> None:  # on the engine's thread, after every step
                # Cancels arrive on the stream (:meth:`_hear_cancels`); the flags are also
                # read once a second beside the render (never waited for), should the
                # stream have missed one.
                now = time.monotonic()
                if first and not checking.is_set() and now - checked[0] >= CANCEL_POLL_S:
                    checked[0] = now
                    checking.set()
                    asyncio.run_coroutine_threadsafe(check_cancel(), loop)
                # A step with a preview always goes (the engine spaced the previews out).
                due = now - last.get(job_id, 0.0) >= PROGRESS_INTERVAL_S or p.step == p.total
                if due or p.preview is not None:
                    last[job_id] = now
                    asyncio.run_coroutine_threadsafe(
                        note(job_id, p.step, p.total, p.phase, p.preview), loop
                    )

            return progress

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.claim_ms / 3000)
                try:
                    await self.redis.xclaim(
                        self.keys.jobs, WORKERS_GROUP, self.name, 0, [entry_id], justid=True
                    )
                except (RedisError, OSError) as exc:
                    log.warning("cannot renew the claim on job(s) %s: %s", entry_id, exc)

        for job_id, render in jobs:
            await note(job_id, 0, render.steps, "base")
        renewing = asyncio.create_task(renew(), name="renew-claim")
        started = time.perf_counter()
        callbacks = [reporter(job_id, i == 0) for i, (job_id, _) in enumerate(jobs)]
        renders = [render for _, render in jobs]
        every = [self._previews.get(job_id) for job_id, _ in jobs]
        try:
            init_image = self._input_image(jobs)
            outcome = await loop.run_in_executor(
                self._gpu,
                lambda: self.engine.render_batch(
                    renders,
                    on_progress=callbacks,
                    cancels=tokens,
                    init_image=init_image,
                    preview_every=every,
                ),
            )
        except JobCancelled:
            if self.handing_back:
                raise _HandBack from None
            return [protocol.Result(job_id, "cancelled", self.name) for job_id, _ in jobs], []
        except (EngineError, PromptError) as exc:
            return self._failed(jobs, str(exc)), []
        except Exception as exc:
            log.exception("job(s) %s failed", [job_id for job_id, _ in jobs])
            return self._failed(jobs, f"internal error: {type(exc).__name__}"), []
        finally:
            self._tokens = []
            for job_id, _ in jobs:
                self._rendering.pop(job_id, None)
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
        seconds = time.perf_counter() - started

        def encode(result: RenderResult) -> list[protocol.ResultImage]:
            return [
                protocol.ResultImage(
                    item.seed,
                    encode_png(item.image, item.infotext, compress_level=1),
                    item.infotext.prompt,
                    item.infotext.negative_prompt,
                    dict(item.infotext.params),
                )
                for item in result.images
            ]

        results: list[protocol.Result] = []
        back: list[tuple[int, RenderJob]] = []
        for (job_id, render), result in zip(jobs, outcome, strict=True):
            if result.cancelled and self.handing_back:
                back.append((job_id, render))  # stopped by the grace, not by its member
            elif result.cancelled:
                results.append(protocol.Result(job_id, "cancelled", self.name))
            elif result.error is not None:
                results.append(protocol.Result(job_id, "failed", self.name, reason=result.error))
            else:
                results.append(
                    protocol.Result(
                        job_id,
                        "finished",
                        self.name,
                        images=await asyncio.to_thread(encode, result),
                        seconds=result.seconds or seconds / len(jobs),
                        timings=dict(result.timings),
                    )
                )
        return results, back

    def _failed(self, jobs: list[tuple[int, RenderJob]], reason: str) -> list[protocol.Result]:
        return [protocol.Result(job_id, "failed", self.name, reason=reason) for job_id, _ in jobs]


def load_previews(engine: Engine, settings: Settings) -> threading.Thread | None:
    """Load TAESD for live previews as ``[previews]`` says, beside the renders (a thread of
    its own: the worker takes jobs at once, and a hub that cannot be reached, retried for
    a while, never holds it up); jobs get previews once it is loaded. One that cannot be
    loaded is one warning and no previews, never a failed worker. None when previews are
    off in the worker's settings."""
    if not settings.previews.active:
        log.info("live previews: none from this worker ([previews] is off)")
        return None

    def load() -> None:
        try:
            engine.load_previews(settings)
        except Exception:  # never the worker's end
            log.exception("live previews off: TAESD could not be loaded")

    thread = threading.Thread(target=load, name="load-taesd", daemon=True)
    thread.start()
    return thread


async def serve(settings: Settings, *, name: str | None = None, grace: float | None = None) -> int:
    """Connect, load the model, serve until SIGTERM/SIGINT; returns the exit status."""
    redis = await connect(settings.queue.redis_url)
    try:
        log.info("loading the model from %s", settings.model.source)
        engine = await asyncio.to_thread(Engine.load, settings)
        load_previews(engine, settings)
        worker = RemoteWorker(settings, engine, redis, name=name)
        if grace is not None:
            worker.grace = grace
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.drain)
        log.info("worker %s ready (%s, %s)", worker.name, worker.gpu, settings.model.source)
        await worker.run()
        log.info("worker %s stopped after %d job(s)", worker.name, worker.jobs_done)
        return 0
    finally:
        await redis.aclose()


__all__ = ["RedisUnavailable", "RemoteWorker", "serve"]
