"""What a member notices: what passes, what is refused, why, and until when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from bot.config import LimitsSettings
from bot.limits import (
    Accepted,
    JobShape,
    LimitDecision,
    LimitKind,
    RateLimiter,
    Refusal,
    Requester,
)
from bot.storage import Database, DatabaseError, GuildStore, JobStatus, MemberStore, NewJob
from tests.limits.conftest import MakeLimiter
from tests.storage.fakes import START, FakeClock, open_db

Tier = LimitsSettings.Tier
ALICE = Requester(user_id=1, guild_id=100)
BOB = Requester(user_id=2, guild_id=100)


def ask(
    limiter: RateLimiter,
    who: Requester = ALICE,
    count: int = 1,
    *,
    size: int = 1024,
    steps: int = 28,
    hires: bool = False,
) -> LimitDecision:
    shape = JobShape(count=count, width=size, height=size, steps=steps, hires=hires)
    return limiter.accept_job(who, NewJob({"prompt": "1girl"}), shape)


def accepted(decision: LimitDecision) -> Accepted:
    assert isinstance(decision, Accepted), decision
    return decision


def refused(decision: LimitDecision) -> Refusal:
    assert isinstance(decision, Refusal), decision
    return decision


def test_burst_then_one_image_every_30_seconds(make_limiter: MakeLimiter, clock: FakeClock) -> None:
    limiter = make_limiter(default=Tier(burst=4, refill_seconds=30, max_concurrent_jobs=100))
    for _ in range(4):
        accepted(ask(limiter))
    refusal = refused(ask(limiter))
    assert refusal.limit is LimitKind.RATE
    assert refusal.retry_at == START + timedelta(seconds=30)
    assert refusal.retry_at_unix == int((START + timedelta(seconds=30)).timestamp())
    assert refusal.daily_remaining == 96
    assert "4 images at once, then one every 30 s" in str(refusal.message)

    clock.advance(29.9)
    assert refused(ask(limiter)).retry_at == START + timedelta(seconds=30)
    clock.set(refusal.retry_at)
    accepted(ask(limiter))
    assert refused(ask(limiter)).retry_at == START + timedelta(seconds=60)


def test_images_are_counted_not_commands(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(default=Tier(burst=4, refill_seconds=30))
    decision = accepted(ask(limiter, count=4))
    assert decision.cost == 4
    assert decision.daily_remaining == 96
    refusal = refused(ask(limiter, count=2))
    assert refusal.limit is LimitKind.RATE
    assert refusal.retry_at == START + timedelta(seconds=60)  # two images take 2 x 30 s


def test_bigger_requests_cost_more(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(default=Tier(burst=20, daily_quota=100))
    assert accepted(ask(limiter, count=2, steps=28)).cost == 2
    assert accepted(ask(limiter, count=2, size=1536)).cost == 4  # 2.25 x pixels
    assert limiter.allowance(ALICE).member.daily_used == 6


def test_request_bigger_than_the_burst_needs_a_full_bucket(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(default=Tier(burst=4, refill_seconds=30, max_concurrent_jobs=9))
    assert accepted(ask(limiter, count=3, hires=True)).cost == 6  # hires doubles
    refusal = refused(ask(limiter, count=3, hires=True))
    # 4 - 6 = -2 images left: a full bucket (4) is 6 images x 30 s away.
    assert refusal.retry_at == START + timedelta(seconds=180)
    clock.set(refusal.retry_at)
    accepted(ask(limiter, count=3, hires=True))


def test_daily_quota_resets_at_the_configured_hour(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(
        default=Tier(burst=10, refill_seconds=1, daily_quota=10, max_concurrent_jobs=99),
        reset_hour_utc=6,
    )
    accepted(ask(limiter, count=8))
    clock.advance(3600)
    refusal = refused(ask(limiter, count=4))
    assert refusal.limit is LimitKind.DAILY
    assert refusal.daily_remaining == 2
    reset = datetime(2025, 3, 15, 6, 0, tzinfo=UTC)  # START is 2025-03-14 12:00 UTC
    assert refusal.retry_at == reset
    assert "2 images left" in str(refusal.message)
    assert accepted(ask(limiter, count=2)).daily_remaining == 0

    clock.set(reset - timedelta(microseconds=1))
    assert refused(ask(limiter)).limit is LimitKind.DAILY
    clock.set(reset)
    assert accepted(ask(limiter, count=4)).daily_remaining == 6


def test_request_over_the_whole_daily_quota_is_refused_for_good(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(default=Tier(burst=50, daily_quota=5))
    refusal = refused(ask(limiter, count=6))
    assert refusal.limit is LimitKind.DAILY
    assert refusal.retry_at is None
    assert "more than your daily quota" in str(refusal.message)


def test_at_most_two_jobs_waiting_or_running(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(default=Tier(burst=10))
    first = accepted(ask(limiter)).job
    accepted(ask(limiter))
    refusal = refused(ask(limiter))
    assert refusal.limit is LimitKind.CONCURRENT
    assert refusal.retry_at is None
    assert "2 jobs waiting or running" in str(refusal.message)
    accepted(ask(limiter, BOB))  # others are not affected

    limiter.jobs.mark_started(first.id)
    refused(ask(limiter))
    limiter.jobs.mark_finished(first.id)
    accepted(ask(limiter))


def test_server_limits_are_shared_by_its_members(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(
        default=Tier(burst=4, refill_seconds=30),
        server=Tier(burst=5, refill_seconds=10, daily_quota=0, max_concurrent_jobs=2),
    )
    accepted(ask(limiter, ALICE, count=3))
    refusal = refused(ask(limiter, BOB, count=3))
    assert refusal.limit is LimitKind.SERVER_RATE
    assert refusal.retry_at == START + timedelta(seconds=10)
    assert "this server's limit" in str(refusal.message)
    accepted(ask(limiter, BOB, count=2))
    refusal = refused(ask(limiter, Requester(user_id=3, guild_id=100)))
    assert refusal.limit is LimitKind.SERVER_CONCURRENT
    accepted(ask(limiter, Requester(user_id=3, guild_id=200)))  # another server


def test_refusal_waits_for_the_last_limit_that_refused(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(
        default=Tier(burst=2, refill_seconds=30, max_concurrent_jobs=9),
        server=Tier(burst=2, refill_seconds=100, daily_quota=0, max_concurrent_jobs=9),
    )
    accepted(ask(limiter, count=2))
    refusal = refused(ask(limiter))
    assert refusal.limit is LimitKind.RATE
    assert refusal.retry_at == START + timedelta(seconds=100)


def test_role_tiers_and_server_overrides(db: Database, make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(
        default=Tier(burst=2, daily_quota=20),
        tiers={
            "supporter": Tier(burst=8, daily_quota=200),
            "generous": Tier(burst=6, daily_quota=500),
        },
        role_tiers=[LimitsSettings.RoleTier(role_id=555, tier="supporter")],
    )
    plain = limiter.allowance(ALICE)
    assert (plain.tier, plain.member.burst) == ("default", 2)
    supporter = Requester(user_id=1, guild_id=100, role_ids=frozenset({555}))
    assert limiter.allowance(supporter).tier == "supporter"
    assert accepted(ask(limiter, supporter, count=2)).cost == 2

    guilds = GuildStore(db)
    guilds.update(100, default_tier="generous", tier_overrides={"supporter": {"burst": 3}})
    assert limiter.allowance(supporter).tier == "generous"  # now the more generous one
    assert limiter.allowance(ALICE).tier == "generous"
    guilds.update(100, default_tier=None, role_tiers=[(777, "supporter")], tier_overrides={})
    other_role = Requester(user_id=3, guild_id=100, role_ids=frozenset({777}))
    assert limiter.allowance(other_role).tier == "supporter"
    assert limiter.allowance(Requester(user_id=3, guild_id=200)).tier == "default"


def test_member_tier_set_by_a_moderator_wins(db: Database, make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(tiers={"restricted": Tier(burst=1, daily_quota=3)})
    MemberStore(db).set_tier(100, 1, "restricted")
    assert limiter.allowance(ALICE).tier == "restricted"
    accepted(ask(limiter))
    assert refused(ask(limiter)).limit is LimitKind.RATE


def test_invalid_server_override_is_ignored(db: Database, make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(default=Tier(burst=4))
    GuildStore(db).update(100, tier_overrides={"default": {"burst": -5}}, default_tier="nope")
    allowance = limiter.allowance(ALICE)
    assert (allowance.tier, allowance.member.burst) == ("default", 4)


def test_exempt_members_are_not_limited_or_charged(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(
        default=Tier(burst=1, daily_quota=1, max_concurrent_jobs=1), exempt_role_ids=[42]
    )
    admin = Requester(user_id=9, guild_id=100, is_admin=True)
    helper = Requester(user_id=8, guild_id=100, role_ids=frozenset({42}))
    for who in (admin, helper):
        for _ in range(3):
            assert accepted(ask(limiter, who, count=4)).cost == 0
        assert limiter.allowance(who).exempt
        assert limiter.allowance(who).images_now is None
    assert accepted(ask(limiter)).cost == 1
    strict = make_limiter(default=Tier(burst=1), exempt_administrators=False)
    other_admin = Requester(user_id=10, guild_id=100, is_admin=True)
    accepted(ask(strict, other_admin))
    assert refused(ask(strict, other_admin)).limit is LimitKind.RATE


def test_banned_members_are_refused_until_the_ban_ends(
    db: Database, make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter()
    until = START + timedelta(hours=2)
    MemberStore(db, clock=clock).ban(100, 1, reason="spam", until=until)
    refusal = refused(ask(limiter))
    assert refusal.limit is LimitKind.BANNED
    assert refusal.retry_at == until
    assert "spam" in str(refusal.message)
    assert limiter.allowance(ALICE).banned
    accepted(ask(limiter, BOB))
    clock.set(until)
    accepted(ask(limiter))


def test_ban_everywhere_applies_in_every_server(db: Database, make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    MemberStore(db).ban(0, 1, reason="abuse")
    for guild in (100, 200, None):
        refusal = refused(ask(limiter, Requester(user_id=1, guild_id=guild)))
        assert refusal.limit is LimitKind.BANNED
        assert refusal.retry_at is None


def test_server_can_switch_generation_off(db: Database, make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    GuildStore(db).update(100, enabled=False)
    assert refused(ask(limiter)).limit is LimitKind.DISABLED


def test_direct_messages_have_member_limits_only(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(default=Tier(burst=2, max_concurrent_jobs=9))
    dm = Requester(user_id=1)
    accepted(ask(limiter, dm, count=2))
    assert refused(ask(limiter, dm)).limit is LimitKind.RATE
    assert limiter.allowance(dm).server is None
    accepted(ask(limiter, ALICE))  # a server is another place


def test_limits_can_be_switched_off(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(default=Tier(burst=1, max_concurrent_jobs=1), enabled=False)
    for _ in range(5):
        assert accepted(ask(limiter, count=4)).cost == 0


def test_failed_job_gives_its_cost_back_once(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(default=Tier(burst=4, max_concurrent_jobs=9))
    job = accepted(ask(limiter, count=3)).job
    assert limiter.allowance(ALICE).member.available_now == 1
    failed = limiter.jobs.mark_failed(job.id, "the GPU fell over")
    assert failed.refunded_at is not None
    allowance = limiter.allowance(ALICE)
    assert allowance.member.available_now == 4
    assert allowance.member.daily_used == 0
    assert allowance.server is not None
    assert allowance.server.daily_used == 0
    assert limiter.refund(job.id) == 0  # idempotent
    assert limiter.refund(job.id) == 0
    assert limiter.allowance(ALICE).member.available_now == 4


def test_refund_is_idempotent_when_called_directly(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(default=Tier(burst=4, max_concurrent_jobs=9))
    job = accepted(ask(limiter, count=2)).job
    assert limiter.refund(job.id) == 0  # still queued: nothing due
    limiter.jobs.mark_failed(job.id, "prompt refused by moderation", refund=False)
    assert limiter.allowance(ALICE).member.available_now == 2
    assert limiter.refund(job.id) == 2
    assert limiter.refund(job.id) == 0
    assert limiter.allowance(ALICE).member.available_now == 4


def test_cancel_before_start_refunds_but_not_after(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(default=Tier(burst=4, max_concurrent_jobs=9))
    waiting = accepted(ask(limiter, count=2)).job
    running = accepted(ask(limiter, count=2)).job
    limiter.jobs.mark_started(running.id)
    limiter.jobs.mark_cancelled(waiting.id)
    limiter.jobs.mark_cancelled(running.id)
    allowance = limiter.allowance(ALICE)
    assert allowance.member.available_now == 2
    assert allowance.member.daily_used == 2
    assert limiter.refund(running.id) == 0


def test_refund_after_the_daily_reset_leaves_the_new_day_alone(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(default=Tier(burst=4, daily_quota=10, max_concurrent_jobs=9))
    job = accepted(ask(limiter, count=4)).job
    clock.advance(timedelta(days=1).total_seconds())
    accepted(ask(limiter, count=1))
    limiter.jobs.mark_failed(job.id, "lost")
    assert limiter.allowance(ALICE).member.daily_used == 1


def test_allowance_spends_nothing(make_limiter: MakeLimiter, clock: FakeClock) -> None:
    limiter = make_limiter(default=Tier(burst=4, refill_seconds=30, daily_quota=50))
    fresh = limiter.allowance(ALICE)
    assert fresh.member.available_now == 4
    assert fresh.member.next_image_at is None
    assert fresh.daily_resets_at == datetime(2025, 3, 15, 0, 0, tzinfo=UTC)
    accepted(ask(limiter, count=3))
    for _ in range(3):
        allowance = limiter.allowance(ALICE)
    assert allowance.member.available_now == 1
    assert allowance.member.next_image_at == START + timedelta(seconds=30)
    assert allowance.member.full_at == START + timedelta(seconds=90)
    assert allowance.member.daily_remaining == 47
    assert allowance.member.active_jobs == 1
    assert allowance.images_now == 1
    accepted(ask(limiter, count=1))


def test_restart_keeps_the_quota(db_url: str, clock: FakeClock) -> None:
    settings = LimitsSettings(tiers={"default": Tier(burst=4, daily_quota=5)})
    first = open_db(db_url)
    accepted(ask(RateLimiter(first, settings, clock=clock), count=4))
    first.close()

    second = open_db(db_url)
    try:
        limiter = RateLimiter(second, settings, clock=clock)
        allowance = limiter.allowance(ALICE)
        assert allowance.member.daily_remaining == 1
        assert allowance.member.available_now == 0
        assert refused(ask(limiter)).limit is LimitKind.RATE
    finally:
        second.close()


# A full disk as each database reports it: SQLite's error text, PostgreSQL's SQLSTATE.
DISK_FULL = {
    "sqlite": [
        "CREATE TRIGGER disk_full BEFORE INSERT ON jobs "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION USING ERRCODE = 'disk_full', "
        "MESSAGE = 'could not extend file: No space left on device'; END $$",
        "CREATE TRIGGER disk_full BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION disk_full()",
    ],
}
DISK_FREE = {
    "sqlite": ["DROP TRIGGER disk_full"],
    "postgresql": ["DROP FUNCTION disk_full CASCADE"],
}


def test_failed_write_refuses_the_request_whole(db: Database, make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(default=Tier(burst=4, daily_quota=10))
    accepted(ask(limiter))
    before = limiter.allowance(ALICE)
    with db.transaction() as session:
        for statement in DISK_FULL[db.dialect_name]:
            session.execute(text(statement))
    with pytest.raises(DatabaseError) as caught:
        ask(limiter, count=2)
    assert "disk is full" in str(caught.value)
    assert limiter.allowance(ALICE) == before  # nothing spent
    assert len(limiter.jobs.active()) == 1  # nothing queued

    with db.transaction() as session:
        for statement in DISK_FREE[db.dialect_name]:
            session.execute(text(statement))
    assert accepted(ask(limiter, count=2)).daily_remaining == 7


async def test_decisions_run_off_the_event_loop(db: Database, make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(default=Tier(burst=4, max_concurrent_jobs=99))
    decisions = [
        await db.run(limiter.accept_job, ALICE, NewJob({"n": n}), JobShape()) for n in range(6)
    ]
    assert [d.accepted for d in decisions] == [True] * 4 + [False] * 2
    job = decisions[0]
    assert isinstance(job, Accepted)
    assert job.job.status is JobStatus.QUEUED
