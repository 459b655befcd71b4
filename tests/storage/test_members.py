"""Bans, tiers, notes, server settings and the moderation log."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.storage import Database, GuildStore, MemberStore
from tests.storage.fakes import FakeClock


def test_ban_and_unban_are_logged(db: Database, clock: FakeClock) -> None:
    members = MemberStore(db, clock=clock)
    until = clock.now + timedelta(days=1)
    banned = members.ban(10, 1, reason="spam", until=until, actor_id=99)
    assert banned.banned
    assert banned.ban_active(clock.now)
    assert not banned.ban_active(until)
    clock.advance(60)
    members.unban(10, 1, actor_id=99, reason="appeal")
    member = members.get(10, 1)
    assert member is not None
    assert not member.banned
    assert member.ban_reason == "spam"  # kept for the record
    events = members.events(guild_id=10, user_id=1)
    assert [e.kind for e in events] == ["unban", "ban"]
    assert events[1].actor_id == 99
    assert events[1].details == {"until": until.isoformat()}


def test_tier_and_notes(db: Database) -> None:
    members = MemberStore(db)
    members.set_tier(10, 1, "supporter", actor_id=99)
    members.set_notes(10, 1, "helpful in #art")
    member = members.get(10, 1)
    assert member is not None
    assert (member.tier, member.notes) == ("supporter", "helpful in #art")
    assert members.get(10, 2) is None


def test_moderation_events_can_point_at_jobs_and_images(db: Database) -> None:
    members = MemberStore(db)
    event = members.record_event(
        "prompt_blocked", guild_id=10, user_id=1, reason="blocked tag", details={"tag": "x"}
    )
    assert event.kind == "prompt_blocked"
    assert members.events(guild_id=10)[0].details == {"tag": "x"}


def test_guild_settings_change_only_what_is_given(db: Database) -> None:
    guilds = GuildStore(db)
    assert guilds.get(10) is None
    guilds.update(10, default_tier="generous", role_tiers=[(555, "supporter")])
    record = guilds.update(10, exempt_role_ids=[7, 7, 8])
    assert record.default_tier == "generous"
    assert record.role_tiers == ((555, "supporter"),)
    assert record.exempt_role_ids == frozenset({7, 8})
    assert record.enabled
    assert guilds.update(10, enabled=False, server_limits={"burst": 8}).server_limits == {
        "burst": 8
    }


def test_generation_defaults_merge_and_reset(db: Database) -> None:
    guilds = GuildStore(db)
    assert guilds.get_defaults(5) == {}
    assert guilds.set_defaults(5, {"quality": "Light v3.1", "steps": 24}) == {
        "quality": "Light v3.1",
        "steps": 24,
    }
    assert guilds.set_defaults(5, {"steps": None, "cfg": 6.0}) == {
        "quality": "Light v3.1",
        "cfg": 6.0,
    }
    assert guilds.get_defaults(5) == {"quality": "Light v3.1", "cfg": 6.0}
    record = guilds.get(5)
    assert record is not None
    assert record.enabled


def test_moderation_overrides_are_kept_per_server(db: Database) -> None:
    guilds = GuildStore(db)
    assert guilds.get_moderation(7) == {}
    guilds.set_moderation(7, {"blocked_tags_add": ["gore"], "explicit_threshold": 0.2})
    assert guilds.get_moderation(7) == {"blocked_tags_add": ["gore"], "explicit_threshold": 0.2}
    assert guilds.get_moderation(8) == {}


def test_names_too_long_for_their_column_are_refused_on_every_database(db: Database) -> None:
    """SQLite would store them whole and PostgreSQL refuse them: both refuse them alike."""
    members, guilds = MemberStore(db), GuildStore(db)
    longest = "t" * 64
    assert members.set_tier(1, 2, longest).tier == longest
    assert guilds.update(1, default_tier=longest).default_tier == longest
    with pytest.raises(ValueError, match="tier is at most 64 characters, not 65"):
        members.set_tier(1, 2, longest + "t")
    with pytest.raises(ValueError, match="default_tier is at most 64 characters"):
        guilds.update(1, default_tier=longest + "t")
    with pytest.raises(ValueError, match="kind is at most 32 characters"):
        members.record_event("k" * 33, guild_id=1)
    member, guild = members.get(1, 2), guilds.get(1)
    assert member is not None
    assert member.tier == longest
    assert guild is not None
    assert guild.default_tier == longest
    assert [e.kind for e in members.events(guild_id=1)] == ["set_tier"]
