"""The core facade the adapters call: accept, cancel, inspect. No Discord here.

``interaction -> request -> checks -> queue -> engine -> result -> reply``: an adapter turns
what a member did into a :class:`~bot.request.GenerationRequest` and a
:class:`~bot.limits.Requester`, calls :meth:`ImagineService.submit`, and hears about the
job through the :class:`~bot.queue.events.JobEvents` it passed in. Every check happens
before anything is written; the job row and the rate-limit charge are written together, and
the job enters the queue only after that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from bot.admin import ServerAdmin
from bot.attachments import AttachmentRefused, prepare
from bot.config import Settings
from bot.engine import Engine
from bot.engine.front import PromptFront
from bot.errors import ReadableError, Text
from bot.jobspec import JobSpec
from bot.limits import Accepted, Allowance, RateLimiter, Refusal, Requester
from bot.moderation import ChannelContext, GuildPolicy, PromptDecision
from bot.moderation.image_check import input_refusal
from bot.moderation.prompt_check import warm_up as warm_moderation
from bot.observability.telemetry import Telemetry
from bot.outbox import Outbox
from bot.planning import PromptRefused, current_policy, decide, plan_job
from bot.queue.base import JobQueue, QueueEntry, QueueFull
from bot.queue.events import JobEvents, OutputImage
from bot.queue.fair import FairQueue
from bot.queue.output import Classifier, ImageOutput
from bot.queue.protocol import Heartbeat
from bot.queue.redis_backend import RedisDispatcher
from bot.queue.render import Renderer
from bot.queue.worker import Worker
from bot.request import Aspect, GenerationRequest, ImagePrompt, validate_request
from bot.storage.database import Database
from bot.storage.jobs import JobNotFoundError, JobRecord, JobStore, NewJob
from bot.storage.members import GuildStore, MemberStore
from bot.storage.models import JobStatus

log = logging.getLogger(__name__)


class SubmitRefused(ReadableError):
    """The request was not queued; ``message`` (and :attr:`text`) is for the member.

    ``refusal`` is set when a rate limit refused it, ``decision`` when the channel's policy
    did (``decision.decision`` is ``refuse`` or ``hard-block``; the event is already logged).
    """

    def __init__(
        self,
        message: str | Text,
        *,
        refusal: Refusal | None = None,
        decision: PromptDecision | None = None,
    ) -> None:
        super().__init__(message)
        self.message = str(self.text)
        self.refusal = refusal
        self.decision = decision


class NotAllowed(ReadableError):
    """The member may not do that to this job (the message says why, for them)."""


@dataclass(frozen=True)
class Destination:
    """Where the answer about a job goes (filled by the adapter, opaque to the core)."""

    channel_id: int | None = None
    interaction_token: str | None = field(default=None, repr=False)
    interaction_expires_at: datetime | None = None
    age_restricted: bool = False  # Discord's nsfw flag (a thread's parent's for a thread)
    is_dm: bool = False
    is_thread: bool = False
    locale: str | None = None  # the member's language: the job's messages are written in it

    @property
    def channel(self) -> ChannelContext:
        return ChannelContext(self.age_restricted and not self.is_dm, self.is_dm, self.is_thread)


@dataclass(frozen=True)
class Submitted:
    job: JobRecord
    position: int  # 1: next to run (0: running already)
    eta_seconds: float
    cost: int
    daily_remaining: int | None


@dataclass(frozen=True)
class QueuedJob:
    job: JobRecord
    position: int  # 0 for the running job
    eta_seconds: float


@dataclass(frozen=True)
class QueueStatus:
    mine: list[QueuedJob]
    length: int  # jobs waiting, all members
    running: bool
    eta_empty_seconds: float  # until the whole queue is done
    warming_up: bool = False  # the engine is still compiling; jobs wait


@dataclass(frozen=True)
class WorkerStatus:
    """One remote GPU worker as its latest heartbeat describes it (the Redis backend)."""

    name: str
    host: str
    gpu: str
    model: str
    state: str  # "idle", "rendering", "draining", "starting", or "refused (protocol N)"
    jobs_done: int
    seconds_since_heartbeat: float
    counted: bool  # taking jobs: counted for dispatch and ETAs

    @classmethod
    def of(cls, beat: Heartbeat, now: float, counted: bool) -> WorkerStatus:
        state = beat.state if beat.compatible else f"refused (protocol {beat.version})"
        return cls(
            beat.name,
            beat.host,
            beat.gpu,
            beat.model,
            state,
            beat.jobs_done,
            max(0.0, now - beat.at),
            counted,
        )


@dataclass(frozen=True)
class ClassifierStatus:
    """Whether the image check runs, for ``/settings show``."""

    loaded: bool
    problem: str | None  # why it is not loaded, or what the hard block lacks; None: all well


class ImagineService:
    """Accepts jobs, queues them fairly, and runs them on one engine."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        engine: Engine | PromptFront,
        events: JobEvents,
        *,
        queue: JobQueue | None = None,
        limiter: RateLimiter | None = None,
        classifier: Classifier | None = None,
        classifier_error: str | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        # Logs each step of a job's life, and counts it when metrics are on.
        self.telemetry = telemetry or Telemetry()
        self.jobs = JobStore(db)
        self.guilds = GuildStore(db)
        self.members = MemberStore(db)
        self.admin = ServerAdmin(
            settings,
            db,
            jobs=self.jobs,
            guilds=self.guilds,
            members=self.members,
            cancel=self.cancel,
        )
        self.limiter = limiter or RateLimiter(db, settings.limits)
        self.queue: JobQueue = queue or FairQueue(settings.queue.max_length)
        self.outbox = Outbox(settings, db, self.jobs, events, telemetry=self.telemetry)
        self.renderer = Renderer(
            settings=settings,
            db=db,
            jobs=self.jobs,
            queue=self.queue,
            engine=engine,
            events=events,
            output=ImageOutput(db, self.jobs, classifier, classifier_error),
            outbox=self.outbox,
            telemetry=self.telemetry,
        )
        # Where jobs render: this process's engine, or remote workers through Redis.
        self.worker: Worker | RedisDispatcher = (
            RedisDispatcher(self.renderer)
            if settings.queue.backend == "redis"
            else Worker(self.renderer)
        )
        self.accepting = True
        self._warm_up: asyncio.Task[None] | None = None
        self._units: dict[int, float] = {}

    # ------------------------------------------------------------ lifecycle
    async def restore(self) -> int:
        """Put jobs accepted before a restart back in the queue; returns how many.

        An interrupted running job starts again first; queued jobs keep their order. With
        the Redis backend, Redis is reached first (:class:`~bot.queue.redis_backend.
        RedisUnavailable` when it cannot be) and running jobs stay with the workers: their
        results are delivered when they come, and those Redis lost are sent again.
        """
        await self._learn_durations()
        policy = await self.policy(None)
        await asyncio.to_thread(warm_moderation, policy, self.tokenizer)
        if isinstance(self.worker, RedisDispatcher):
            await self.worker.connect()
            active = await self.db.run(self.jobs.active)
            await self.worker.adopt([j for j in active if j.status is JobStatus.RUNNING])
            interrupted: list[JobRecord] = []
        else:
            interrupted = await self.db.run(self.jobs.requeue_interrupted)
        queued = await self.db.run(self.jobs.queued)
        front = {j.id for j in interrupted}
        for job in queued:
            entry = self._entry(job)
            if job.id in front:
                self.queue.put_front(entry)
            else:
                self.queue.put(entry, force=True)  # accepted work is never dropped
        return len(queued)

    async def _learn_durations(self) -> None:
        """Seed the ETA model with the times of recently finished jobs."""
        recent = await self.db.run(self.jobs.recent_finished, 20)
        for job in reversed(recent):
            if job.started_at is None or job.finished_at is None:
                continue
            units = job.spec.shape.work_units
            seconds = (job.finished_at - job.started_at).total_seconds()
            self.worker.durations.record(units, seconds)

    def start(self) -> None:
        """Start the worker; when the engine is compiled, warm it up first (jobs queue
        meanwhile, and commands keep being answered). The outbox resumes the deliveries
        left pending."""
        self.worker.start()
        self.outbox.start()
        if not self.worker.ready.is_set():
            self._warm_up = asyncio.create_task(self.worker.warm_up(), name="warm-up")

    @property
    def warming_up(self) -> bool:
        return not self.worker.ready.is_set()

    async def stop(self, grace: float = 30.0) -> None:
        self.accepting = False
        await self.worker.stop(grace)
        await self.outbox.stop(min(grace, 10.0))

    # ------------------------------------------------------------ planning
    async def image_prompt(
        self,
        data: bytes,
        channel: ChannelContext,
        guild_id: int | None,
        *,
        strength: float,
        aspect: Aspect | None = None,
        user_id: int | None = None,
    ) -> tuple[ImagePrompt, Aspect, tuple[int, int]]:
        """An attached image made an img2img input: bounded, decoded and fitted
        (:func:`bot.attachments.prepare`), rated by the image classifier and judged as a
        result in ``channel`` would be (:func:`~bot.moderation.image_check.input_refusal`),
        then stored in the image vault. An input the hard block refuses is recorded as an
        ``image_hard_blocked`` moderation event of ``user_id`` (the image is not kept).
        Returns the request's :class:`ImagePrompt`, the aspect, and the size the image was
        fitted to. Raises :class:`AttachmentRefused`."""
        prepared = await asyncio.to_thread(prepare, data, self.settings.engine, aspect)
        scores, error = await self.renderer.output.rate(prepared.image)
        policy = await self.policy(guild_id)
        refused = input_refusal(scores, channel, policy, error=error)
        if refused is not None:
            if refused.hard_block:
                # Moderators see who tried (the image itself is kept nowhere).
                await self.record_hard_blocked_input(
                    "image prompt", str(refused.reason), channel, guild_id=guild_id, user_id=user_id
                )
            raise AttachmentRefused(
                "the attached image cannot be used here: {reason}", reason=refused.reason
            )
        png = await asyncio.to_thread(prepared.png)
        try:
            name = await asyncio.to_thread(self.outbox.vault.keep_input, png)
        except OSError as exc:
            log.error("cannot store an input image in %s: %s", self.outbox.vault.inputs, exc)  # noqa: TRY400
            raise AttachmentRefused("the bot cannot store the image right now (disk)") from None
        return ImagePrompt(source=name, strength=strength), prepared.aspect, prepared.image.size

    async def record_hard_blocked_input(
        self,
        source: str,
        reason: str,
        channel: ChannelContext,
        *,
        guild_id: int | None,
        user_id: int | None,
    ) -> None:
        """An image a member gave (an image prompt, an image to describe) tripped the hard
        block: one warning line and an ``image_hard_blocked`` moderation event, so moderators
        see who tried. The image itself is kept nowhere."""
        log.warning("an image given for %s was refused by the hard block: %s", source, reason)
        await self.db.run(
            self.members.record_event,
            "image_hard_blocked",
            guild_id=guild_id,
            user_id=user_id,
            reason=reason,
            details={"source": source, "channel": channel.kind.value},
        )

    async def policy(self, guild_id: int | None) -> GuildPolicy:
        """The moderation policy in force in a server (configured defaults + its overrides)."""
        return await self.db.run(current_policy, self.guilds, self.settings, guild_id)

    @property
    def tokenizer(self) -> object | None:
        """The loaded model's CLIP tokenizer, which the policy reads prompts with (None when
        the engine has none: the policy then uses the CLIP tokenizer shipped with it)."""
        return self.renderer.tokenizer

    def _priority(self, role_ids: frozenset[int]) -> int:
        return max(
            (p.priority for p in self.settings.queue.priority_roles if p.role_id in role_ids),
            default=0,
        )

    def _entry(self, job: JobRecord, role_ids: frozenset[int] = frozenset()) -> QueueEntry:
        units = self._units.get(job.id)
        if units is None:
            units = job.spec.shape.work_units
            self._units[job.id] = units
        owner = f"{job.guild_id or 0}:{job.user_id}"
        return QueueEntry(job.id, owner, self._priority(role_ids), units)

    # ------------------------------------------------------------ commands
    async def submit(
        self,
        request: GenerationRequest,
        who: Requester,
        where: Destination,
        *,
        planned: JobSpec | None = None,
    ) -> Submitted:
        """Check, charge, record and queue a request, planned once here (or by the adapter:
        ``planned`` is :func:`~bot.planning.plan_job`'s result for this very request, which
        is then stored as it is; one planned for another channel is planned again).

        Raises :class:`~bot.request.RequestError` and :class:`~bot.prompts.PromptError`
        for bad input, :class:`SubmitRefused` for limits, a full queue or shutdown.
        """
        if not self.accepting:
            self._refused("restarting", who, where)
            raise SubmitRefused("the bot is restarting; try again in a minute")
        channel = where.channel
        spec = planned if planned is not None and planned.channel == channel else None
        if spec is None:
            checked = validate_request(request, self.settings.engine)
            spec = plan_job(checked, self.settings, channel)
        assert spec.plan is not None
        try:
            plan = decide(
                spec.plan, channel, await self.policy(who.guild_id), tokenizer=self.tokenizer
            )
        except PromptRefused as exc:
            self.telemetry.prompt_refused(
                exc.decision.code, guild_id=who.guild_id, channel_id=where.channel_id
            )
            await self._log_refusal(exc.decision, spec.request, who, where)
            raise SubmitRefused(exc.decision.reason, decision=exc.decision) from None
        # Too long for the encoder: say so now, not after the job waited in the queue.
        self.renderer.check_length(plan.job)
        if len(self.queue) >= self.queue.max_length:
            self._refused("queue_full", who, where)
            raise SubmitRefused(QueueFull(self.queue.max_length).text)
        new = NewJob.of(
            spec,
            channel_id=where.channel_id,
            interaction_token=where.interaction_token,
            interaction_expires_at=where.interaction_expires_at,
            locale=where.locale,
        )
        decision = await self.db.run(self.limiter.accept_job, who, new, plan.job.shape)
        if isinstance(decision, Refusal):
            self._refused(decision.limit.value, who, where)
            raise SubmitRefused(decision.message, refusal=decision)
        assert isinstance(decision, Accepted)
        entry = self._entry(decision.job, who.role_ids)
        try:
            self.queue.put(entry)
        except QueueFull as exc:
            await self.db.run(self.jobs.mark_cancelled, decision.job.id, "queue full")
            self._refused("queue_full", who, where)
            raise SubmitRefused(exc.text) from None
        position, eta = self._position(decision.job.id)
        self.telemetry.accepted(decision.job, position)
        return Submitted(decision.job, position, eta, decision.cost, decision.daily_remaining)

    def _refused(self, reason: str, who: Requester, where: Destination) -> None:
        self.telemetry.request_refused(reason, guild_id=who.guild_id, channel_id=where.channel_id)

    async def _log_refusal(
        self,
        decision: PromptDecision,
        request: GenerationRequest,
        who: Requester,
        where: Destination,
    ) -> None:
        kind = decision.event_kind
        if kind is None:
            return
        await self.db.run(
            self.members.record_event,
            kind,
            guild_id=who.guild_id,
            user_id=who.user_id,
            reason=str(decision.reason),
            details={
                "prompt": request.prompt,
                "negative_prompt": request.negative_prompt,
                "rating": request.rating,
                "matched": list(decision.matched),
                "channel_id": where.channel_id,
            },
        )

    async def cancel(self, job_id: int, who: Requester, *, moderator: bool = False) -> JobRecord:
        """Cancel a queued or running job of ``who`` (any job for a moderator)."""
        job = await self.job(job_id)
        if job.user_id != who.user_id and not moderator:
            raise NotAllowed(
                "only the member who asked for this job, or a moderator, can cancel it"
            )
        if job.status is JobStatus.QUEUED and self.queue.remove(job_id):
            record = await self.db.run(self.jobs.mark_cancelled, job_id, "cancelled while queued")
            self.telemetry.cancelled(record)
            await self.worker.events.on_cancelled(record)
            return record
        if job.status is JobStatus.RUNNING and self.worker.cancel(job_id):
            return job
        raise NotAllowed("job {job} is already {status}", job=job_id, status=job.status.value)

    async def job(self, job_id: int) -> JobRecord:
        try:
            return await self.db.run(self.jobs.get, job_id)
        except JobNotFoundError:
            raise NotAllowed("there is no job {job}", job=job_id) from None

    async def kept_images(
        self, who: Requester, job_id: int | None = None, *, age_restricted_here: bool = False
    ) -> tuple[JobRecord, list[OutputImage]]:
        """A member's own finished job (``job_id``, or their latest whose images are still
        kept) and its images as delivered, read back from the outbox; only the images the
        member may see where they ask (withheld ones never; from an age-restricted channel,
        elsewhere only those plain-channel rules would post). Raises :class:`NotAllowed`
        with the reason."""
        if job_id is None:
            recent = await self.db.run(
                self.jobs.recent_results, who.user_id, guild_id=who.guild_id, limit=25
            )
            for job in recent:
                images = await self.outbox.load(job)
                if images is not None:
                    return job, _visible(job, images, age_restricted_here=age_restricted_here)
            raise NotAllowed("you have no finished job whose images are still kept")
        job = await self.job(job_id)
        if job.user_id != who.user_id or job.guild_id != who.guild_id:
            raise NotAllowed("job #{job} is not one of yours here", job=job_id)
        if job.status is not JobStatus.FINISHED:
            raise NotAllowed(
                "job #{job} has no images ({status})", job=job_id, status=job.status.value
            )
        images = await self.outbox.load(job)
        if images is None:
            days = self.settings.delivery.keep_days
            raise NotAllowed(
                "the images of job #{job} are no longer kept ({days} days)",
                job=job_id,
                days=f"{days:g}",
            )
        return job, _visible(job, images, age_restricted_here=age_restricted_here)

    async def allowance(self, who: Requester) -> Allowance:
        return await self.db.run(self.limiter.allowance, who)

    # ------------------------------------------------------------ queue view
    def _plan_queue(self) -> tuple[dict[int, tuple[int, float]], float]:
        """Every active job -> (position, seconds until it is done), and the seconds until
        the whole queue is done. Running jobs (and, with Redis, jobs handed to a worker)
        are at position 0. Waiting jobs go in fair order to the first renderer that is
        free: the one engine, or each live, compatible Redis worker."""
        worker = self.worker
        if isinstance(worker, RedisDispatcher):
            placed = {job_id: (0, left) for job_id, left in worker.in_flight_seconds().items()}
            slots = worker.slots()
        else:
            left = worker.remaining_seconds()
            placed = dict.fromkeys(worker.running_job_ids, (0, left))
            slots = [left]
        for index, entry in enumerate(self.queue.order(), start=1):
            free = slots.index(min(slots))
            slots[free] += worker.durations.estimate(entry.units)
            placed[entry.job_id] = (index, slots[free])
        return placed, max(slots)

    def _position(self, job_id: int) -> tuple[int, float]:
        return self._plan_queue()[0].get(job_id, (0, 0.0))

    def classifier_status(self) -> ClassifierStatus:
        """Whether the image classifier is loaded and has what the image hard block needs."""
        classifier = self.worker.classifier
        if classifier is None:
            return ClassifierStatus(False, self.worker.classifier_error or "none configured")
        return ClassifierStatus(True, classifier.problem)

    async def status(self, who: Requester) -> QueueStatus:
        """The member's waiting and running jobs with positions and ETAs."""
        mine = await self.db.run(self.jobs.active, guild_id=who.guild_id, user_id=who.user_id)
        placed, total = self._plan_queue()
        listed = [QueuedJob(job, *placed.get(job.id, (0, 0.0))) for job in mine]
        listed.sort(key=lambda q: q.position)
        return QueueStatus(
            listed,
            len(self.queue),
            self.worker.running_job_id is not None,
            total,
            warming_up=self.warming_up,
        )

    def workers(self) -> list[WorkerStatus] | None:
        """The remote workers that reported lately (Redis backend), by name; ``None`` when
        jobs render in this process (the embedded backend)."""
        if not isinstance(self.worker, RedisDispatcher):
            return None
        live = {beat.name for beat in self.worker.live_workers}
        now = time.time()
        return [WorkerStatus.of(b, now, b.name in live) for b in self.worker.workers]

    async def run_burst(self) -> int:
        """Run every waiting job now (tests, the CLI): see :meth:`Worker.run_burst`."""
        return await self.worker.run_burst()


def _visible(
    job: JobRecord, images: list[OutputImage], *, age_restricted_here: bool
) -> list[OutputImage]:
    """What a member may fetch again where they ask (see :meth:`ImagineService.kept_images`)."""
    strict = job.channel.age_restricted and not age_restricted_here
    return [
        image
        for image in images
        if image.png
        and image.verdict.posted
        and not (strict and (image.verdict.flagged or image.scores is None))
    ]
