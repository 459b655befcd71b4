"""bot.limits.tiers: which tier applies, and the one place a stored override is applied."""

from __future__ import annotations

from typing import Any

import pytest

from bot.config import LimitsSettings
from bot.limits.tiers import (
    TierOverrideError,
    generosity,
    lenient_override,
    member_tier,
    override_tier,
    server_tier,
    server_tier_name,
    tier_of,
)
from bot.storage.members import GuildRecord

Tier = LimitsSettings.Tier

LIMITS = LimitsSettings(
    tiers={"default": Tier(burst=4), "generous": Tier(burst=10, daily_quota=0)},
    server=Tier(burst=50),
)


def guild(
    default_tier: str | None = None,
    tier_overrides: dict[str, dict[str, Any]] | None = None,
    server_limits: dict[str, Any] | None = None,
) -> GuildRecord:
    return GuildRecord(
        guild_id=7,
        enabled=True,
        default_tier=default_tier,
        role_tiers=(),
        exempt_role_ids=frozenset(),
        tier_overrides=tier_overrides or {},
        server_limits=server_limits or {},
        generation_defaults={},
        moderation={},
    )


def test_override_replaces_fields_and_names_the_one_refused() -> None:
    base = Tier(burst=4, refill_seconds=30.0)
    assert override_tier(base, None) is base
    assert override_tier(base, {}) is base
    changed = override_tier(base, {"burst": 9})
    assert (changed.burst, changed.refill_seconds) == (9, 30.0)
    with pytest.raises(TierOverrideError, match=r"^burst: Input should be greater than"):
        override_tier(base, {"burst": 0})
    with pytest.raises(TierOverrideError, match=r"^daily_quota: "):
        override_tier(base, {"daily_quota": "lots"})


def test_lenient_override_logs_and_keeps_the_base(caplog: pytest.LogCaptureFixture) -> None:
    base = Tier(burst=4)
    assert lenient_override(base, {"burst": -1}, "server limits", guild()) is base
    assert "guild 7: ignoring invalid override of server limits: burst:" in caplog.text
    assert lenient_override(base, {"burst": 6}, "server limits", None).burst == 6


def test_server_tier_name_falls_back_to_the_configured_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert server_tier_name(None, LIMITS) == "default"
    assert server_tier_name(guild(default_tier="generous"), LIMITS) == "generous"
    assert caplog.text == ""
    assert server_tier_name(guild(default_tier="gold"), LIMITS) == "default"
    assert "unknown default tier 'gold'" in caplog.text


def test_tiers_with_a_servers_overrides() -> None:
    here = guild(
        default_tier="generous",
        tier_overrides={"generous": {"burst": 12}, "default": {"burst": -3}},
        server_limits={"burst": 60},
    )
    assert tier_of("gold", here, LIMITS) is None
    assert tier_of("default", here, LIMITS) == LIMITS.tiers["default"]  # invalid: ignored
    name, tier = member_tier(here, LIMITS)
    assert (name, tier.burst) == ("generous", 12)
    assert server_tier(here, LIMITS).burst == 60
    assert server_tier(None, LIMITS) == LIMITS.server


def test_generosity_orders_quota_then_burst_then_rate() -> None:
    tiers = {
        "slow": Tier(daily_quota=100, burst=50, refill_seconds=30.0),
        "unlimited": Tier(daily_quota=0, burst=1, refill_seconds=30.0),  # beats any quota
        "fast": Tier(daily_quota=100, burst=50, refill_seconds=5.0),
        "more": Tier(daily_quota=200, burst=1, refill_seconds=30.0),
        "burst": Tier(daily_quota=100, burst=60, refill_seconds=30.0),
    }
    ranked = sorted(tiers, key=lambda name: generosity(tiers[name]), reverse=True)
    assert ranked == ["unlimited", "more", "burst", "fast", "slow"]
