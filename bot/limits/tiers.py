"""Which limits apply to whom: tiers, their per-server overrides, exemptions and bans.

A member with a tier set on their member row gets that tier; otherwise the most generous of
the server's default tier (guild settings, else ``default_tier``) and the tiers of the roles
they hold (``role_tiers`` in config and in guild settings). Per-server ``tier_overrides``
and ``server_limits`` override single fields (:func:`override_tier`: the one place a stored
override is applied). Administrators (when ``exempt_administrators``) and holders of an
exempt role skip every limit; banned members are refused.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session

from bot.config import LimitsSettings
from bot.storage.members import EVERYWHERE, GuildRecord
from bot.storage.models import GuildSettings, Member

log = logging.getLogger(__name__)
_MEMBER_ROWS = select(Member).where(
    Member.user_id == bindparam("uid"),
    or_(Member.guild_id == bindparam("gid"), Member.guild_id == EVERYWHERE),
)

Tier = LimitsSettings.Tier


class TierOverrideError(ValueError):
    """An override a tier refuses; the message names the field (``burst: ...``)."""


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks, as the Discord layer sees them."""

    user_id: int
    guild_id: int | None = None  # None in direct messages
    role_ids: frozenset[int] = frozenset()
    is_admin: bool = False


def override_tier(base: Tier, override: Mapping[str, Any] | None) -> Tier:
    """``base`` with the fields of ``override`` replaced.

    Raises :class:`TierOverrideError` naming the first field the tier refuses.
    """
    if not override:
        return base
    try:
        return Tier.model_validate({**base.model_dump(), **override})
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"])
        raise TierOverrideError(f"{field}: {error['msg']}") from None


def lenient_override(
    base: Tier, override: Mapping[str, Any] | None, what: str, guild: GuildRecord | None
) -> Tier:
    """:func:`override_tier`, or ``base`` (logged) when a stored override is invalid."""
    try:
        return override_tier(base, override)
    except TierOverrideError as exc:
        guild_id = guild.guild_id if guild else "?"
        log.warning("guild %s: ignoring invalid override of %s: %s", guild_id, what, exc)
        return base


def server_tier_name(guild: GuildRecord | None, settings: LimitsSettings) -> str:
    """The tier members of a server get by default: the server's own choice when it names a
    configured tier, else ``default_tier``."""
    if guild is not None and guild.default_tier is not None:
        if guild.default_tier in settings.tiers:
            return guild.default_tier
        log.warning("guild %s: unknown default tier %r", guild.guild_id, guild.default_tier)
    return settings.default_tier


def member_tier(guild: GuildRecord | None, settings: LimitsSettings) -> tuple[str, Tier]:
    """A server's default tier with the server's overrides applied (invalid ones ignored)."""
    name = server_tier_name(guild, settings)
    tier = tier_of(name, guild, settings)
    assert tier is not None  # the configuration names only configured tiers
    return name, tier


def server_tier(guild: GuildRecord | None, settings: LimitsSettings) -> Tier:
    """The limits of a whole server: ``limits.server`` with the server's ``server_limits``."""
    override = guild.server_limits if guild else None
    return lenient_override(settings.server, override, "server limits", guild)


def tier_of(name: str, guild: GuildRecord | None, settings: LimitsSettings) -> Tier | None:
    """The configured tier ``name`` with the server's override (None: no such tier)."""
    base = settings.tiers.get(name)
    if base is None:
        return None
    override = guild.tier_overrides.get(name) if guild is not None else None
    return lenient_override(base, override, f"tier {name!r}", guild)


def generosity(tier: Tier) -> tuple[float, int, float, int]:
    """A sort key: the more a tier allows, the larger."""
    quota = math.inf if tier.daily_quota == 0 else float(tier.daily_quota)
    return (quota, tier.burst, -tier.refill_seconds, tier.max_concurrent_jobs)


@dataclass(frozen=True, slots=True)
class Policy:
    """The limits that apply to one requester now."""

    tier_name: str
    tier: Tier
    server: Tier | None
    exempt: bool
    enabled: bool
    ban: Member | None


def resolve_policy(
    session: Session, settings: LimitsSettings, who: Requester, now: datetime
) -> Policy:
    """Read the server's and the member's rows and decide which limits apply."""
    row = None if who.guild_id is None else session.get(GuildSettings, who.guild_id)
    guild = None if row is None else GuildRecord.of(row)
    here = EVERYWHERE if who.guild_id is None else who.guild_id
    rows = {m.guild_id: m for m in session.scalars(_MEMBER_ROWS, {"uid": who.user_id, "gid": here})}
    local = rows.get(here)
    bans = [m for m in (local, rows.get(EVERYWHERE)) if m is not None and m.ban_active(now)]
    ban = bans[0] if bans else None
    explicit = None if local is None else local.tier

    cfg = settings
    exempt_roles = set(cfg.exempt_role_ids) | (guild.exempt_role_ids if guild else set())
    exempt = (cfg.exempt_administrators and who.is_admin) or bool(exempt_roles & who.role_ids)

    candidates = [server_tier_name(guild, cfg)]
    role_tiers = [(r.role_id, r.tier) for r in cfg.role_tiers]
    role_tiers += list(guild.role_tiers) if guild else []
    candidates += [t for r, t in role_tiers if r in who.role_ids and t in cfg.tiers]
    if explicit is not None and explicit in cfg.tiers:
        candidates = [explicit]
    named = [(n, t) for n in candidates if (t := tier_of(n, guild, cfg)) is not None]
    tier_name, tier = max(named, key=lambda nt: generosity(nt[1]))

    server = None if who.guild_id is None else server_tier(guild, cfg)
    return Policy(
        tier_name=tier_name,
        tier=tier,
        server=server,
        exempt=exempt,
        enabled=guild.enabled if guild else True,
        ban=ban,
    )
