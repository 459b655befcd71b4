"""bot.limits.buckets: the token bucket, the daily quota, job counts and the refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.config import LimitsSettings
from bot.limits.buckets import (
    Failure,
    LimitKind,
    bucket_allowance,
    charge,
    check_bucket,
    period_start,
    refuse,
    tokens_now,
    used_today,
)
from bot.storage.models import RateLimitState
from tests.storage.fakes import START

Tier = LimitsSettings.Tier
TIER = Tier(burst=4, refill_seconds=10.0, daily_quota=6, max_concurrent_jobs=2)
PERIOD = period_start(START, 0)
NOW_TS = START.timestamp()


def state(tokens: float, *, seconds_ago: float = 0.0, used: int = 0) -> RateLimitState:
    return RateLimitState(
        tokens=tokens, tokens_at=NOW_TS - seconds_ago, daily_used=used, daily_period=PERIOD
    )


def test_period_starts_at_the_last_reset() -> None:
    noon = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
    assert period_start(noon, 6) == datetime(2025, 3, 14, 6, 0, tzinfo=UTC)
    assert period_start(noon, 18) == datetime(2025, 3, 13, 18, 0, tzinfo=UTC)
    assert period_start(noon.replace(hour=18), 18) == noon.replace(hour=18)


def test_bucket_refills_up_to_its_burst_and_daily_use_is_per_period() -> None:
    assert tokens_now(None, TIER, NOW_TS) == 4.0
    assert tokens_now(state(1.0, seconds_ago=15), TIER, NOW_TS) == 2.5
    assert tokens_now(state(-2.0, seconds_ago=1000), TIER, NOW_TS) == 4.0
    assert used_today(state(0, used=3), PERIOD) == 3
    assert used_today(state(0, used=3), PERIOD + timedelta(days=1)) == 0
    assert used_today(None, PERIOD) == 0


def check(
    row: RateLimitState | None, *, cost: int, active: int = 0, server: bool = False
) -> list[Failure]:
    return check_bucket(
        server=server, tier=TIER, row=row, active=active, cost=cost, now=START, period=PERIOD
    )


def test_a_request_within_every_limit_passes() -> None:
    assert check(None, cost=4) == []
    assert check(state(2.0, used=5), cost=1, active=1) == []


def test_each_limit_refuses_in_its_own_words() -> None:
    [daily] = check(state(4.0, used=5), cost=2)
    assert daily.limit is LimitKind.DAILY
    assert str(daily.message) == (
        "You have 1 image left of your daily quota of 6, and this request costs 2."
    )
    assert daily.retry_at == PERIOD + timedelta(days=1)
    [never] = check(None, cost=7, server=True)
    assert never.limit is LimitKind.SERVER_DAILY
    assert never.retry_at is None
    assert "more than this server's daily quota of 6 images" in str(never.message)
    [jobs] = check(None, cost=1, active=2)
    assert jobs.limit is LimitKind.CONCURRENT
    assert jobs.retry_at is None
    [rate] = check(state(0.5), cost=1)
    assert rate.limit is LimitKind.RATE
    assert rate.retry_at == START + timedelta(seconds=5)
    assert str(rate.message).startswith(
        "Slow down: your limit is 4 images at once, then one every 10 s"
    )


def test_a_request_above_the_burst_needs_a_full_bucket() -> None:
    [rate] = check(state(3.0), cost=5)  # needs 4, the burst, not 5
    assert rate.retry_at == START + timedelta(seconds=10)


def test_refusal_names_the_first_limit_and_waits_for_the_last() -> None:
    later = START + timedelta(hours=1)
    failures = [
        Failure(LimitKind.RATE, "rate", START + timedelta(seconds=5)),
        Failure(LimitKind.DAILY, "daily", later),
    ]
    refusal = refuse(failures, cost=2, daily_remaining=1)
    assert (refusal.limit, refusal.message, refusal.retry_at) == (LimitKind.DAILY, "daily", later)
    assert refusal.retry_at_unix == int(later.timestamp())
    assert not refusal.accepted
    # A limit without a time (a job must finish first): no retry time at all.
    failures.append(Failure(LimitKind.CONCURRENT, "jobs", None))
    assert refuse(failures, cost=2, daily_remaining=1).retry_at is None


def test_charge_takes_from_the_bucket_and_the_day() -> None:
    row = state(1.0, seconds_ago=20, used=2)
    charge(row, TIER, 3, NOW_TS, PERIOD)
    assert (row.tokens, row.tokens_at, row.daily_used) == (0.0, NOW_TS, 5)
    next_day = PERIOD + timedelta(days=1)
    charge(row, TIER, 1, NOW_TS, next_day)
    assert (row.tokens, row.daily_used, row.daily_period) == (-1.0, 1, next_day)


def test_allowance_of_a_bucket() -> None:
    full = bucket_allowance(TIER, None, 0, START, PERIOD)
    assert (full.available_now, full.next_image_at, full.full_at) == (4, None, None)
    assert (full.daily_quota, full.daily_remaining) == (6, 6)
    low = bucket_allowance(TIER, state(1.5, used=4), 1, START, PERIOD)
    assert low.available_now == 1
    assert low.next_image_at == START + timedelta(seconds=5)
    assert low.full_at == START + timedelta(seconds=25)
    assert (low.daily_used, low.daily_remaining, low.active_jobs) == (4, 2, 1)
    unlimited = bucket_allowance(Tier(daily_quota=0), None, 0, START, PERIOD)
    assert (unlimited.daily_quota, unlimited.daily_remaining) == (None, None)
