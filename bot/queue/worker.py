"""The one consumer that drives the engine, and the estimate of how long jobs take.

The worker takes the next job from the queue, marks it running in the database, and renders
it on a single dedicated thread, so the event loop never blocks: the gateway heartbeat, new
commands and progress edits keep flowing. When the pixels are ready, PNG encoding, the
image rows and delivery to the member run as a separate task while the next job already
renders: the GPU never waits on Discord. A per-job timeout cancels stuck jobs between steps.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from bot.config import Settings
from bot.engine import CancelToken, Engine, EngineError, JobCancelled, Progress, RenderJob
from bot.images import Infotext, encode_png
from bot.moderation import RatingScores, Verdict, image_verdict
from bot.planning import Plan
from bot.prompts import PromptError
from bot.queue.base import JobQueue, QueueEntry
from bot.request import GenerationRequest
from bot.storage.database import Database
from bot.storage.jobs import JobRecord, JobStateError, JobStore
from bot.storage.members import MemberStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputImage:
    """One finished image, encoded, with what the reply shows about it.

    ``verdict`` says whether the channel may see it: an adapter never uploads an image whose
    verdict is ``withhold`` to the member's channel.
    """

    index: int
    seed: int
    width: int
    height: int
    png: bytes
    infotext: Infotext
    content_hash: str
    verdict: Verdict
    scores: RatingScores | None = None
    image_id: int | None = None

    @property
    def withheld(self) -> bool:
        return not self.verdict.posted


class Classifier(Protocol):
    """Rates an image (the WD14 tagger in production); synchronous, run in a thread."""

    def rate(self, image: Image.Image) -> RatingScores: ...


class JobEvents(Protocol):
    """What an adapter (the Discord layer, a test) hears about jobs. Never blocks long."""

    async def on_started(self, job: JobRecord) -> None: ...

    async def on_progress(self, job: JobRecord, progress: Progress) -> None: ...

    async def on_finished(self, job: JobRecord, images: list[OutputImage]) -> None: ...

    async def on_failed(self, job: JobRecord, reason: str) -> None: ...

    async def on_cancelled(self, job: JobRecord) -> None: ...


class NoEvents:
    """Events nobody listens to (the CLI, benchmarks)."""

    async def on_started(self, job: JobRecord) -> None:
        return None

    async def on_progress(self, job: JobRecord, progress: Progress) -> None:
        return None

    async def on_finished(self, job: JobRecord, images: list[OutputImage]) -> None:
        return None

    async def on_failed(self, job: JobRecord, reason: str) -> None:
        return None

    async def on_cancelled(self, job: JobRecord) -> None:
        return None


def work_units(job: RenderJob) -> float:
    """Denoising steps times megapixels, over all images: what a job's time scales with."""
    megapixels = job.width * job.height / 1_048_576
    hires = 0.0
    if job.hires is not None:
        hires = job.hires_steps * job.hires.scale**2
    return len(job.seeds) * (job.steps + hires) * megapixels


def request_units(request: GenerationRequest) -> float:
    """:func:`work_units` of the job a request becomes (no prompt building needed)."""
    job = RenderJob(
        "",
        "",
        request.width,
        request.height,
        request.steps,
        request.cfg,
        request.sampler,
        tuple(range(request.count)),
        request.hires,
    )
    return work_units(job)


class DurationModel:
    """Seconds per work unit, learnt from finished jobs (a moving average)."""

    def __init__(self, initial_seconds_per_unit: float, weight: float = 0.3) -> None:
        self.seconds_per_unit = initial_seconds_per_unit
        self.weight = weight
        self.samples = 0

    def record(self, units: float, seconds: float) -> None:
        if units <= 0:
            return
        observed = seconds / units
        if self.samples == 0:
            self.seconds_per_unit = observed
        else:
            self.seconds_per_unit += self.weight * (observed - self.seconds_per_unit)
        self.samples += 1

    def estimate(self, units: float) -> float:
        return units * self.seconds_per_unit


Planner = Callable[[JobRecord], Awaitable[Plan]]


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
        self.classifier = classifier
        self.classifier_error = classifier_error or (
            None if classifier is not None else "no image classifier is configured"
        )
        self.members = MemberStore(db)
        self.durations = DurationModel(settings.queue.initial_step_seconds)
        self.timeout = settings.queue.job_timeout_s
        self._gpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._deliveries: set[asyncio.Task[None]] = set()
        self._current: tuple[int, CancelToken, float, float] | None = None
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.last_job_seconds: dict[int, dict[str, float]] = {}
        # Set once the engine is warmed up (compiled for the configured sizes); jobs wait.
        self.ready = asyncio.Event()
        if not engine.optimizations.compiled:
            self.ready.set()

    # ----------------------------------------------------------------- control
    @property
    def running_job_id(self) -> int | None:
        return None if self._current is None else self._current[0]

    def remaining_seconds(self) -> float:
        """Estimated seconds until the running job is done (0 when idle)."""
        if self._current is None:
            return 0.0
        _, _, started, estimate = self._current
        return max(0.0, estimate - (time.monotonic() - started))

    def cancel(self, job_id: int) -> bool:
        """Ask the running job to stop at its next step; ``False`` if it is not running."""
        if self._current is None or self._current[0] != job_id:
            return False
        self._current[1].cancel()
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
            await self.run_one(entry)

    async def run_burst(self) -> int:
        """Run every waiting job, then wait for their deliveries; returns how many ran.

        Deterministic: tests drain the queue with this instead of a background task.
        """
        await self.warm_up()
        ran = 0
        while (entry := self.queue.get_nowait()) is not None:
            await self.run_one(entry)
            ran += 1
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
                    "job %s did not finish in %.0f s; it resumes at next start",
                    self._current[0],
                    grace,
                )
                self._current[1].cancel()
                await self._idle.wait()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.drain()
        self._gpu.shutdown(wait=True)

    # ----------------------------------------------------------------- one job
    async def run_one(self, entry: QueueEntry) -> None:
        try:
            job = await self.db.run(self.jobs.mark_started, entry.job_id)
        except JobStateError:
            return  # cancelled (or handled) while it waited
        self._idle.clear()
        try:
            await self._render(job)
        finally:
            self._current = None
            self._idle.set()

    async def _render(self, job: JobRecord) -> None:
        loop = asyncio.get_running_loop()
        try:
            planned = await self.planner(job)
        except Exception as exc:  # a stored request that no longer builds (e.g. wildcard gone)
            await self._fail(job, f"the request cannot be rendered: {exc}")
            return
        plan = planned.job
        cancel = CancelToken()
        units = work_units(plan)
        started = time.monotonic()
        self._current = (job.id, cancel, started, self.durations.estimate(units))
        await self._notify(self.events.on_started(job))

        def progress(p: Progress) -> None:
            loop.call_soon_threadsafe(self._spawn, self.events.on_progress(job, p))

        future = loop.run_in_executor(
            self._gpu, lambda: self.engine.render(plan, on_progress=progress, cancel=cancel)
        )
        try:
            result = await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            cancel.cancel()
            await asyncio.gather(future, return_exceptions=True)
            await self._fail(job, f"the job took longer than {self.timeout:g} s and was stopped")
            return
        except JobCancelled:
            if self._stopping:
                await self.db.run(self.jobs.requeue, job.id)
                return
            record = await self.db.run(self.jobs.mark_cancelled, job.id, "cancelled while running")
            await self._notify(self.events.on_cancelled(record))
            return
        except (EngineError, PromptError) as exc:
            await self._fail(job, str(exc))
            return
        except Exception as exc:
            log.exception("job %s failed", job.id)
            await self._fail(job, f"internal error: {type(exc).__name__}")
            return
        self.durations.record(units, result.seconds)
        self.last_job_seconds[job.id] = {"render": result.seconds, **result.timings}
        self._spawn(self._deliver(job, planned, result.images))

    async def _fail(self, job: JobRecord, reason: str) -> None:
        record = await self.db.run(self.jobs.mark_failed, job.id, reason)
        await self._notify(self.events.on_failed(record, reason))

    async def _rate(self, image: Image.Image) -> tuple[RatingScores | None, str | None]:
        """The classifier's scores, off the event loop and off the engine's thread."""
        if self.classifier is None:
            return None, self.classifier_error
        try:
            return await asyncio.to_thread(self.classifier.rate, image), None
        except Exception as exc:
            log.warning("image classifier failed: %s", exc)
            return None, str(exc)

    async def _deliver(self, job: JobRecord, plan: Plan, rendered: list[Any]) -> None:
        started = time.perf_counter()
        outputs: list[OutputImage] = []
        for index, item in enumerate(rendered):
            scores, error = await self._rate(item.image)
            verdict = image_verdict(
                scores, plan.channel, plan.policy, error=error, minors=plan.decision.minors
            )
            png = await asyncio.to_thread(encode_png, item.image, item.infotext)
            digest = hashlib.sha256(png).hexdigest()
            width, height = item.image.size
            row = await self.db.run(
                self.jobs.add_image,
                job.id,
                index=index,
                seed=item.seed,
                width=width,
                height=height,
                content_hash=digest,
                moderation_scores=None if scores is None else scores.as_dict(),
            )
            if verdict.event_kind is not None:
                await self.db.run(
                    self.members.record_event,
                    verdict.event_kind,
                    guild_id=job.guild_id,
                    user_id=job.user_id,
                    reason=verdict.reason,
                    job_id=job.id,
                    image_id=row.id,
                    details={"prompt": plan.job.prompt, "seed": item.seed},
                )
            outputs.append(
                OutputImage(
                    index,
                    item.seed,
                    width,
                    height,
                    png,
                    item.infotext,
                    digest,
                    verdict,
                    scores,
                    row.id,
                )
            )
        record = await self.db.run(self.jobs.mark_finished, job.id)
        await self._notify(self.events.on_finished(record, outputs))
        self.last_job_seconds.setdefault(job.id, {})["deliver"] = time.perf_counter() - started

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
