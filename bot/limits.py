"""Rate limits, checked before a job is accepted. No Discord here: the adapter formats.

Limits are counted in images, per member and per server:

* a token bucket: ``burst`` images at once, then one more every ``refill_seconds``;
* a daily quota that resets at ``limits.reset_hour_utc`` (0 in config: no daily quota);
* at most ``max_concurrent_jobs`` jobs waiting or running.

A request's cost is ``count * max(1, round(base * max(1, pixels / reference_pixels) **
size_weight * (steps / reference_steps) ** steps_weight * (hires_factor if hires else 1)))``
(``limits.cost``); with the defaults a 896x1152, 28-step image without hires costs 1 and with
hires 2. A request that costs more than the burst is allowed only when the bucket is full,
and leaves it in debt, so big requests are slow rather than impossible.

Which limits apply: a member with a tier set on their member row gets that tier; otherwise
the most generous of the server's default tier (guild settings, else ``default_tier``) and
the tiers of the roles they hold (``role_tiers`` in config and in guild settings). Per-server
``tier_overrides`` and ``server_limits`` override single fields. Administrators (when
``exempt_administrators``) and holders of an exempt role skip every limit and are charged
nothing; banned members are refused.

The decision and the charge happen in one transaction together with inserting the job
(:meth:`RateLimiter.accept_job`), so a request is accepted and charged whole or not at all,
and concurrent attempts, also from several processes sharing the database, never pass more
than allowed. A job that fails, or is cancelled before it starts, gets its cost back
(:meth:`bot.storage.jobs.JobStore.mark_failed`, ``mark_cancelled``, :meth:`RateLimiter.refund`).

All methods are synchronous and use the database: call them from the event loop through
``await db.run(limiter.accept_job, requester, job, shape)``. Time comes from ``clock``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from pydantic import ValidationError
from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session

from bot.config import LimitsSettings
from bot.shape import JobShape
from bot.storage.clock import Clock, as_utc, utc_now
from bot.storage.database import Database
from bot.storage.jobs import JobRecord, JobStore, NewJob, count_active, insert_job
from bot.storage.members import EVERYWHERE, GuildRecord
from bot.storage.models import GuildSettings, Member, RateLimitState
from bot.storage.ratelimit import lock_states, read_states

log = logging.getLogger(__name__)
_MEMBER_ROWS = select(Member).where(
    Member.user_id == bindparam("uid"),
    or_(Member.guild_id == bindparam("gid"), Member.guild_id == EVERYWHERE),
)

Tier = LimitsSettings.Tier
_EPSILON: Final = 1e-6  # images; absorbs float rounding so retrying at retry_at succeeds


class LimitKind(StrEnum):
    """Which limit refused a request."""

    BANNED = "banned"
    DISABLED = "disabled"  # the bot is switched off in this server
    DAILY = "daily"
    CONCURRENT = "concurrent"
    RATE = "rate"  # burst and sustained rate
    SERVER_DAILY = "server_daily"
    SERVER_CONCURRENT = "server_concurrent"
    SERVER_RATE = "server_rate"


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks, as the Discord layer sees them."""

    user_id: int
    guild_id: int | None = None  # None in direct messages
    role_ids: frozenset[int] = frozenset()
    is_admin: bool = False


@dataclass(frozen=True, slots=True)
class Accepted:
    """The job was charged and queued."""

    job: JobRecord
    cost: int
    daily_remaining: int | None  # after this job; None: no daily quota applies

    @property
    def accepted(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Refusal:
    """Nothing was queued or charged.

    ``retry_at`` is the earliest moment the same request can pass (None when it depends on
    a running job finishing, or never passes as asked); ``retry_at_unix`` is ready for a
    Discord ``<t:UNIX:R>`` timestamp. ``message`` explains the limit in plain words without
    the time, which the adapter adds in its own format.
    """

    limit: LimitKind
    message: str
    retry_at: datetime | None
    daily_remaining: int | None  # the member's images left today; None: no daily quota
    cost: int

    @property
    def accepted(self) -> bool:
        return False

    @property
    def retry_at_unix(self) -> int | None:
        return None if self.retry_at is None else math.ceil(self.retry_at.timestamp())


LimitDecision = Accepted | Refusal


@dataclass(frozen=True, slots=True)
class BucketAllowance:
    """What is left of one set of limits (the member's or the server's)."""

    burst: int
    refill_seconds: float
    available_now: int  # images the rate limit lets start now
    next_image_at: datetime | None  # when one more image becomes available (None: full)
    full_at: datetime | None  # when the bucket is full again (None: full)
    daily_quota: int | None  # None: no daily quota
    daily_used: int
    daily_remaining: int | None
    active_jobs: int
    max_concurrent_jobs: int


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


@dataclass(frozen=True, slots=True)
class _Policy:
    tier_name: str
    tier: Tier
    server: Tier | None
    exempt: bool
    enabled: bool
    ban: Member | None


@dataclass(frozen=True, slots=True)
class _Failure:
    limit: LimitKind
    message: str
    retry_at: datetime | None


_ORDER: Final = (
    LimitKind.BANNED,
    LimitKind.DISABLED,
    LimitKind.DAILY,
    LimitKind.SERVER_DAILY,
    LimitKind.CONCURRENT,
    LimitKind.SERVER_CONCURRENT,
    LimitKind.RATE,
    LimitKind.SERVER_RATE,
)


def image_cost(shape: JobShape, c: LimitsSettings.Cost) -> int:
    """Images a request counts as: ``count`` times the per-image weight, rounded half up and
    at least 1. The weight is ``base * max(1, pixels / reference_pixels) ** size_weight *
    (steps / reference_steps) ** steps_weight``, times ``hires_factor`` with the hires pass."""
    size: float = max(1.0, (shape.width * shape.height) / c.reference_pixels) ** c.size_weight
    steps: float = (max(1, shape.steps) / c.reference_steps) ** c.steps_weight
    per_image = c.base * size * steps * (c.hires_factor if shape.hires else 1.0)
    return max(1, shape.count) * max(1, math.floor(per_image + 0.5))


def period_start(now: datetime, reset_hour_utc: int) -> datetime:
    """Start of the daily-quota period containing ``now`` (the last reset at or before it)."""
    now = as_utc(now)
    start = now.replace(hour=reset_hour_utc, minute=0, second=0, microsecond=0)
    return start if start <= now else start - timedelta(days=1)


def tokens_now(row: RateLimitState | None, tier: Tier, now_ts: float) -> float:
    """A bucket's level at ``now_ts`` (a missing row is a full bucket)."""
    if row is None:
        return float(tier.burst)
    elapsed = max(0.0, now_ts - row.tokens_at)
    return min(float(tier.burst), row.tokens + elapsed / tier.refill_seconds)


def used_today(row: RateLimitState | None, period: datetime) -> int:
    return 0 if row is None or row.daily_period != period else row.daily_used


def _generosity(tier: Tier) -> tuple[float, int, float, int]:
    quota = math.inf if tier.daily_quota == 0 else float(tier.daily_quota)
    return (quota, tier.burst, -tier.refill_seconds, tier.max_concurrent_jobs)


def _plural(n: int, word: str = "image") -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _rate_words(tier: Tier) -> str:
    seconds = tier.refill_seconds
    every = f"{seconds:g} s" if seconds < 120 else f"{seconds / 60:g} min"
    return f"{_plural(tier.burst)} at once, then one every {every}"


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class RateLimiter:
    """Decides, charges and refunds; see the module documentation."""

    def __init__(self, db: Database, settings: LimitsSettings, *, clock: Clock = utc_now) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.jobs = JobStore(db, clock=clock)

    # -- cost ------------------------------------------------------------------------------

    def cost(self, shape: JobShape) -> int:
        """Images a request counts as (see :func:`image_cost`)."""
        return image_cost(shape, self.settings.cost)

    # -- policy ----------------------------------------------------------------------------

    def _tier(self, name: str, guild: GuildRecord | None) -> Tier | None:
        base = self.settings.tiers.get(name)
        if base is None:
            return None
        override = guild.tier_overrides.get(name) if guild is not None else None
        return self._override(base, override, f"tier {name!r}", guild)

    def _override(
        self, base: Tier, override: Mapping[str, Any] | None, what: str, guild: GuildRecord | None
    ) -> Tier:
        if not override:
            return base
        try:
            return Tier.model_validate({**base.model_dump(), **override})
        except ValidationError as exc:
            log.warning(
                "guild %s: ignoring invalid override of %s: %s",
                guild.guild_id if guild else "?",
                what,
                exc.errors()[0]["msg"],
            )
            return base

    def _policy(self, session: Session, who: Requester, now: datetime) -> _Policy:
        row = None if who.guild_id is None else session.get(GuildSettings, who.guild_id)
        guild = None if row is None else GuildRecord.of(row)
        here = EVERYWHERE if who.guild_id is None else who.guild_id
        rows = {
            m.guild_id: m for m in session.scalars(_MEMBER_ROWS, {"uid": who.user_id, "gid": here})
        }
        local = rows.get(here)
        bans = [m for m in (local, rows.get(EVERYWHERE)) if m is not None and m.ban_active(now)]
        ban = bans[0] if bans else None
        explicit = None if local is None else local.tier

        cfg = self.settings
        exempt_roles = set(cfg.exempt_role_ids) | (guild.exempt_role_ids if guild else set())
        exempt = (cfg.exempt_administrators and who.is_admin) or bool(exempt_roles & who.role_ids)

        base_name = cfg.default_tier
        if guild is not None and guild.default_tier is not None:
            if guild.default_tier in cfg.tiers:
                base_name = guild.default_tier
            else:
                log.warning("guild %s: unknown default tier %r", guild.guild_id, guild.default_tier)
        candidates = [base_name]
        role_tiers = [(r.role_id, r.tier) for r in cfg.role_tiers]
        role_tiers += list(guild.role_tiers) if guild else []
        candidates += [t for r, t in role_tiers if r in who.role_ids and t in cfg.tiers]
        if explicit is not None and explicit in cfg.tiers:
            candidates = [explicit]
        named = [(n, t) for n in candidates if (t := self._tier(n, guild)) is not None]
        tier_name, tier = max(named, key=lambda nt: _generosity(nt[1]))

        server = None
        if who.guild_id is not None:
            server = self._override(
                cfg.server, guild.server_limits if guild else None, "server limits", guild
            )
        return _Policy(
            tier_name=tier_name,
            tier=tier,
            server=server,
            exempt=exempt,
            enabled=guild.enabled if guild else True,
            ban=ban,
        )

    # -- decisions -------------------------------------------------------------------------

    def _check_bucket(
        self,
        *,
        server: bool,
        tier: Tier,
        row: RateLimitState | None,
        active: int,
        cost: int,
        now: datetime,
        period: datetime,
    ) -> list[_Failure]:
        failures: list[_Failure] = []
        whose, you = ("This server", "this server's") if server else ("You", "your")
        next_reset = period + timedelta(days=1)
        if tier.daily_quota:
            used = used_today(row, period)
            left = max(0, tier.daily_quota - used)
            kind = LimitKind.SERVER_DAILY if server else LimitKind.DAILY
            if cost > tier.daily_quota:
                failures.append(
                    _Failure(
                        kind,
                        f"This request costs {_plural(cost)}, more than {you} daily quota of "
                        f"{_plural(tier.daily_quota)}: ask for fewer or smaller images.",
                        None,
                    )
                )
            elif cost > left:
                has = "has" if server else "have"
                failures.append(
                    _Failure(
                        kind,
                        f"{whose} {has} {_plural(left)} left of {you} daily quota of "
                        f"{tier.daily_quota}, and this request costs {cost}.",
                        next_reset,
                    )
                )
        if active >= tier.max_concurrent_jobs:
            kind = LimitKind.SERVER_CONCURRENT if server else LimitKind.CONCURRENT
            failures.append(
                _Failure(
                    kind,
                    f"{whose} already {'has' if server else 'have'} {_plural(active, 'job')} "
                    f"waiting or running (at most {tier.max_concurrent_jobs}): try again when "
                    f"{'one' if active == 1 else 'one of them'} is done.",
                    None,
                )
            )
        now_ts = now.timestamp()
        level = tokens_now(row, tier, now_ts)
        need = min(cost, tier.burst)  # a bigger request needs a full bucket
        if level + _EPSILON < need:
            retry = _at(now_ts + (need - level) * tier.refill_seconds)
            kind = LimitKind.SERVER_RATE if server else LimitKind.RATE
            failures.append(
                _Failure(
                    kind,
                    f"Slow down: {you} limit is {_rate_words(tier)}; this request costs "
                    f"{_plural(cost)}.",
                    retry,
                )
            )
        return failures

    def _refuse(self, failures: list[_Failure], cost: int, daily_remaining: int | None) -> Refusal:
        failures.sort(key=lambda f: _ORDER.index(f.limit))
        first = failures[0]
        retry = first.retry_at
        if retry is not None:
            # Passing one limit is not enough: wait for the last of those that refused.
            retry = max([f.retry_at for f in failures if f.retry_at is not None])
            if any(f.retry_at is None for f in failures):
                retry = None
        return Refusal(first.limit, first.message, retry, daily_remaining, cost)

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

        policy = self._policy(session, who, now)
        if policy.ban is not None:
            ban = policy.ban
            reason = f": {ban.ban_reason}" if ban.ban_reason else "."
            message = f"You are banned from generating images{reason}"
            return Refusal(LimitKind.BANNED, message, ban.banned_until, None, cost)
        if not policy.enabled:
            message = "Image generation is switched off in this server."
            return Refusal(LimitKind.DISABLED, message, None, None, cost)
        if policy.exempt or not self.settings.enabled:
            return queue(0, None)

        member_row, server_row = lock_states(session, who.guild_id, who.user_id, period=period)
        member_active, server_active = count_active(
            session, guild_id=who.guild_id, user_id=who.user_id
        )
        tier = policy.tier
        failures = self._check_bucket(
            server=False,
            tier=tier,
            row=member_row,
            active=member_active,
            cost=cost,
            now=now,
            period=period,
        )
        if policy.server is not None and server_row is not None:
            failures += self._check_bucket(
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
            return self._refuse(failures, cost, daily_left)

        now_ts = now.timestamp()
        for row, row_tier in ((member_row, tier), (server_row, policy.server)):
            if row is None or row_tier is None:
                continue
            row.tokens = tokens_now(row, row_tier, now_ts) - cost
            row.tokens_at = now_ts
            row.daily_used = used_today(row, period) + cost
            row.daily_period = period
        session.flush()  # the charge is written before the job: both commit, or neither
        return queue(cost, None if daily_left is None else daily_left - cost)

    # -- reading and refunds ---------------------------------------------------------------

    def allowance(self, requester: Requester) -> Allowance:
        """The member's remaining allowance; spends nothing."""
        now = as_utc(self.clock())
        period = period_start(now, self.settings.reset_hour_utc)
        with self.db.read() as session:
            policy = self._policy(session, requester, now)
            gid = requester.guild_id
            member_row, server_row = read_states(session, gid, requester.user_id)
            member_active, server_active = count_active(
                session, guild_id=gid, user_id=requester.user_id
            )
            member = self._bucket(policy.tier, member_row, member_active, now, period)
            server = None
            if policy.server is not None and gid is not None:
                server = self._bucket(policy.server, server_row, server_active, now, period)
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

    @staticmethod
    def _bucket(
        tier: Tier, row: RateLimitState | None, active: int, now: datetime, period: datetime
    ) -> BucketAllowance:
        now_ts = now.timestamp()
        level = tokens_now(row, tier, now_ts)
        full = level + _EPSILON >= tier.burst
        whole = math.floor(level + _EPSILON)
        used = used_today(row, period)
        quota = tier.daily_quota or None
        return BucketAllowance(
            burst=tier.burst,
            refill_seconds=tier.refill_seconds,
            available_now=max(0, whole),
            next_image_at=None if full else _at(now_ts + (whole + 1 - level) * tier.refill_seconds),
            full_at=None if full else _at(now_ts + (tier.burst - level) * tier.refill_seconds),
            daily_quota=quota,
            daily_used=used,
            daily_remaining=None if quota is None else max(0, quota - used),
            active_jobs=active,
            max_concurrent_jobs=tier.max_concurrent_jobs,
        )

    def refund(self, job_id: int) -> int:
        """Give back the cost of a failed job, or of one cancelled before it started.

        Idempotent: the number of images given back, 0 when nothing is (or is still) due.
        """
        return self.jobs.refund(job_id)
