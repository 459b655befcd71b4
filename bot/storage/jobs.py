"""The job repository: jobs from queueing to their end, their images, and refunds.

Jobs normally enter through :meth:`bot.limits.RateLimiter.accept_job`, which charges the
rate limits and inserts the job in one transaction; :meth:`JobStore.add` inserts one without
limits (for the CLI and tests). What a job renders is stored typed
(:class:`~bot.jobspec.JobSpec`: request, channel, plan) and read back through
:class:`JobRecord`'s properties, never as a dict. Every method is synchronous: call it
from the event loop via ``await db.run(store.mark_started, job_id)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import bindparam, case, func, or_, select
from sqlalchemy.orm import Session

from bot.jobspec import JobSpec, StoredPlan
from bot.moderation.channels import ChannelContext
from bot.request import GenerationRequest
from bot.storage.clock import as_utc
from bot.storage.database import Store, serialize
from bot.storage.models import ACTIVE_STATUSES, Image, Job, JobStatus, RateLimitState
from bot.storage.ratelimit import member_key, refund_state, server_key


class JobNotFoundError(LookupError):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"job {job_id} does not exist")
        self.job_id = job_id


class JobStateError(Exception):
    """A job cannot make the requested transition (for example finishing a queued job)."""

    def __init__(self, job_id: int, status: JobStatus, wanted: JobStatus) -> None:
        super().__init__(f"job {job_id} is {status.value}; it cannot become {wanted.value}")
        self.job_id = job_id
        self.status = status
        self.wanted = wanted


LOCALE_KEY: Final = "locale"
"""The request row's key for the requester's language (beside the channel's flags)."""
MAX_LOCALE: Final = 16


@dataclass(frozen=True, slots=True)
class NewJob:
    """A request about to be queued, with where its answer goes.

    ``request_data`` and ``plan_data`` are the rows of a :class:`~bot.jobspec.JobSpec`
    (:meth:`NewJob.of` writes them); storage tests may put any mapping there.
    """

    request_data: Mapping[str, Any]
    channel_id: int | None = None
    message_id: int | None = None
    interaction_token: str | None = field(default=None, repr=False)
    interaction_expires_at: datetime | None = None
    plan_data: Mapping[str, Any] | None = None

    @classmethod
    def of(
        cls,
        spec: JobSpec,
        *,
        channel_id: int | None = None,
        interaction_token: str | None = None,
        interaction_expires_at: datetime | None = None,
        locale: str | None = None,
    ) -> NewJob:
        row = spec.request_row()
        if locale is not None:
            row[LOCALE_KEY] = locale[:MAX_LOCALE]
        return cls(
            row,
            channel_id=channel_id,
            interaction_token=interaction_token,
            interaction_expires_at=interaction_expires_at,
            plan_data=spec.plan_row(),
        )


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A snapshot of one job row; what it renders is read typed (:attr:`spec`,
    :attr:`request`, :attr:`channel`, :attr:`plan`)."""

    id: int
    status: JobStatus
    request_data: dict[str, Any]
    guild_id: int | None
    channel_id: int | None
    user_id: int
    message_id: int | None
    interaction_token: str | None = field(repr=False)
    interaction_expires_at: datetime | None
    position: int
    cost: int
    failure_reason: str | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    failed_at: datetime | None
    cancelled_at: datetime | None
    refunded_at: datetime | None
    plan_data: dict[str, Any] | None = None
    delivery: str | None = None  # the outbox: "pending", "delivered", "expired"
    delivery_attempts: int = 0
    delivery_posted: int = 0  # posts of the result already out (never posted twice)
    delivery_next_at: datetime | None = None
    delivery_until: datetime | None = None
    delivered_at: datetime | None = None
    delivery_error: str | None = None
    deleted_at: datetime | None = None  # its posted images deleted (the Delete button)

    @property
    def spec(self) -> JobSpec:
        """What the job stores: request, channel and plan."""
        return JobSpec.of_row(self.request_data, self.plan_data)

    @property
    def request(self) -> GenerationRequest:
        """The validated request, as the member gave it (with its seed)."""
        return JobSpec.request_of(self.request_data)

    @property
    def channel(self) -> ChannelContext:
        """The channel the job was asked for in."""
        return JobSpec.channel_of(self.request_data)

    @property
    def locale(self) -> str | None:
        """The language of the member who asked (their client's, e.g. ``ja``): the job's
        messages are written in it. None for jobs stored before it was kept."""
        value = self.request_data.get(LOCALE_KEY)
        return value if isinstance(value, str) else None

    @property
    def plan(self) -> StoredPlan | None:
        """The render planned when the job was accepted (None: queued before plans were
        stored)."""
        return JobSpec.plan_of(self.plan_data)

    @classmethod
    def of(cls, job: Job) -> JobRecord:
        return cls(
            id=job.id,
            status=JobStatus(job.status),
            request_data=dict(job.request),
            plan_data=None if job.plan is None else dict(job.plan),
            guild_id=job.guild_id,
            channel_id=job.channel_id,
            user_id=job.user_id,
            message_id=job.message_id,
            interaction_token=job.interaction_token,
            interaction_expires_at=job.interaction_expires_at,
            position=job.position,
            cost=job.cost,
            failure_reason=job.failure_reason,
            queued_at=job.queued_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            failed_at=job.failed_at,
            cancelled_at=job.cancelled_at,
            refunded_at=job.refunded_at,
            delivery=job.delivery,
            delivery_attempts=job.delivery_attempts or 0,
            delivery_posted=job.delivery_posted or 0,
            delivery_next_at=job.delivery_next_at,
            delivery_until=job.delivery_until,
            delivered_at=job.delivered_at,
            delivery_error=job.delivery_error,
            deleted_at=job.deleted_at,
        )


@dataclass(frozen=True, slots=True)
class ImageRecord:
    id: int
    job_id: int
    index: int
    seed: int
    width: int
    height: int
    content_hash: str
    moderation_scores: dict[str, float] | None
    created_at: datetime
    verdict: dict[str, Any] | None = None
    infotext: dict[str, Any] | None = None
    stored_bytes: int = 0  # the PNG kept in delivery.images_dir (0: none)

    @classmethod
    def of(cls, image: Image) -> ImageRecord:
        return cls(
            id=image.id,
            job_id=image.job_id,
            index=image.index,
            seed=image.seed,
            width=image.width,
            height=image.height,
            content_hash=image.content_hash,
            moderation_scores=image.moderation_scores,
            created_at=image.created_at,
            verdict=image.verdict,
            infotext=image.infotext,
            stored_bytes=image.stored_bytes or 0,
        )


_ACTIVE = Job.status.in_([s.value for s in JobStatus if s.is_active])
_LAST_POSITION = select(func.max(Job.position)).where(_ACTIVE)
_MEMBER_ACTIVE = case((Job.user_id == bindparam("user_id"), 1), else_=0)
_ACTIVE_IN_GUILD = select(func.count(), func.coalesce(func.sum(_MEMBER_ACTIVE), 0)).where(
    _ACTIVE, Job.guild_id == bindparam("guild_id")
)
_ACTIVE_IN_DIRECT = select(func.count(), func.coalesce(func.sum(_MEMBER_ACTIVE), 0)).where(
    _ACTIVE, Job.guild_id.is_(None)
)


def insert_job(
    session: Session,
    job: NewJob,
    *,
    user_id: int,
    guild_id: int | None,
    now: datetime,
    cost: int = 0,
    charge_period: datetime | None = None,
) -> Job:
    """Add a queued job behind every active one, inside the caller's transaction.

    Positions are distinct: jobs are queued one at a time (:func:`serialize`).
    """
    serialize(session, "jobs.position")
    last = session.scalar(_LAST_POSITION)
    expires = job.interaction_expires_at
    row = Job(
        status=JobStatus.QUEUED,
        request=dict(job.request_data),
        plan=None if job.plan_data is None else dict(job.plan_data),
        guild_id=guild_id,
        channel_id=job.channel_id,
        user_id=user_id,
        message_id=job.message_id,
        interaction_token=job.interaction_token,
        interaction_expires_at=None if expires is None else as_utc(expires),
        position=(last or 0) + 1,
        cost=cost,
        charge_period=charge_period,
        queued_at=now,
    )
    session.add(row)
    session.flush()
    return row


def count_active(session: Session, *, guild_id: int | None, user_id: int) -> tuple[int, int]:
    """Jobs waiting or running: ``(the member's, the whole server's)`` (in direct
    messages, the second counts everyone's direct-message jobs)."""
    query = _ACTIVE_IN_DIRECT if guild_id is None else _ACTIVE_IN_GUILD
    row = session.execute(query, {"guild_id": guild_id, "user_id": user_id}).one()
    return int(row[1]), int(row[0])


def refund_job(session: Session, job: Job, now: datetime) -> int:
    """Give a failed (or cancelled-before-start) job's cost back; 0 if not due or done."""
    due = job.status is JobStatus.FAILED or (
        job.status is JobStatus.CANCELLED and job.started_at is None
    )
    if not due or job.cost <= 0 or job.refunded_at is not None:
        return 0
    keys = [member_key(job.guild_id, job.user_id)]
    if job.guild_id is not None:
        keys.insert(0, server_key(job.guild_id))  # lock order: server, then member
    for key in keys:
        row = session.scalars(
            select(RateLimitState)
            .where(
                RateLimitState.scope == key[0],
                RateLimitState.guild_id == key[1],
                RateLimitState.user_id == key[2],
            )
            .with_for_update()
        ).one_or_none()
        if row is not None:
            refund_state(row, job.cost, job.charge_period)
    job.refunded_at = now
    return job.cost


class JobStore(Store):
    """Jobs and their images."""

    @staticmethod
    def _locked(session: Session, job_id: int) -> Job:
        job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).one_or_none()
        if job is None:
            raise JobNotFoundError(job_id)
        return job

    def add(self, job: NewJob, *, user_id: int, guild_id: int | None = None) -> JobRecord:
        """Queue a job without charging any limit."""
        with self.db.transaction() as session:
            row = insert_job(session, job, user_id=user_id, guild_id=guild_id, now=self._now())
            return JobRecord.of(row)

    def get(self, job_id: int) -> JobRecord:
        with self.db.read() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise JobNotFoundError(job_id)
            return JobRecord.of(job)

    def queued(self, limit: int | None = None) -> list[JobRecord]:
        """Queued jobs, first to run first."""
        query = (
            select(Job)
            .where(Job.status == JobStatus.QUEUED)
            .order_by(Job.position, Job.id)
            .limit(limit)
        )
        with self.db.read() as session:
            return [JobRecord.of(j) for j in session.scalars(query)]

    def active(self, *, guild_id: int | None = None, user_id: int | None = None) -> list[JobRecord]:
        """Queued and running jobs (optionally of one server and/or member), in queue order."""
        query = select(Job).where(Job.status.in_(list(ACTIVE_STATUSES)))
        if guild_id is not None:
            query = query.where(Job.guild_id == guild_id)
        if user_id is not None:
            query = query.where(Job.user_id == user_id)
        with self.db.read() as session:
            return [JobRecord.of(j) for j in session.scalars(query.order_by(Job.position, Job.id))]

    def _transition(
        self,
        job_id: int,
        wanted: JobStatus,
        allowed_from: frozenset[JobStatus],
        *,
        reason: str | None = None,
        refund: bool = False,
        deliver_until: datetime | None = None,
    ) -> JobRecord:
        now = self._now()
        with self.db.transaction() as session:
            job = self._locked(session, job_id)
            if job.status not in allowed_from:
                raise JobStateError(job_id, JobStatus(job.status), wanted)
            job.status = wanted
            if wanted is JobStatus.RUNNING:
                job.started_at = now
            elif wanted is JobStatus.FINISHED:
                job.finished_at = now
            elif wanted is JobStatus.FAILED:
                job.failed_at = now
            elif wanted is JobStatus.CANCELLED:
                job.cancelled_at = now
            if reason is not None:
                job.failure_reason = reason
            if refund:
                refund_job(session, job, now)
            if deliver_until is not None:
                job.delivery = "pending"
                job.delivery_next_at = now
                job.delivery_until = deliver_until
            session.flush()
            return JobRecord.of(job)

    def mark_started(self, job_id: int) -> JobRecord:
        """queued → running."""
        return self._transition(job_id, JobStatus.RUNNING, frozenset({JobStatus.QUEUED}))

    def recent_finished(self, limit: int = 20) -> list[JobRecord]:
        """The most recently finished jobs, newest first (to estimate job times)."""
        query = (
            select(Job)
            .where(Job.status == JobStatus.FINISHED)
            .order_by(Job.finished_at.desc(), Job.id.desc())
            .limit(limit)
        )
        with self.db.read() as session:
            return [JobRecord.of(j) for j in session.scalars(query)]

    def requeue(self, job_id: int) -> JobRecord:
        """running → queued, keeping its place: a job interrupted by a shutdown resumes."""
        with self.db.transaction() as session:
            job = self._locked(session, job_id)
            if job.status is not JobStatus.RUNNING:
                raise JobStateError(job_id, JobStatus(job.status), JobStatus.QUEUED)
            job.status = JobStatus.QUEUED
            job.started_at = None
            session.flush()
            return JobRecord.of(job)

    def requeue_interrupted(self) -> list[JobRecord]:
        """Every job left running by a previous process goes back to the queue."""
        with self.db.transaction() as session:
            rows = session.scalars(
                select(Job).where(Job.status == JobStatus.RUNNING).order_by(Job.position, Job.id)
            ).all()
            for job in rows:
                job.status = JobStatus.QUEUED
                job.started_at = None
            session.flush()
            return [JobRecord.of(j) for j in rows]

    def mark_finished(self, job_id: int, *, deliver_until: datetime | None = None) -> JobRecord:
        """running → finished; with ``deliver_until``, its delivery starts as pending (the
        outbox tries until then), in the same transaction."""
        return self._transition(
            job_id,
            JobStatus.FINISHED,
            frozenset({JobStatus.RUNNING}),
            deliver_until=deliver_until,
        )

    # ----------------------------------------------------------------- the outbox
    def delivery_attempted(
        self, job_id: int, *, posted: int, next_at: datetime, error: str
    ) -> JobRecord:
        """An attempt that did not finish: ``posted`` posts are out, the next is due at
        ``next_at``."""
        with self.db.transaction() as session:
            job = self._locked(session, job_id)
            job.delivery_attempts = (job.delivery_attempts or 0) + 1
            job.delivery_posted = max(job.delivery_posted or 0, posted)
            job.delivery_next_at = next_at
            job.delivery_error = error[:2000]
            session.flush()
            return JobRecord.of(job)

    def settle_delivery(self, job_id: int, state: str, *, error: str | None = None) -> JobRecord:
        """The delivery ends: ``delivered``, or ``expired`` (tried until its deadline, or
        refused for good)."""
        if state not in ("delivered", "expired"):
            raise ValueError(f"not a final delivery state: {state!r}")
        with self.db.transaction() as session:
            job = self._locked(session, job_id)
            job.delivery = state
            job.delivery_attempts = (job.delivery_attempts or 0) + 1
            job.delivery_next_at = None
            if state == "delivered":
                job.delivered_at = self._now()
            job.delivery_error = None if error is None else error[:2000]
            job.interaction_token = None  # not needed any more
            session.flush()
            return JobRecord.of(job)

    def pending_deliveries(self) -> list[JobRecord]:
        """Finished jobs whose result is not delivered yet, the most overdue first."""
        with self.db.read() as session:
            rows = session.scalars(
                select(Job).where(Job.delivery == "pending").order_by(Job.delivery_next_at, Job.id)
            )
            return [JobRecord.of(j) for j in rows]

    def input_images_in_use(self) -> set[str]:
        """The input images (img2img, see :class:`~bot.request.ImagePrompt`) that jobs
        still need: queued or running ones, and those whose delivery is pending."""
        query = select(Job.request).where(
            or_(Job.status.in_(list(ACTIVE_STATUSES)), Job.delivery == "pending")
        )
        names: set[str] = set()
        with self.db.read() as session:
            for row in session.scalars(query):
                request = row.get("request") if isinstance(row, dict) else None
                image = request.get("image") if isinstance(request, dict) else None
                if isinstance(image, dict) and isinstance(image.get("source"), str):
                    names.add(image["source"])
        return names

    def set_stored(self, image_id: int, stored_bytes: int) -> None:
        """The size of the image's kept PNG (0: removed)."""
        with self.db.transaction() as session:
            image = session.get(Image, image_id)
            if image is not None:
                image.stored_bytes = stored_bytes

    def stored_images(self) -> list[tuple[ImageRecord, str | None]]:
        """Every image with a kept PNG, oldest first, with its job's delivery state."""
        with self.db.read() as session:
            rows = session.execute(
                select(Image, Job.delivery)
                .join(Job, Job.id == Image.job_id)
                .where(Image.stored_bytes > 0)
                .order_by(Image.created_at, Image.id)
            )
            return [(ImageRecord.of(image), delivery) for image, delivery in rows]

    def recent_results(
        self, user_id: int, *, guild_id: int | None, limit: int = 10
    ) -> list[JobRecord]:
        """A member's recent finished jobs (in one server, or in direct messages), newest
        first."""
        with self.db.read() as session:
            query = select(Job).where(Job.user_id == user_id, Job.status == JobStatus.FINISHED)
            query = query.where(
                Job.guild_id.is_(None) if guild_id is None else Job.guild_id == guild_id
            )
            rows = session.scalars(
                query.order_by(Job.finished_at.desc(), Job.id.desc()).limit(limit)
            )
            return [JobRecord.of(j) for j in rows]

    def mark_failed(self, job_id: int, reason: str, *, refund: bool = True) -> JobRecord:
        """queued or running → failed; the cost goes back unless ``refund=False`` (for
        failures that are the member's doing, such as a prompt refused by moderation)."""
        return self._transition(
            job_id, JobStatus.FAILED, ACTIVE_STATUSES, reason=reason, refund=refund
        )

    def mark_cancelled(self, job_id: int, reason: str | None = None) -> JobRecord:
        """queued or running → cancelled; a job cancelled before it started is refunded."""
        return self._transition(
            job_id, JobStatus.CANCELLED, ACTIVE_STATUSES, reason=reason, refund=True
        )

    def mark_deleted(self, job_id: int) -> None:
        """Its posted images were deleted (the Delete button); the first time counts."""
        with self.db.transaction() as session:
            job = self._locked(session, job_id)
            if job.deleted_at is None:
                job.deleted_at = self._now()

    def refund(self, job_id: int) -> int:
        """Give back the cost of a failed job or one cancelled before it started.

        Idempotent: returns the number of images given back, 0 when nothing is due.
        """
        with self.db.transaction() as session:
            return refund_job(session, self._locked(session, job_id), self._now())

    def set_plan(self, job_id: int, spec: JobSpec) -> JobRecord:
        """Store the plan of a job queued before plans were stored (planned on first use)."""
        with self.db.transaction() as session:
            job = self._locked(session, job_id)
            job.plan = spec.plan_row()
            session.flush()
            return JobRecord.of(job)

    def set_message(self, job_id: int, message_id: int | None) -> None:
        """Remember the message that shows the job (progress, then the result)."""
        with self.db.transaction() as session:
            self._locked(session, job_id).message_id = message_id

    def add_image(
        self,
        job_id: int,
        *,
        index: int,
        seed: int,
        width: int,
        height: int,
        content_hash: str,
        moderation_scores: Mapping[str, float] | None = None,
        verdict: Mapping[str, Any] | None = None,
        infotext: Mapping[str, Any] | None = None,
    ) -> ImageRecord:
        with self.db.transaction() as session:
            self._locked(session, job_id)
            # A job rendered again (its first render ended before it was recorded finished)
            # replaces its earlier rows, which keep their ids (events may point at them).
            image = session.scalars(
                select(Image).where(Image.job_id == job_id, Image.index == index)
            ).first()
            if image is None:
                image = Image(job_id=job_id, index=index)
                session.add(image)
            image.seed = seed
            image.width = width
            image.height = height
            image.content_hash = content_hash
            image.moderation_scores = None if moderation_scores is None else dict(moderation_scores)
            image.verdict = None if verdict is None else dict(verdict)
            image.infotext = None if infotext is None else dict(infotext)
            image.stored_bytes = 0
            image.created_at = self._now()
            session.flush()
            return ImageRecord.of(image)

    def images(self, job_id: int) -> list[ImageRecord]:
        with self.db.read() as session:
            rows = session.scalars(
                select(Image).where(Image.job_id == job_id).order_by(Image.index)
            )
            return [ImageRecord.of(i) for i in rows]
