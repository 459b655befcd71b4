"""The scheduling loop: the one consumer that takes jobs from the queue and drives the engine.

The worker takes the next job from the queue, marks it running in the database, and renders
it on a single dedicated thread, so the event loop never blocks: the gateway heartbeat, new
commands and progress edits keep flowing. When the pixels are ready, the output step
(:mod:`bot.queue.output`: rating, PNG encoding, image rows) and the adapter's
:class:`~bot.queue.events.JobEvents` run as a separate task while the next job already
renders: the GPU never waits on Discord. Job times feed the ETA model
(:mod:`bot.queue.eta`). A per-job timeout cancels stuck jobs between steps.

Micro-batching (``queue.micro_batch_images`` > 1): after taking the next job, the worker
looks at the next ``queue.micro_batch_window`` jobs in fair order and takes those with the
same :attr:`~bot.shape.JobShape.batch_key` (read from the stored request) while the images
add up to at most ``micro_batch_images``; they render in one engine call. Only jobs within
the window may join, so no job runs more than that many places ahead of its turn; a job
cancelled while it waits is never taken. Each job is then delivered exactly as alone (its
own events, in fair order, its images, rows and recorded time, its share of the call's).
A job cancelled during a batch ends as cancelled when the call ends (the engine drops its
rows at the next phase boundary, the others go on); a batch that fails (out of memory, say)
is retried one job at a time, so only a job at fault fails. The timeout of a batch is the
per-job timeout times its number of jobs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bot.config import Settings
from bot.engine import (
    CancelToken,
    Engine,
    EngineError,
    JobCancelled,
    Progress,
    RenderedImage,
    RenderResult,
)
from bot.planning import Plan, request_shape
from bot.prompts import PromptError
from bot.queue.base import JobQueue, QueueEntry
from bot.queue.eta import DurationModel
from bot.queue.events import JobEvents
from bot.queue.output import Classifier, ImageOutput
from bot.request import GenerationRequest
from bot.shape import BatchKey
from bot.storage.database import Database
from bot.storage.jobs import JobNotFoundError, JobRecord, JobStateError, JobStore
from bot.storage.models import JobStatus

log = logging.getLogger(__name__)

_TIMINGS_KEPT = 256


def request_units(request: GenerationRequest) -> float:
    """The work units of the job a request becomes (no prompt building needed)."""
    return request_shape(request).work_units


def stored_batch_shape(job: JobRecord) -> tuple[BatchKey, int] | None:
    """The batch key and image count of a stored job; ``None`` if its request is unreadable.

    Prompts need not match (the engine pads and masks prompts of other lengths exactly),
    so the key holds only size, steps, CFG, sampler and hires settings.
    """
    try:
        request = GenerationRequest.model_validate(job.request["request"])
        return request_shape(request).batch_key, request.count
    except (KeyError, TypeError, ValueError):
        return None


Planner = Callable[[JobRecord], Awaitable[Plan]]


@dataclass
class _Running:
    """The job, or micro-batch of jobs, on the engine now."""

    tokens: dict[int, CancelToken]  # job id -> its token, in fair order
    started: float
    estimate: float
    cancelled: set[int] = field(default_factory=set)  # asked by a member or moderator


class Worker:
    """Runs queued jobs one at a time on the engine."""

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        jobs: JobStore,
        queue: JobQueue,
        engine: Engine,
        planner: Planner,
        events: JobEvents,
        classifier: Classifier | None = None,
        classifier_error: str | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.jobs = jobs
        self.queue = queue
        self.engine = engine
        self.planner = planner
        self.events = events
        self.output = ImageOutput(db, jobs, classifier, classifier_error)
        self.durations = DurationModel(settings.queue.initial_step_seconds)
        self.timeout = settings.queue.job_timeout_s
        self._gpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._deliveries: set[asyncio.Task[None]] = set()
        self._current: _Running | None = None
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        # Where the time of recent jobs went (render, encoders, decode, deliver), newest last.
        self.last_job_seconds: OrderedDict[int, dict[str, float]] = OrderedDict()
        # Set once the engine is warmed up (compiled for the configured sizes); jobs wait.
        self.ready = asyncio.Event()
        if not engine.optimizations.compiled:
            self.ready.set()

    # ----------------------------------------------------------------- control
    @property
    def classifier(self) -> Classifier | None:
        """The image classifier of the output step (None: none loaded)."""
        return self.output.classifier

    @property
    def classifier_error(self) -> str | None:
        """Why there is no working classifier, or None."""
        return self.output.classifier_error

    @property
    def running_job_id(self) -> int | None:
        """The running job (the first of a micro-batch); ``None`` when idle."""
        return next(iter(self.running_job_ids), None)

    @property
    def running_job_ids(self) -> tuple[int, ...]:
        """Every job on the engine now: one, or a micro-batch in fair order."""
        return () if self._current is None else tuple(self._current.tokens)

    def remaining_seconds(self) -> float:
        """Estimated seconds until the running job (or batch) is done (0 when idle)."""
        if self._current is None:
            return 0.0
        return max(0.0, self._current.estimate - (time.monotonic() - self._current.started))

    def cancel(self, job_id: int) -> bool:
        """Ask a running job to stop; ``False`` if it is not running.

        Alone it stops at its next step; in a micro-batch it ends as cancelled when the
        call ends (see :meth:`bot.engine.Engine.render_batch`).
        """
        if self._current is None or job_id not in self._current.tokens:
            return False
        self._current.cancelled.add(job_id)
        self._current.tokens[job_id].cancel()
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="worker")

    async def warm_up(self) -> None:
        """Compile the engine for the configured sizes on its own thread; jobs wait until
        it is done (the bot keeps answering commands meanwhile)."""
        if self.ready.is_set():
            return
        from bot.engine.optimize import warm_up

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self._gpu, lambda: warm_up(self.engine, self.engine.optimizations)
            )
        finally:
            self.ready.set()

    async def _run_forever(self) -> None:
        await self.ready.wait()
        while not self._stopping:
            entry = await self.queue.get()
            if self._stopping:
                self.queue.put_front(entry)
                break
            await self.run_next(entry)

    async def run_burst(self) -> int:
        """Run every waiting job, then wait for their deliveries; returns how many ran.

        Deterministic: tests drain the queue with this instead of a background task.
        """
        await self.warm_up()
        ran = 0
        while (entry := self.queue.get_nowait()) is not None:
            ran += await self.run_next(entry)
        await self.drain()
        return ran

    async def drain(self) -> None:
        """Wait until every started delivery is done."""
        while self._deliveries:
            await asyncio.gather(*list(self._deliveries), return_exceptions=True)

    async def stop(self, grace: float = 30.0) -> None:
        """No new jobs; let the running one finish for ``grace`` seconds, else persist it
        as queued so it resumes at the next start. Deliveries in flight complete."""
        self._stopping = True
        if self._task is not None and self._current is None:
            self._task.cancel()
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            if self._current is not None:
                log.warning(
                    "job(s) %s did not finish in %.0f s; they resume at next start",
                    ", ".join(map(str, self._current.tokens)),
                    grace,
                )
                for token in self._current.tokens.values():
                    token.cancel()
                await self._idle.wait()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.drain()
        self._gpu.shutdown(wait=True)

    # ----------------------------------------------------------------- jobs
    async def run_next(self, entry: QueueEntry) -> int:
        """Run ``entry``, with compatible jobs from the window when micro-batching is on;
        returns how many queue entries were taken (``entry`` included)."""
        companions = await self.take_compatible(entry)
        if not companions:
            await self.run_one(entry)
            return 1
        await self.run_batch([entry, *companions])
        return 1 + len(companions)

    async def run_one(self, entry: QueueEntry) -> None:
        """Run one job alone."""
        await self.run_batch([entry])

    async def run_batch(self, entries: list[QueueEntry]) -> None:
        """Run entries already taken from the queue as one engine call, in this order.

        Each must be compatible (see :meth:`take_compatible`); one that was cancelled (or
        handled) while it waited is skipped.
        """
        jobs: list[JobRecord] = []
        for entry in entries:
            try:
                jobs.append(await self.db.run(self.jobs.mark_started, entry.job_id))
            except JobStateError:
                continue  # cancelled (or handled) while it waited
        if not jobs:
            return
        self._idle.clear()
        try:
            await self._render(jobs)
        finally:
            self._current = None
            self._idle.set()

    async def take_compatible(self, entry: QueueEntry) -> list[QueueEntry]:
        """Waiting jobs to render with ``entry``, taken out of the queue (fair order).

        Only the next ``micro_batch_window`` jobs in fair order are looked at; each must
        still be queued, share ``entry``'s batch key and fit in ``micro_batch_images``.
        """
        settings = self.settings.queue
        if settings.micro_batch_images <= 1:
            return []
        looked_at = self.queue.order()[: settings.micro_batch_window]
        if not looked_at:
            return []
        ids = [entry.job_id, *(e.job_id for e in looked_at)]
        shapes = await self.db.run(self._queued_shapes, ids)
        head = shapes.get(entry.job_id)
        if head is None:
            return []
        key, images = head
        chosen: list[QueueEntry] = []
        # The queue may have changed while the rows were read: look at the window as it is
        # now (no await from here on, so nothing changes under the loop).
        for candidate in self.queue.order()[: settings.micro_batch_window]:
            shape = shapes.get(candidate.job_id)
            if shape is None or shape[0] != key:
                continue
            if images + shape[1] > settings.micro_batch_images:
                continue
            if not self.queue.remove(candidate.job_id):
                continue
            chosen.append(candidate)
            images += shape[1]
            if images >= settings.micro_batch_images:
                break
        return chosen

    def _queued_shapes(self, job_ids: list[int]) -> dict[int, tuple[BatchKey, int]]:
        """Batch key and image count of each of ``job_ids`` that is still queued."""
        shapes: dict[int, tuple[BatchKey, int]] = {}
        for job_id in job_ids:
            try:
                job = self.jobs.get(job_id)
            except JobNotFoundError:
                continue
            shape = stored_batch_shape(job) if job.status is JobStatus.QUEUED else None
            if shape is not None:
                shapes[job_id] = shape
        return shapes

    async def _render(self, jobs: list[JobRecord]) -> None:
        planned: list[tuple[JobRecord, Plan]] = []
        for job in jobs:
            try:
                planned.append((job, await self.planner(job)))
            except Exception as exc:  # a stored request that no longer builds (wildcard gone)
                await self._fail(job, f"the request cannot be rendered: {exc}")
        groups: dict[BatchKey, list[tuple[JobRecord, Plan]]] = {}
        for job, plan in planned:
            groups.setdefault(plan.job.shape.batch_key, []).append((job, plan))
        for group in groups.values():
            await self._render_group(group)

    async def _render_group(
        self, group: list[tuple[JobRecord, Plan]], *, announce: bool = True
    ) -> None:
        """Render planned, compatible jobs in one engine call, then deliver each."""
        loop = asyncio.get_running_loop()
        tokens = [CancelToken() for _ in group]
        units = [plan.job.shape.work_units for _, plan in group]
        running = _Running(
            {job.id: token for (job, _), token in zip(group, tokens, strict=True)},
            time.monotonic(),
            self.durations.estimate(sum(units)),
        )
        self._current = running
        if announce:
            for job, _ in group:
                await self._notify(self.events.on_started(job))

        def reporter(job: JobRecord) -> Callable[[Progress], None]:
            def progress(p: Progress) -> None:
                loop.call_soon_threadsafe(self._spawn, self.events.on_progress(job, p))

            return progress

        renders = [plan.job for _, plan in group]
        callbacks = [reporter(job) for job, _ in group]

        def call() -> list[RenderResult]:
            if len(group) == 1:  # the engine's one-job entry point (tests spy on it)
                return [self.engine.render(renders[0], on_progress=callbacks[0], cancel=tokens[0])]
            return self.engine.render_batch(renders, on_progress=callbacks, cancels=tokens)

        future = loop.run_in_executor(self._gpu, call)
        limit = self.timeout * len(group)
        try:
            results = await asyncio.wait_for(asyncio.shield(future), limit)
        except TimeoutError:
            for token in tokens:
                token.cancel()
            await asyncio.gather(future, return_exceptions=True)
            for job, _ in group:
                await self._fail(job, f"the job took longer than {limit:g} s and was stopped")
            return
        except JobCancelled:
            for job, _ in group:
                await self._cancelled(job, running)
            return
        except (EngineError, PromptError) as exc:
            if len(group) > 1:
                log.warning("a batch of %d jobs failed (%s); rendering each alone", len(group), exc)
                for member in group:
                    if member[0].id in running.cancelled:
                        await self._cancelled(member[0], running)
                    else:
                        await self._render_group([member], announce=False)
                return
            await self._fail(group[0][0], str(exc))
            return
        except Exception as exc:
            log.exception("job(s) %s failed", ", ".join(str(job.id) for job, _ in group))
            for job, _ in group:
                await self._fail(job, f"internal error: {type(exc).__name__}")
            return
        done: list[tuple[JobRecord, Plan, list[RenderedImage]]] = []
        for (job, plan), job_units, result in zip(group, units, results, strict=True):
            if result.cancelled:
                await self._cancelled(job, running)
                continue
            if result.error is not None:  # a broken image: failed and refunded, never posted
                await self._fail(job, result.error)
                continue
            self.durations.record(job_units, result.seconds)
            self._record_seconds(job.id, {"render": result.seconds, **result.timings})
            done.append((job, plan, result.images))
        if done:
            self._spawn(self._deliver_all(done))

    async def _cancelled(self, job: JobRecord, running: _Running) -> None:
        """A running job stopped: cancelled, or back in the queue when the worker stops."""
        if self._stopping and job.id not in running.cancelled:
            await self.db.run(self.jobs.requeue, job.id)
            return
        record = await self.db.run(self.jobs.mark_cancelled, job.id, "cancelled while running")
        await self._notify(self.events.on_cancelled(record))

    async def _fail(self, job: JobRecord, reason: str) -> None:
        record = await self.db.run(self.jobs.mark_failed, job.id, reason)
        await self._notify(self.events.on_failed(record, reason))

    async def _deliver_all(self, done: list[tuple[JobRecord, Plan, list[RenderedImage]]]) -> None:
        """Deliver finished jobs one after another: their events keep the fair order."""
        for job, plan, rendered in done:
            await self._notify(self._deliver(job, plan, rendered))

    async def _deliver(self, job: JobRecord, plan: Plan, rendered: list[RenderedImage]) -> None:
        started = time.perf_counter()
        outputs = await self.output.images(job, plan, rendered)
        record = await self.db.run(self.jobs.mark_finished, job.id)
        await self._notify(self.events.on_finished(record, outputs))
        self._record_seconds(job.id, {"deliver": time.perf_counter() - started})

    def _record_seconds(self, job_id: int, seconds: dict[str, float]) -> None:
        self.last_job_seconds.setdefault(job_id, {}).update(seconds)
        while len(self.last_job_seconds) > _TIMINGS_KEPT:  # a bot runs for months
            self.last_job_seconds.popitem(last=False)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(self._notify(coro))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    @staticmethod
    async def _notify(coro: Awaitable[None]) -> None:
        try:
            await coro
        except Exception:
            log.exception("a job event handler failed")
