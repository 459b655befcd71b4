"""Bucket arithmetic: the token bucket, the daily quota and the job count of one set of
limits (a member's or a server's), and the refusal they add up to.

A token bucket allows ``burst`` images at once, then one more every ``refill_seconds``; a
request that costs more than the burst is allowed only when the bucket is full, and leaves
it in debt, so big requests are slow rather than impossible. The daily quota resets at
``limits.reset_hour_utc`` (0 in config: no daily quota).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

from bot.errors import Text, counted, words
from bot.limits.tiers import Tier
from bot.storage.clock import as_utc
from bot.storage.models import RateLimitState

EPSILON: Final = 1e-6  # images; absorbs float rounding so retrying at retry_at succeeds


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
class Refusal:
    """Nothing was queued or charged.

    ``retry_at`` is the earliest moment the same request can pass (None when it depends on
    a running job finishing, or never passes as asked); ``retry_at_unix`` is ready for a
    Discord ``<t:UNIX:R>`` timestamp. ``message`` explains the limit in plain words without
    the time, which the adapter adds in its own format.
    """

    limit: LimitKind
    message: Text
    retry_at: datetime | None
    daily_remaining: int | None  # the member's images left today; None: no daily quota
    cost: int

    @property
    def accepted(self) -> bool:
        return False

    @property
    def retry_at_unix(self) -> int | None:
        return None if self.retry_at is None else math.ceil(self.retry_at.timestamp())


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
class Failure:
    """One limit a request does not pass."""

    limit: LimitKind
    message: Text
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


def _images(n: int) -> Text:
    return counted(n, "1 image", "{count} images")


def _rate_words(tier: Tier) -> Text:
    seconds = tier.refill_seconds
    if seconds < 120:
        every = words("{n} s", n=f"{seconds:g}")
    else:
        every = words("{n} min", n=f"{seconds / 60:g}")
    return words(
        "{images} at once, then one every {every}", images=_images(tier.burst), every=every
    )


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def check_bucket(
    *,
    server: bool,
    tier: Tier,
    row: RateLimitState | None,
    active: int,
    cost: int,
    now: datetime,
    period: datetime,
) -> list[Failure]:
    """Every limit of one bucket that a request costing ``cost`` does not pass."""
    failures: list[Failure] = []
    next_reset = period + timedelta(days=1)
    if tier.daily_quota:
        used = used_today(row, period)
        left = max(0, tier.daily_quota - used)
        kind = LimitKind.SERVER_DAILY if server else LimitKind.DAILY
        quota = {"cost": _images(cost), "quota": _images(tier.daily_quota)}
        if cost > tier.daily_quota:
            if server:
                message = words(
                    "This request costs {cost}, more than this server's daily quota of "
                    "{quota}: ask for fewer or smaller images.",
                    **quota,
                )
            else:
                message = words(
                    "This request costs {cost}, more than your daily quota of {quota}: ask "
                    "for fewer or smaller images.",
                    **quota,
                )
            failures.append(Failure(kind, message, None))
        elif cost > left:
            if server:
                message = words(
                    "This server has {left} left of its daily quota of {quota}, and this "
                    "request costs {cost}.",
                    left=_images(left),
                    quota=tier.daily_quota,
                    cost=cost,
                )
            else:
                message = words(
                    "You have {left} left of your daily quota of {quota}, and this request "
                    "costs {cost}.",
                    left=_images(left),
                    quota=tier.daily_quota,
                    cost=cost,
                )
            failures.append(Failure(kind, message, next_reset))
    if active >= tier.max_concurrent_jobs:
        kind = LimitKind.SERVER_CONCURRENT if server else LimitKind.CONCURRENT
        if server:
            message = counted(
                active,
                "This server already has 1 job waiting or running (at most {most}): try "
                "again when it is done.",
                "This server already has {count} jobs waiting or running (at most {most}): "
                "try again when one of them is done.",
                most=tier.max_concurrent_jobs,
            )
        else:
            message = counted(
                active,
                "You already have 1 job waiting or running (at most {most}): try again when "
                "it is done.",
                "You already have {count} jobs waiting or running (at most {most}): try "
                "again when one of them is done.",
                most=tier.max_concurrent_jobs,
            )
        failures.append(Failure(kind, message, None))
    now_ts = now.timestamp()
    level = tokens_now(row, tier, now_ts)
    need = min(cost, tier.burst)  # a bigger request needs a full bucket
    if level + EPSILON < need:
        retry = _at(now_ts + (need - level) * tier.refill_seconds)
        kind = LimitKind.SERVER_RATE if server else LimitKind.RATE
        values = {"rate": _rate_words(tier), "cost": _images(cost)}
        if server:
            message = words(
                "Slow down: this server's limit is {rate}; this request costs {cost}.", **values
            )
        else:
            message = words("Slow down: your limit is {rate}; this request costs {cost}.", **values)
        failures.append(Failure(kind, message, retry))
    return failures


def refuse(failures: list[Failure], cost: int, daily_remaining: int | None) -> Refusal:
    """The refusal for ``failures``: the first limit in a fixed order, retrying when the
    last of the limits with a time passes."""
    failures = sorted(failures, key=lambda f: _ORDER.index(f.limit))
    first = failures[0]
    retry = first.retry_at
    if retry is not None:
        # Passing one limit is not enough: wait for the last of those that refused.
        retry = max([f.retry_at for f in failures if f.retry_at is not None])
        if any(f.retry_at is None for f in failures):
            retry = None
    return Refusal(first.limit, first.message, retry, daily_remaining, cost)


def charge(row: RateLimitState, tier: Tier, cost: int, now_ts: float, period: datetime) -> None:
    """Take ``cost`` images from a bucket and its daily count."""
    row.tokens = tokens_now(row, tier, now_ts) - cost
    row.tokens_at = now_ts
    row.daily_used = used_today(row, period) + cost
    row.daily_period = period


def bucket_allowance(
    tier: Tier, row: RateLimitState | None, active: int, now: datetime, period: datetime
) -> BucketAllowance:
    """What is left of a bucket at ``now``; spends nothing."""
    now_ts = now.timestamp()
    level = tokens_now(row, tier, now_ts)
    full = level + EPSILON >= tier.burst
    whole = math.floor(level + EPSILON)
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
