"""The renderer: engine calls and micro-batching, on one dedicated thread.

The worker (:mod:`bot.queue.worker`) hands it jobs already marked running. Each job's
stored plan (:class:`~bot.jobspec.StoredPlan`, made once when it was accepted) passes a
cheap re-check of its final prompt under the server's policy of the moment
(:func:`bot.planning.decide`: no rebuild); a job queued before plans were stored is
planned once here, with the same function as a new job. Compatible jobs render in one
engine call on the renderer's thread, so the event loop never blocks: the gateway
heartbeat, new commands and progress edits keep flowing. When the pixels are ready, the
output step (:mod:`bot.queue.output`: rating, PNG encoding, image rows) and the adapter's
:class:`~bot.queue.events.JobEvents` run as a separate task while the next job already
renders: the GPU never waits on Discord. Job times feed the ETA model (:mod:`bot.queue.eta`).
A per-job timeout cancels stuck jobs between steps.

Micro-batching (``queue.micro_batch_images`` > 1): after the worker takes the next job,
:meth:`Renderer.take_compatible` looks at the next ``queue.micro_batch_window`` jobs in fair
order and takes those with the same :attr:`~bot.shape.JobShape.batch_key` (read from the
stored plan) while the images add up to at most ``micro_batch_images``; they render in one
engine call. Only jobs within the window may join, so no job runs more than that many
places ahead of its turn; a job cancelled while it waits is never taken. Each job is then
delivered exactly as alone (its own events, in fair order, its images, rows and recorded
time, its share of the call's). A job cancelled during a batch ends as cancelled when the
call ends (the engine drops its rows at the next phase boundary, the others go on); a batch
that fails (out of memory, say) is retried one job at a time, so only a job at fault fails.
The timeout of a batch is the per-job timeout times its number of jobs.

Live previews (``[previews]``): each job of a call gets a preview interval, or none when
previews are off for the bot, for its server (its ``previews`` default), while more than
``previews.busy_queue`` jobs wait, or when the engine turned them off (a decode costing too
much of a step). A preview the engine attaches to a step passes the image check
(:class:`bot.queue.previews.PreviewCheck`, which the Redis dispatcher's previews pass
too: the classifier on its own thread, never the engine's, the channel's policy as for
results) before the adapter hears of it; the step's text progress goes on at once without
it. While one preview of a job is being checked, later ones of that job are dropped, never
queued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from PIL import Image

from bot.admin import previews_on
from bot.config import Settings
from bot.engine import (
    CancelToken,
    Engine,
    EngineError,
    JobCancelled,
    Progress,
    RenderedImage,
    RenderJob,
    RenderResult,
)
from bot.engine.front import PromptFront
from bot.images import stored_rgb
from bot.logs import job_context
from bot.observability.telemetry import Telemetry
from bot.outbox import Outbox
from bot.planning import Plan, current_policy, decide, plan_job
from bot.prompts import PromptError
from bot.queue.base import JobQueue, QueueEntry
from bot.queue.eta import DurationModel
from bot.queue.events import JobEvents
from bot.queue.output import ImageOutput
from bot.queue.previews import PreviewCheck
from bot.shape import BatchKey
from bot.storage.database import Database, DatabaseError
from bot.storage.jobs import JobNotFoundError, JobRecord, JobStore
from bot.storage.members import GuildStore
from bot.storage.models import JobStatus

log = logging.getLogger(__name__)

_TIMINGS_KEPT = 256
_FINISH_TRIES = 4  # marking a job finished, before it is left running (0.5, 1, 2 s apart)
FAILING_AFTER = 3  # engine calls in a row that raised something unexpected: not ready

_T = TypeVar("_T")


GroupKey = tuple[BatchKey, int | None]
"""A batch key, and for an img2img job its id: such a job renders alone."""


def group_key(job_id: int, render: RenderJob) -> GroupKey:
    return render.shape.batch_key, None if render.image is None else job_id


def stored_batch_shape(job: JobRecord) -> tuple[GroupKey, int] | None:
    """The batch key and image count of a stored job; ``None`` if it is unreadable.

    Prompts need not match (the engine pads and masks prompts of other lengths exactly),
    so the key holds only size, steps, CFG, sampler and hires settings; an img2img job's
    holds its id too (it renders alone, from its own input image).
    """
    try:
        spec = job.spec
        shape = spec.shape
    except (KeyError, TypeError, ValueError):
        return None
    image = spec.request.image if spec.plan is None else spec.plan.render.image
    return (shape.batch_key, None if image is None else job.id), shape.count


@dataclass
class Running:
    """The job, or micro-batch of jobs, on the engine now."""

    tokens: dict[int, CancelToken]  # job id -> its token, in fair order
    started: float
    estimate: float
    cancelled: set[int] = field(default_factory=set)  # asked by a member or moderator


class Renderer:
    """Renders jobs taken from the queue on the engine, one call at a time."""

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        jobs: JobStore,
        queue: JobQueue,
        engine: Engine | PromptFront,
        events: JobEvents,
        output: ImageOutput,
        outbox: Outbox,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.jobs = jobs
        self.guilds = GuildStore(db)
        self.queue = queue
        self.engine = engine
        self.events = events
        self.output = output
        self.outbox = outbox
        self.telemetry = telemetry or Telemetry()
        self.durations = DurationModel(settings.queue.initial_step_seconds)
        self.timeout = settings.queue.job_timeout_s
        self.current: Running | None = None
        self.stopping = False  # set by the worker: a stopped job goes back to the queue
        self._gpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._deliveries: set[asyncio.Task[None]] = set()
        # Where the time of recent jobs went (render, encoders, decode, deliver), newest last.
        self.last_job_seconds: OrderedDict[int, dict[str, float]] = OrderedDict()
        self._failures: list[str] = []  # unexpected errors of the latest engine calls in a row
        self._previews_loaded = False  # TAESD asked for (once, before the first job)
        self.previews = PreviewCheck(output, events, self.spawn)

    @property
    def preview_check_seconds(self) -> list[float]:
        """How long the recent preview checks took, newest last."""
        return self.previews.seconds

    @property
    def failing(self) -> str | None:
        """Why the engine looks broken (its last :data:`FAILING_AFTER` calls or more raised
        something unexpected, e.g. a lost CUDA device), or None; a success clears it."""
        if len(self._failures) < FAILING_AFTER:
            return None
        return f"{len(self._failures)} engine calls in a row failed (last: {self._failures[-1]})"

    # ----------------------------------------------------------------- engine
    @property
    def local_engine(self) -> Engine:
        """The engine in this process (the embedded backend); with the Redis backend the
        bot holds only the model's tokenizer and renders nothing itself."""
        if isinstance(self.engine, PromptFront):
            raise EngineError("jobs render on remote workers: this process has no engine")
        return self.engine

    @property
    def tokenizer(self) -> object | None:
        """The loaded model's CLIP tokenizer, which the policy reads prompts with (None when
        the engine has none: the policy then uses the CLIP tokenizer shipped with it)."""
        tokenizers = getattr(getattr(self.engine, "encoder", None), "tokenizers", None)
        return tokenizers[0] if tokenizers else None

    def check_length(self, job: RenderJob) -> None:
        """Raise :class:`~bot.prompts.PromptError` when the prompts are too long for the
        encoder (checked when a job is accepted, not after it waited in the queue)."""
        self.engine.encoder.check(job.prompt, job.negative_prompt)

    async def on_thread(self, call: Callable[[], _T]) -> _T:
        """Run ``call`` on the engine's thread (the warm-up)."""
        return await asyncio.get_running_loop().run_in_executor(self._gpu, call)

    def shutdown(self) -> None:
        self._gpu.shutdown(wait=True)

    # ----------------------------------------------------------------- batching
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

    def _queued_shapes(self, job_ids: list[int]) -> dict[int, tuple[GroupKey, int]]:
        """Batch key and image count of each of ``job_ids`` that is still queued."""
        shapes: dict[int, tuple[GroupKey, int]] = {}
        for job_id in job_ids:
            try:
                job = self.jobs.get(job_id)
            except JobNotFoundError:
                continue
            shape = stored_batch_shape(job) if job.status is JobStatus.QUEUED else None
            if shape is not None:
                shapes[job_id] = shape
        return shapes

    # ----------------------------------------------------------------- rendering
    async def plan(self, job: JobRecord) -> Plan:
        """The stored plan of ``job`` re-checked under its server's policy of now (raises
        :class:`~bot.planning.PromptRefused`); planned and stored first if it has none."""
        spec = job.spec
        if spec.plan is None:  # queued before plans were stored: planned once, now
            spec = plan_job(spec.request, self.settings, spec.channel)
            await self.db.run(self.jobs.set_plan, job.id, spec)
        assert spec.plan is not None
        policy = await self.db.run(current_policy, self.guilds, self.settings, job.guild_id)
        return decide(spec.plan, spec.channel, policy, tokenizer=self.tokenizer)

    async def render(self, jobs: list[JobRecord]) -> None:
        """Render jobs already marked running, in one engine call per batch key."""
        planned: list[tuple[JobRecord, Plan]] = []
        for job in jobs:
            try:
                planned.append((job, await self.plan(job)))
            except Exception as exc:  # refused by the policy now, or a wildcard gone
                await self._fail(job, f"the request cannot be rendered: {exc}", "not_renderable")
        groups: dict[GroupKey, list[tuple[JobRecord, Plan]]] = {}
        for job, plan in planned:
            groups.setdefault(group_key(job.id, plan.job), []).append((job, plan))
        for group in groups.values():
            await self._render_group(group)

    async def _render_group(
        self, group: list[tuple[JobRecord, Plan]], *, announce: bool = True
    ) -> None:
        """Render planned, compatible jobs in one engine call, then deliver each."""
        loop = asyncio.get_running_loop()
        tokens = [CancelToken() for _ in group]
        units = [plan.job.shape.work_units for _, plan in group]
        running = Running(
            {job.id: token for (job, _), token in zip(group, tokens, strict=True)},
            time.monotonic(),
            self.durations.estimate(sum(units)),
        )
        self.current = running
        if announce:
            for job, _ in group:
                self.telemetry.started(job)
                await self.notify(self.events.on_started(job))

        def reporter(job: JobRecord, plan: Plan) -> Callable[[Progress], None]:
            def progress(p: Progress) -> None:
                loop.call_soon_threadsafe(self._progress, job, plan, p)

            return progress

        renders = [plan.job for _, plan in group]
        callbacks = [reporter(job, plan) for job, plan in group]
        every = [await self.preview_interval(job) for job, _ in group]

        engine = self.local_engine
        init_image: Image.Image | None = None
        source = renders[0].image
        if source is not None:
            init_image = await asyncio.to_thread(self.input_image, source.source)
            if init_image is None:
                await self._fail(
                    group[0][0],
                    "its input image is no longer stored (removed by retention); attach it again",
                    "not_renderable",
                )
                return

        def call() -> list[RenderResult]:
            if len(group) == 1:  # the engine's one-job entry point (tests spy on it)
                return [
                    engine.render(
                        renders[0],
                        on_progress=callbacks[0],
                        cancel=tokens[0],
                        init_image=init_image,
                        preview_every=every[0],
                    )
                ]
            return engine.render_batch(
                renders, on_progress=callbacks, cancels=tokens, preview_every=every
            )

        future = loop.run_in_executor(self._gpu, call)
        limit = self.timeout * len(group)
        try:
            results = await asyncio.wait_for(asyncio.shield(future), limit)
        except TimeoutError:
            for token in tokens:
                token.cancel()
            await asyncio.gather(future, return_exceptions=True)
            for job, _ in group:
                await self._fail(
                    job, f"the job took longer than {limit:g} s and was stopped", "timed_out"
                )
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
            self._failures = [*self._failures[-FAILING_AFTER:], type(exc).__name__]
            for job, _ in group:
                await self._fail(job, f"internal error: {type(exc).__name__}", "internal")
            return
        self._failures = []
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
            self.telemetry.rendered(job, result.seconds)
            done.append((job, plan, result.images))
        if done:
            self.spawn(self._deliver_all(done))

    # ----------------------------------------------------------------- previews
    async def preview_interval(self, job: JobRecord) -> float | None:
        """Seconds between two live previews of ``job`` on this process's engine, or None
        for none (see the module docstring: :meth:`previews_wanted`, and the engine)."""
        if not self.settings.previews.active:
            return None
        engine = self.engine
        if isinstance(engine, Engine) and not self._previews_loaded:
            self._previews_loaded = True
            if engine.previewer is None:  # on the engine's thread, before the first job
                await self.on_thread(lambda: engine.load_previews(self.settings))
        previewer = getattr(engine, "previewer", None)
        if previewer is None or not previewer.on:
            return None
        return await self.previews_wanted(job)

    async def previews_wanted(self, job: JobRecord) -> float | None:
        """Seconds between two live previews of ``job`` as the bot sees it, whichever
        engine renders it, or None for none: off for the bot, for its server (its
        ``previews`` default), or while more than ``previews.busy_queue`` jobs wait. (The
        engine may still show none: no TAESD, or its auto-off.)"""
        settings = self.settings.previews
        if not settings.active:
            return None
        if len(self.queue) > settings.busy_queue:
            return None
        if job.guild_id is not None:
            defaults = await self.db.run(self.guilds.get_defaults, job.guild_id)
            if not previews_on(defaults):
                return None
        return settings.interval_s

    def _progress(self, job: JobRecord, plan: Plan, progress: Progress) -> None:
        """On the loop: a step's progress to the adapter; its preview once checked."""
        self.previews.offer(job, plan, progress)

    def input_image(self, name: str) -> Image.Image | None:
        """A stored input image's pixels (img2img), or None when it is gone or unreadable."""
        png = self.outbox.vault.read_input(name)
        if png is None:
            return None
        try:
            return stored_rgb(png)
        except ValueError as exc:
            log.warning("the stored input image %s is unreadable (%s)", name, exc)
            return None

    async def _cancelled(self, job: JobRecord, running: Running) -> None:
        """A running job stopped: cancelled, or back in the queue when the worker stops."""
        if self.stopping and job.id not in running.cancelled:
            await self.db.run(self.jobs.requeue, job.id)
            return
        record = await self.db.run(self.jobs.mark_cancelled, job.id, "cancelled while running")
        self.telemetry.cancelled(record)
        with job_context(job_id=job.id, guild_id=job.guild_id, channel_id=job.channel_id):
            await self.notify(self.events.on_cancelled(record))

    async def _fail(self, job: JobRecord, reason: str, kind: str = "engine") -> None:
        """The job failed: recorded, counted (``kind``: see :data:`~bot.observability.
        telemetry.FAILURE_KINDS`), and the member told."""
        with job_context(job_id=job.id, guild_id=job.guild_id, channel_id=job.channel_id):
            record = await self.db.run(self.jobs.mark_failed, job.id, reason)
            self.telemetry.failed(record, reason, kind)
            await self.notify(self.events.on_failed(record, reason))

    # ----------------------------------------------------------------- delivery
    async def _deliver_all(self, done: list[tuple[JobRecord, Plan, list[RenderedImage]]]) -> None:
        """Deliver finished jobs one after another: their events keep the fair order."""
        for job, plan, rendered in done:
            await self.notify(self._deliver(job, plan, rendered))

    async def _deliver(self, job: JobRecord, plan: Plan, rendered: list[RenderedImage]) -> None:
        with job_context(job_id=job.id, guild_id=job.guild_id, channel_id=job.channel_id):
            await self._output_and_deliver(job, plan, rendered)

    async def _output_and_deliver(
        self, job: JobRecord, plan: Plan, rendered: list[RenderedImage]
    ) -> None:
        started = time.perf_counter()
        try:
            outputs = await self.output.images(job, plan, rendered)
        except DatabaseError:
            raise  # see _finish: the job stays running, loudly
        except Exception as exc:  # the output step broke (encoding, the image check's thread)
            log.exception("job %s: its images could not be finished", job.id)
            await self._fail(
                job, f"internal error while finishing the images: {type(exc).__name__}", "output"
            )
            return
        if (
            outputs
            and self.output.classifier is not None
            and all(not image.verdict.posted and image.scores is None for image in outputs)
        ):
            # The image check is configured but rated none of them (its thread failed): the
            # member gets the cost back rather than a result made only of withheld images.
            await self._fail(
                job, f"the image check broke down ({outputs[0].verdict.reason})", "output"
            )
            return
        self.telemetry.withheld(job, outputs)
        # The images on disk first, then the job finished with its delivery pending (one
        # transaction): a crash in between renders the job again, never loses it.
        await self.outbox.keep(job, outputs)
        record = await self._finish(job)
        await self.outbox.deliver(record, outputs)
        self._record_seconds(job.id, {"deliver": time.perf_counter() - started})

    async def _finish(self, job: JobRecord) -> JobRecord:
        """The job finished, its delivery pending. A database that refuses (locked, disk
        full) is tried again for a while; then the error is raised and logged loudly, and
        the job stays running in the database, so the next start renders it again: an
        accepted job is never dropped."""
        for attempt in range(_FINISH_TRIES):
            try:
                return await self.db.run(
                    self.jobs.mark_finished, job.id, deliver_until=self.outbox.deadline()
                )
            except DatabaseError as exc:
                if attempt == _FINISH_TRIES - 1:
                    log.error(  # noqa: TRY400 - the reason is one line; the job is kept
                        "job %s: its result could not be recorded (%s); it stays running and "
                        "renders again at the next start",
                        job.id,
                        exc,
                    )
                    raise
                await asyncio.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    async def drain(self) -> None:
        """Wait until every started delivery is done."""
        while self._deliveries:
            await asyncio.gather(*list(self._deliveries), return_exceptions=True)

    def _record_seconds(self, job_id: int, seconds: dict[str, float]) -> None:
        self.last_job_seconds.setdefault(job_id, {}).update(seconds)
        while len(self.last_job_seconds) > _TIMINGS_KEPT:  # a bot runs for months
            self.last_job_seconds.popitem(last=False)

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(self.notify(coro))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    @staticmethod
    async def notify(coro: Awaitable[None]) -> None:
        try:
            await coro
        except Exception:
            log.exception("a job event handler failed")
