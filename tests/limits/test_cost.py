"""The cost formula, and the token bucket never lets through more than it should."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.config import LimitsSettings
from bot.limits import Accepted, JobShape, RateLimiter, Requester, image_cost, period_start
from bot.storage import Database, NewJob
from tests.storage.fakes import START, FakeClock

Tier = LimitsSettings.Tier


DEFAULT_COST = LimitsSettings.Cost()


def cost(shape: JobShape) -> int:
    return image_cost(shape, DEFAULT_COST)


def test_default_request_costs_one_image_each() -> None:
    assert cost(JobShape(count=1, width=896, height=1152, steps=28)) == 1
    assert cost(JobShape(count=4, width=896, height=1152, steps=28)) == 4
    assert cost(JobShape(count=4, width=896, height=1152, steps=28, hires=True)) == 8
    assert cost(JobShape(count=1, width=1536, height=1536, steps=28)) == 2
    assert cost(JobShape(count=1, steps=50)) == 2
    assert cost(JobShape(count=1, steps=12)) == 1  # never less than one per image


def test_weights_can_switch_factors_off() -> None:
    flat = LimitsSettings.Cost(size_weight=0.0, steps_weight=0.0, hires_factor=1.0)
    shape = JobShape(count=3, width=2048, height=2048, steps=80, hires=True)
    assert image_cost(shape, flat) == 3


shapes = st.builds(
    JobShape,
    count=st.integers(1, 8),
    width=st.integers(64, 2048),
    height=st.integers(64, 2048),
    steps=st.integers(1, 150),
    hires=st.booleans(),
)


@given(shape=shapes, extra=st.integers(1, 4))
def test_cost_is_at_least_count_and_grows_with_the_request(shape: JobShape, extra: int) -> None:
    base = cost(shape)
    assert base >= shape.count
    assert base % shape.count == 0
    bigger = replace(shape, count=shape.count + extra)
    assert cost(bigger) >= base
    assert cost(replace(shape, hires=True)) >= base
    assert cost(replace(shape, steps=shape.steps + extra)) >= base
    assert cost(replace(shape, width=shape.width + 64 * extra)) >= base


def test_period_start_follows_the_reset_hour() -> None:
    assert period_start(START, 0) == START.replace(hour=0)
    assert period_start(START, 12) == START
    assert period_start(START, 13) == START.replace(hour=13) - timedelta(days=1)


def test_token_bucket_never_passes_more_than_burst_plus_refill(db: Database) -> None:
    clock = FakeClock()
    tier = Tier(burst=3, refill_seconds=10, daily_quota=0, max_concurrent_jobs=10_000)
    settings_ = LimitsSettings(
        tiers={"default": tier},
        server=Tier(burst=10_000, daily_quota=0, max_concurrent_jobs=10_000),
    )
    limiter = RateLimiter(db, settings_, clock=clock)
    users = iter(range(1, 10_000))

    @settings(max_examples=40, deadline=None)
    @given(
        steps=st.lists(st.tuples(st.floats(0, 25, allow_nan=False), st.integers(1, 4)), max_size=25)
    )
    def check(steps: list[tuple[float, int]]) -> None:
        who = Requester(user_id=next(users), guild_id=1)
        clock.set(START)
        spent = 0
        for wait, count in steps:
            now = clock.advance(wait)
            decision = limiter.accept_job(who, NewJob({}), JobShape(count=count))
            if isinstance(decision, Accepted):
                spent += decision.cost
            else:
                assert decision.retry_at is not None
                assert decision.retry_at > now
            elapsed = (clock.now - START).total_seconds()
            # More than the burst only ever passes as one request on a full bucket.
            assert spent <= max(tier.burst, 4) + elapsed / tier.refill_seconds + 1e-6

    check()
