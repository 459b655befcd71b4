"""The transaction: decide, charge and queue a job at once; read an allowance; refund.

The decision and the charge happen in one transaction together with inserting the job
(:meth:`RateLimiter.accept_job`), so a request is accepted and charged whole or not at all,
and concurrent attempts, also from several processes sharing the database, never pass more
than allowed. A job that fails, or is cancelled before it starts, gets its cost back
(:meth:`bot.storage.jobs.JobStore.mark_failed`, ``mark_cancelled``, :meth:`RateLimiter.refund`).

All methods are synchronous and use the database: call them from the event loop through
``await db.run(limiter.accept_job, requester, job, shape)``. Time comes from ``clock``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from bot.config import LimitsSettings
from bot.errors import words
from bot.limits.buckets import (
    BucketAllowance,
    LimitKind,
    Refusal,
    bucket_allowance,
    charge,
    check_bucket,
    period_start,
    refuse,
    used_today,
)
from bot.limits.cost import image_cost
from bot.limits.tiers import Requester, resolve_policy
from bot.shape import JobShape
from bot.storage.clock import Clock, as_utc, utc_now
from bot.storage.database import Database
from bot.storage.jobs import JobRecord, JobStore, NewJob, count_active, insert_job
from bot.storage.ratelimit import lock_states, read_states


@dataclass(frozen=True, slots=True)
class Accepted:
    """The job was charged and queued."""

    job: JobRecord
    cost: int
    daily_remaining: int | None  # after this job; None: no daily quota applies

    @property
    def accepted(self) -> bool:
        return True


LimitDecision = Accepted | Refusal


@dataclass(frozen=True, slots=True)
class Allowance:
    """A member's remaining allowance, read without spending anything (for ``/limits``)."""

    tier: str
    exempt: bool
    banned: bool
    ban_reason: str | None
    banned_until: datetime | None
    member: BucketAllowance
    server: BucketAllowance | None  # None in direct messages
    daily_resets_at: datetime

    @property
    def images_now(self) -> int | None:
        """How many images a request could ask for right now, ignoring job counts and costs
        above one image each (None: no limit applies)."""
        if self.exempt:
            return None
        if self.banned:
            return 0
        counts = [self.member.available_now, self.member.daily_remaining]
        if self.server is not None:
            counts += [self.server.available_now, self.server.daily_remaining]
        return max(0, min(c for c in counts if c is not None))


class RateLimiter:
    """Decides, charges and refunds; see the module documentation."""

    def __init__(self, db: Database, settings: LimitsSettings, *, clock: Clock = utc_now) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.jobs = JobStore(db, clock=clock)

    def cost(self, shape: JobShape) -> int:
        """Images a request counts as (see :func:`bot.limits.cost.image_cost`)."""
        return image_cost(shape, self.settings.cost)

    def accept_job(self, requester: Requester, job: NewJob, shape: JobShape) -> LimitDecision:
        """Check every limit; if all pass, charge them and queue the job, atomically.

        Returns :class:`Accepted` or :class:`Refusal`. A database failure raises
        :class:`~bot.storage.database.DatabaseError` and leaves nothing behind: no job, no
        charge.
        """
        cost = self.cost(shape)
        with self.db.transaction() as session:
            return self._accept(session, requester, job, cost)

    def _accept(self, session: Session, who: Requester, job: NewJob, cost: int) -> LimitDecision:
        now = as_utc(self.clock())
        period = period_start(now, self.settings.reset_hour_utc)

        def queue(charged: int, left: int | None) -> Accepted:
            row = insert_job(
                session,
                job,
                user_id=who.user_id,
                guild_id=who.guild_id,
                now=now,
                cost=charged,
                charge_period=period if charged else None,
            )
            return Accepted(JobRecord.of(row), charged, left)

        policy = resolve_policy(session, self.settings, who, now)
        if policy.ban is not None:
            ban = policy.ban
            if ban.ban_reason:
                message = words(
                    "You are banned from generating images: {reason}", reason=ban.ban_reason
                )
            else:
                message = words("You are banned from generating images.")
            return Refusal(LimitKind.BANNED, message, ban.banned_until, None, cost)
        if not policy.enabled:
            message = words("Image generation is switched off in this server.")
            return Refusal(LimitKind.DISABLED, message, None, None, cost)
        if policy.exempt or not self.settings.enabled:
            return queue(0, None)

        member_row, server_row = lock_states(session, who.guild_id, who.user_id, period=period)
        member_active, server_active = count_active(
            session, guild_id=who.guild_id, user_id=who.user_id
        )
        tier = policy.tier
        failures = check_bucket(
            server=False,
            tier=tier,
            row=member_row,
            active=member_active,
            cost=cost,
            now=now,
            period=period,
        )
        if policy.server is not None and server_row is not None:
            failures += check_bucket(
                server=True,
                tier=policy.server,
                row=server_row,
                active=server_active,
                cost=cost,
                now=now,
                period=period,
            )
        daily_left = (
            max(0, tier.daily_quota - used_today(member_row, period)) if tier.daily_quota else None
        )
        if failures:
            return refuse(failures, cost, daily_left)

        now_ts = now.timestamp()
        for row, row_tier in ((member_row, tier), (server_row, policy.server)):
            if row is not None and row_tier is not None:
                charge(row, row_tier, cost, now_ts, period)
        session.flush()  # the charge is written before the job: both commit, or neither
        return queue(cost, None if daily_left is None else daily_left - cost)

    def allowance(self, requester: Requester) -> Allowance:
        """The member's remaining allowance; spends nothing."""
        now = as_utc(self.clock())
        period = period_start(now, self.settings.reset_hour_utc)
        with self.db.read() as session:
            policy = resolve_policy(session, self.settings, requester, now)
            gid = requester.guild_id
            member_row, server_row = read_states(session, gid, requester.user_id)
            member_active, server_active = count_active(
                session, guild_id=gid, user_id=requester.user_id
            )
            member = bucket_allowance(policy.tier, member_row, member_active, now, period)
            server = None
            if policy.server is not None and gid is not None:
                server = bucket_allowance(policy.server, server_row, server_active, now, period)
        ban = policy.ban
        return Allowance(
            tier=policy.tier_name,
            exempt=policy.exempt or not self.settings.enabled,
            banned=ban is not None,
            ban_reason=None if ban is None else ban.ban_reason,
            banned_until=None if ban is None else ban.banned_until,
            member=member,
            server=server,
            daily_resets_at=period + timedelta(days=1),
        )

    def refund(self, job_id: int) -> int:
        """Give back the cost of a failed job, or of one cancelled before it started.

        Idempotent: the number of images given back, 0 when nothing is (or is still) due.
        """
        return self.jobs.refund(job_id)
