"""bot.admin.ServerAdmin: every operation the adapters run on a server's stored state."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.admin import ServerAdmin, UnknownTier, check_defaults, max_steps
from bot.config import LimitsSettings, Settings
from bot.limits import Requester, TierOverrideError
from bot.moderation import PolicySettingsError
from bot.request import RequestError
from bot.service import NotAllowed
from bot.storage import Database
from bot.storage.jobs import JobStore, NewJob
from bot.storage.members import GuildStore, MemberStore
from tests.storage.fakes import FakeClock

GUILD = 10
OTHER_GUILD = 11
ALICE = 1
BOB = 2
MOD = 3

Tier = LimitsSettings.Tier


class Canceller:
    """Records cancellations; job ids in ``finished`` raise NotAllowed, as the service does
    for a job that finished meanwhile."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, Requester, bool]] = []
        self.finished: set[int] = set()

    async def __call__(self, job_id: int, who: Requester, /, *, moderator: bool = False) -> None:
        self.calls.append((job_id, who, moderator))
        if job_id in self.finished:
            raise NotAllowed(f"job {job_id} is already finished")


@pytest.fixture
def settings() -> Settings:
    limits = LimitsSettings(
        tiers={"default": Tier(burst=4, daily_quota=20), "generous": Tier(burst=10)},
        server=Tier(burst=50, max_concurrent_jobs=9),
    )
    return Settings(limits=limits)


@pytest.fixture
def cancel() -> Canceller:
    return Canceller()


@pytest.fixture
def admin(db: Database, settings: Settings, clock: FakeClock, cancel: Canceller) -> ServerAdmin:
    return ServerAdmin(
        settings,
        db,
        jobs=JobStore(db, clock=clock),
        guilds=GuildStore(db, clock=clock),
        members=MemberStore(db, clock=clock),
        cancel=cancel,
        clock=clock,
    )


def add_job(admin: ServerAdmin, *, user_id: int = ALICE, guild_id: int | None = GUILD) -> int:
    return admin.jobs.add(NewJob({}), user_id=user_id, guild_id=guild_id).id


def finish(admin: ServerAdmin, job_id: int) -> None:
    admin.jobs.mark_started(job_id)
    admin.jobs.mark_finished(job_id)


# ---------------------------------------------------------------------- /imagine defaults


async def test_defaults_are_empty_outside_servers_and_until_set(admin: ServerAdmin) -> None:
    assert await admin.defaults(None) == {}
    assert await admin.defaults(GUILD) == {}


async def test_set_defaults_merges_cleans_and_reset_forgets_the_rest(admin: ServerAdmin) -> None:
    assert await admin.set_defaults(GUILD, {"steps": 20, "sampler": "euler A"}) == {
        "steps": 20,
        "sampler": "Euler a",
    }
    # None leaves a default as it is; other keys are kept.
    assert await admin.set_defaults(GUILD, {"cfg": 5, "steps": None}) == {
        "steps": 20,
        "sampler": "Euler a",
        "cfg": 5.0,
    }
    assert await admin.set_defaults(GUILD, {"hires": True}, reset=True) == {"hires": True}
    assert await admin.defaults(GUILD) == {"hires": True}
    assert await admin.defaults(OTHER_GUILD) == {}


async def test_a_refused_default_stores_nothing(admin: ServerAdmin) -> None:
    await admin.set_defaults(GUILD, {"steps": 20})
    with pytest.raises(RequestError, match="the default steps must be between 1 and 10"):
        await admin.set_defaults(GUILD, {"max_steps": 10})
    with pytest.raises(RequestError, match="unknown sampler"):
        await admin.set_defaults(GUILD, {"sampler": "nope"})
    assert await admin.defaults(GUILD) == {"steps": 20}


def test_check_defaults_and_max_steps(settings: Settings) -> None:
    with pytest.raises(RequestError, match="unknown server defaults: colour"):
        check_defaults({"colour": "red"}, settings)
    with pytest.raises(RequestError, match="width must be a multiple of 8"):
        check_defaults({"width": 1001}, settings)
    assert max_steps({"max_steps": 12}, settings) == 12
    assert max_steps({"max_steps": 500}, settings) == settings.engine.max_steps
    assert max_steps({}, settings) == settings.engine.max_steps


# ---------------------------------------------------------------------- limits


async def test_limits_are_the_configured_ones_until_changed(
    admin: ServerAdmin, settings: Settings
) -> None:
    limits = await admin.limits(GUILD)
    assert limits.enabled
    assert limits.tier_name == "default"
    assert limits.member == settings.limits.tiers["default"]
    assert limits.server == settings.limits.server


async def test_set_limits_overrides_fields_of_the_servers_default_tier(
    admin: ServerAdmin,
) -> None:
    admin.guilds.update(GUILD, default_tier="generous")
    limits = await admin.set_limits(
        GUILD, member={"burst": 3}, server={"daily_quota": 0}, enabled=False
    )
    assert limits.tier_name == "generous"
    assert limits.member.burst == 3
    assert limits.server.daily_quota == 0
    assert limits.server.burst == 50
    assert not limits.enabled
    # Later changes keep the earlier ones.
    limits = await admin.set_limits(GUILD, member={"refill_seconds": 2.0}, server={})
    assert (limits.member.burst, limits.member.refill_seconds) == (3, 2.0)
    record = admin.guilds.get(GUILD)
    assert record is not None
    assert record.tier_overrides == {"generous": {"burst": 3, "refill_seconds": 2.0}}


async def test_reset_limits_forgets_overrides_and_enables(
    admin: ServerAdmin, settings: Settings
) -> None:
    await admin.set_limits(GUILD, member={"burst": 3}, server={"burst": 5}, enabled=False)
    limits = await admin.set_limits(GUILD, member={}, server={}, reset=True)
    assert limits.enabled
    assert limits.member == settings.limits.tiers["default"]
    assert limits.server == settings.limits.server
    limits = await admin.set_limits(GUILD, member={}, server={}, reset=True, enabled=False)
    assert not limits.enabled


async def test_a_refused_limit_names_the_field_and_stores_nothing(admin: ServerAdmin) -> None:
    await admin.set_limits(GUILD, member={"burst": 3}, server={})
    with pytest.raises(TierOverrideError, match=r"^burst: "):
        await admin.set_limits(GUILD, member={"burst": 0}, server={})
    with pytest.raises(TierOverrideError, match=r"^refill_seconds: "):
        await admin.set_limits(GUILD, member={}, server={"refill_seconds": -1})
    assert (await admin.limits(GUILD)).member.burst == 3


async def test_stored_invalid_overrides_are_ignored_when_shown(
    admin: ServerAdmin, settings: Settings
) -> None:
    admin.guilds.update(GUILD, tier_overrides={"default": {"burst": -5}}, server_limits={"x": 1})
    limits = await admin.limits(GUILD)
    assert limits.member == settings.limits.tiers["default"]
    assert limits.server == settings.limits.server


# ---------------------------------------------------------------------- moderation policy


async def test_change_moderation_merges_and_refusals_store_nothing(admin: ServerAdmin) -> None:
    view = await admin.change_moderation(GUILD, {"questionable_threshold": 0.5})
    assert view.overrides == {"questionable_threshold": 0.5}
    view = await admin.change_moderation(GUILD, {"spoiler": "always"})
    assert view.overrides == {"questionable_threshold": 0.5, "spoiler": "always"}
    with pytest.raises(PolicySettingsError, match="questionable_threshold"):
        await admin.change_moderation(GUILD, {"questionable_threshold": 2.0})
    assert (await admin.moderation(GUILD)).overrides == view.overrides
    assert view.default_blocked == len((await admin.moderation(OTHER_GUILD)).policy.blocked_tags)


async def test_reset_moderation_one_key_or_all(admin: ServerAdmin) -> None:
    await admin.change_moderation(GUILD, {"questionable_threshold": 0.5, "spoiler": "always"})
    view = await admin.reset_moderation(GUILD, "spoiler")
    assert view.overrides == {"questionable_threshold": 0.5}
    view = await admin.reset_moderation(GUILD)
    assert view.overrides == {}


async def test_invalid_stored_moderation_falls_back_to_the_defaults(
    admin: ServerAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    admin.guilds.set_moderation(GUILD, {"questionable_threshold": 7})
    view = await admin.moderation(GUILD)
    assert view.overrides == {}
    assert "stored moderation settings are invalid" in caplog.text


async def test_block_adds_tags_and_takes_them_off_the_allowed_list(admin: ServerAdmin) -> None:
    view = await admin.block(GUILD, ["gore"])
    assert view.policy.blocked.find("gore")
    await admin.unblock(GUILD, ["nude"])
    assert (await admin.moderation(GUILD)).overrides["blocked_tags_remove"] == ["nude"]
    view = await admin.block(GUILD, ["Nude", "blood"])
    assert "blocked_tags_remove" not in view.overrides
    assert view.overrides["blocked_tags_add"] == ["gore", "Nude", "blood"]
    assert view.policy.blocked.find("nude")


async def test_unblock_allows_bot_wide_tags_drops_server_ones_and_names_the_rest(
    admin: ServerAdmin,
) -> None:
    await admin.block(GUILD, ["gore", "blood"])
    done = await admin.unblock(GUILD, ["gore", "completely nude"])
    assert done.view.overrides["blocked_tags_add"] == ["blood"]
    assert done.view.overrides["blocked_tags_remove"] == ["completely nude"]
    assert not done.view.policy.blocked.find("gore")
    assert done.still == ["completely nude"]  # "nude" is still blocked
    done = await admin.unblock(GUILD, ["nude", "completely nude"])
    assert done.view.overrides["blocked_tags_remove"] == ["completely nude", "nude"]  # deduplicated
    assert done.still == []


# ---------------------------------------------------------------------- members


async def test_ban_records_it_and_cancels_the_members_jobs_here(
    admin: ServerAdmin, cancel: Canceller, clock: FakeClock
) -> None:
    first = add_job(admin)
    second = add_job(admin)
    add_job(admin, guild_id=OTHER_GUILD)  # another server: untouched
    add_job(admin, user_id=BOB)  # another member: untouched
    cancel.finished.add(second)
    until = clock() + timedelta(days=1)
    banned = await admin.ban(GUILD, ALICE, reason="spam", actor_id=MOD, until=until)
    assert banned.member.ban_active(clock())
    assert banned.member.ban_reason == "spam"
    assert banned.cancelled == 1
    assert [(job, who.user_id, who.guild_id, mod) for job, who, mod in cancel.calls] == [
        (first, MOD, GUILD, True),
        (second, MOD, GUILD, True),
    ]
    [event] = await admin.history(GUILD, user_id=ALICE)
    assert (event.kind, event.actor_id, event.reason) == ("ban", MOD, "spam")


async def test_unban_lifts_an_active_ban_only(admin: ServerAdmin, clock: FakeClock) -> None:
    assert await admin.unban(GUILD, ALICE, actor_id=MOD) is None
    await admin.ban(GUILD, ALICE, reason="spam", actor_id=MOD, until=clock() + timedelta(hours=1))
    clock.advance(7200)  # the ban has ended by itself
    assert await admin.unban(GUILD, ALICE, actor_id=MOD) is None
    await admin.ban(GUILD, ALICE, reason="again", actor_id=MOD)
    record = await admin.unban(GUILD, ALICE, actor_id=MOD, reason="sorry")
    assert record is not None
    assert not record.ban_active(clock())
    kinds = [e.kind for e in await admin.history(GUILD, user_id=ALICE)]
    assert kinds == ["unban", "ban", "ban"]


async def test_set_tier_accepts_configured_tiers_only(admin: ServerAdmin) -> None:
    record = await admin.set_tier(GUILD, ALICE, "generous", actor_id=MOD)
    assert record.tier == "generous"
    with pytest.raises(UnknownTier, match="unknown tier 'gold': choose one of default, generous"):
        await admin.set_tier(GUILD, ALICE, "gold", actor_id=MOD)
    assert (await admin.set_tier(GUILD, ALICE, None, actor_id=MOD)).tier is None
    [back, given] = await admin.history(GUILD)
    assert (back.kind, back.details, given.details) == (
        "set_tier",
        {"tier": None},
        {"tier": "generous"},
    )


async def test_history_is_newest_first_per_server_and_member(
    admin: ServerAdmin, clock: FakeClock
) -> None:
    await admin.ban(GUILD, ALICE, reason="a", actor_id=MOD)
    clock.advance(1)
    await admin.ban(GUILD, BOB, reason="b", actor_id=MOD)
    clock.advance(1)
    await admin.ban(OTHER_GUILD, ALICE, reason="c", actor_id=MOD)
    assert [e.reason for e in await admin.history(GUILD)] == ["b", "a"]
    assert [e.reason for e in await admin.history(GUILD, user_id=ALICE)] == ["a"]
    assert [e.reason for e in await admin.history(GUILD, limit=1)] == ["b"]


# ---------------------------------------------------------------------- jobs and messages


async def test_made_by_finds_jobs_of_this_server_only(admin: ServerAdmin) -> None:
    job_id = add_job(admin)
    admin.jobs.mark_started(job_id)
    admin.jobs.add_image(job_id, index=0, seed=7, width=64, height=64, content_hash="h")
    made = await admin.made_by(job_id, GUILD)
    assert made is not None
    assert made.job.id == job_id
    assert [(i.index, i.seed) for i in made.images] == [(0, 7)]
    assert await admin.made_by(job_id, OTHER_GUILD) is None
    assert await admin.made_by(job_id, None) is None
    assert await admin.made_by(999, GUILD) is None
    assert [i.seed for i in await admin.images(job_id)] == [7]


async def test_only_finished_jobs_of_the_member_here_are_purgeable(admin: ServerAdmin) -> None:
    mine = add_job(admin)
    assert not await admin.purgeable(mine, GUILD, ALICE)  # still waiting: being edited
    finish(admin, mine)
    assert await admin.purgeable(mine, GUILD, ALICE)
    assert not await admin.purgeable(mine, GUILD, BOB)
    assert not await admin.purgeable(mine, OTHER_GUILD, ALICE)
    assert not await admin.purgeable(999, GUILD, ALICE)


async def test_record_purge_and_delete(admin: ServerAdmin) -> None:
    job_id = add_job(admin)
    event = await admin.record_purge(
        GUILD, ALICE, actor_id=MOD, channel_id=5, message_ids=[9, 8], job_ids=[4, 2], reason="r"
    )
    assert event.kind == "purge"
    assert event.details == {"channel_id": 5, "message_ids": [9, 8], "job_ids": [2, 4]}
    job = admin.jobs.get(job_id)
    assert await admin.record_delete(job, ALICE) is None  # their own images
    deleted = await admin.record_delete(job, MOD)
    assert deleted is not None
    assert (deleted.kind, deleted.user_id, deleted.actor_id, deleted.job_id) == (
        "image_deleted",
        ALICE,
        MOD,
        job_id,
    )
    assert [e.kind for e in await admin.history(GUILD)] == ["image_deleted", "purge"]


async def test_set_message_remembers_where_the_result_is(admin: ServerAdmin) -> None:
    job_id = add_job(admin)
    await admin.set_message(job_id, 1234)
    assert admin.jobs.get(job_id).message_id == 1234
