"""Members as the bot knows them (bans, tiers, notes), server settings, moderation events.

A member row is per server; ``guild_id = 0`` holds bans that apply everywhere (and in
direct messages). All methods are synchronous; call them through ``Database.run``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.storage.clock import as_utc
from bot.storage.database import Store, insert_missing
from bot.storage.models import GuildSettings, Member, ModerationEvent

EVERYWHERE = 0
"""``guild_id`` of member rows that apply in every server and in direct messages."""


@dataclass(frozen=True, slots=True)
class MemberRecord:
    guild_id: int
    user_id: int
    tier: str | None
    banned: bool
    ban_reason: str | None
    banned_at: datetime | None
    banned_until: datetime | None
    banned_by: int | None
    notes: str | None

    @classmethod
    def of(cls, row: Member) -> MemberRecord:
        return cls(
            guild_id=row.guild_id,
            user_id=row.user_id,
            tier=row.tier,
            banned=row.banned,
            ban_reason=row.ban_reason,
            banned_at=row.banned_at,
            banned_until=row.banned_until,
            banned_by=row.banned_by,
            notes=row.notes,
        )

    def ban_active(self, now: datetime) -> bool:
        return self.banned and (self.banned_until is None or self.banned_until > now)


@dataclass(frozen=True, slots=True)
class GuildRecord:
    guild_id: int
    enabled: bool
    default_tier: str | None
    role_tiers: tuple[tuple[int, str], ...]
    exempt_role_ids: frozenset[int]
    tier_overrides: dict[str, dict[str, Any]]
    server_limits: dict[str, Any]
    generation_defaults: dict[str, Any]
    moderation: dict[str, Any]

    @classmethod
    def of(cls, row: GuildSettings) -> GuildRecord:
        role_tiers: list[tuple[int, str]] = []
        for entry in row.role_tiers or []:
            try:
                role_tiers.append((int(entry["role_id"]), str(entry["tier"])))
            except (KeyError, TypeError, ValueError):
                continue
        return cls(
            guild_id=row.guild_id,
            enabled=row.enabled,
            default_tier=row.default_tier,
            role_tiers=tuple(role_tiers),
            exempt_role_ids=frozenset(int(r) for r in row.exempt_role_ids or []),
            tier_overrides={str(k): dict(v) for k, v in (row.tier_overrides or {}).items()},
            server_limits=dict(row.server_limits or {}),
            generation_defaults=dict(row.generation_defaults or {}),
            moderation=dict(row.moderation or {}),
        )


@dataclass(frozen=True, slots=True)
class ModerationEventRecord:
    id: int
    created_at: datetime
    kind: str
    guild_id: int | None
    user_id: int | None
    actor_id: int | None
    reason: str | None
    job_id: int | None
    image_id: int | None
    details: dict[str, Any] | None

    @classmethod
    def of(cls, row: ModerationEvent) -> ModerationEventRecord:
        return cls(
            id=row.id,
            created_at=row.created_at,
            kind=row.kind,
            guild_id=row.guild_id,
            user_id=row.user_id,
            actor_id=row.actor_id,
            reason=row.reason,
            job_id=row.job_id,
            image_id=row.image_id,
            details=row.details,
        )


def _fits(column: Any, value: str | None) -> str | None:
    """``value`` if it fits ``column`` (a ``String(n)``), else ValueError. SQLite stores
    any length, PostgreSQL refuses what is longer: both refuse it here, in the same words."""
    length = getattr(column.type, "length", None)
    if value is not None and length is not None and len(value) > length:
        raise ValueError(f"{column.key} is at most {length} characters, not {len(value)}")
    return value


def _member_row(session: Session, guild_id: int, user_id: int, now: datetime) -> Member:
    """The member's row, created when missing, locked until the transaction ends."""
    key = (guild_id, user_id)
    row = session.get(Member, key, with_for_update=True)
    if row is None:
        values = {"guild_id": guild_id, "user_id": user_id, "banned": False}
        insert_missing(session, Member, {**values, "created_at": now, "updated_at": now})
        row = session.get(Member, key, with_for_update=True, populate_existing=True)
        assert row is not None
    row.updated_at = now
    return row


def _guild_row(session: Session, guild_id: int, now: datetime) -> GuildSettings:
    """The server's settings row, created when missing, locked until the transaction ends."""
    row = session.get(GuildSettings, guild_id, with_for_update=True)
    if row is None:
        values = {
            "guild_id": guild_id,
            "enabled": True,
            "role_tiers": [],
            "exempt_role_ids": [],
            "tier_overrides": {},
            "server_limits": {},
            "generation_defaults": {},
            "moderation": {},
            "created_at": now,
            "updated_at": now,
        }
        insert_missing(session, GuildSettings, values)
        row = session.get(GuildSettings, guild_id, with_for_update=True, populate_existing=True)
        assert row is not None
    row.updated_at = now
    return row


class MemberStore(Store):
    """Bans, tiers and notes of members, and the moderation log."""

    def get(self, guild_id: int, user_id: int) -> MemberRecord | None:
        with self.db.read() as session:
            row = session.get(Member, (guild_id, user_id))
            return None if row is None else MemberRecord.of(row)

    def _change(
        self,
        kind: str,
        guild_id: int,
        user_id: int,
        change: Callable[[Member, datetime], None],
        *,
        actor_id: int | None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> MemberRecord:
        """Apply ``change`` to the member's row (created when missing) and record the event
        ``kind`` about it, in one transaction."""
        now = self._now()
        with self.db.transaction() as session:
            row = _member_row(session, guild_id, user_id, now)
            change(row, now)
            _event(
                session,
                now,
                kind,
                guild_id=guild_id,
                user_id=user_id,
                actor_id=actor_id,
                reason=reason,
                details=details,
            )
            session.flush()
            return MemberRecord.of(row)

    def ban(
        self,
        guild_id: int,
        user_id: int,
        *,
        reason: str,
        until: datetime | None = None,
        actor_id: int | None = None,
    ) -> MemberRecord:
        """Ban a member from generating (``until=None``: until unbanned)."""
        end = None if until is None else as_utc(until)

        def ban(row: Member, now: datetime) -> None:
            row.banned = True
            row.ban_reason = reason
            row.banned_at = now
            row.banned_until = end
            row.banned_by = actor_id

        details = None if end is None else {"until": end.isoformat()}
        return self._change(
            "ban", guild_id, user_id, ban, actor_id=actor_id, reason=reason, details=details
        )

    def unban(
        self, guild_id: int, user_id: int, *, actor_id: int | None = None, reason: str | None = None
    ) -> MemberRecord:
        def unban(row: Member, now: datetime) -> None:
            row.banned = False
            row.banned_until = None

        return self._change("unban", guild_id, user_id, unban, actor_id=actor_id, reason=reason)

    def set_tier(
        self, guild_id: int, user_id: int, tier: str | None, *, actor_id: int | None = None
    ) -> MemberRecord:
        """Give a member a named tier regardless of roles (None: back to roles and defaults)."""
        _fits(Member.tier, tier)

        def set_tier(row: Member, now: datetime) -> None:
            row.tier = tier

        return self._change(
            "set_tier", guild_id, user_id, set_tier, actor_id=actor_id, details={"tier": tier}
        )

    def set_notes(self, guild_id: int, user_id: int, notes: str | None) -> MemberRecord:
        now = self._now()
        with self.db.transaction() as session:
            row = _member_row(session, guild_id, user_id, now)
            row.notes = notes
            session.flush()
            return MemberRecord.of(row)

    def record_event(
        self,
        kind: str,
        *,
        guild_id: int | None = None,
        user_id: int | None = None,
        actor_id: int | None = None,
        reason: str | None = None,
        job_id: int | None = None,
        image_id: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> ModerationEventRecord:
        with self.db.transaction() as session:
            row = _event(
                session,
                self._now(),
                kind,
                guild_id=guild_id,
                user_id=user_id,
                actor_id=actor_id,
                reason=reason,
                details=details,
                job_id=job_id,
                image_id=image_id,
            )
            session.flush()
            return ModerationEventRecord.of(row)

    def events(
        self, *, guild_id: int | None = None, user_id: int | None = None, limit: int = 50
    ) -> list[ModerationEventRecord]:
        """The newest events first, optionally of one server and/or member."""
        query = select(ModerationEvent)
        if guild_id is not None:
            query = query.where(ModerationEvent.guild_id == guild_id)
        if user_id is not None:
            query = query.where(ModerationEvent.user_id == user_id)
        query = query.order_by(ModerationEvent.created_at.desc(), ModerationEvent.id.desc())
        with self.db.read() as session:
            return [ModerationEventRecord.of(r) for r in session.scalars(query.limit(limit))]


def _event(
    session: Session,
    now: datetime,
    kind: str,
    *,
    guild_id: int | None,
    user_id: int | None,
    actor_id: int | None,
    reason: str | None = None,
    details: Mapping[str, Any] | None = None,
    job_id: int | None = None,
    image_id: int | None = None,
) -> ModerationEvent:
    row = ModerationEvent(
        created_at=now,
        kind=_fits(ModerationEvent.kind, kind),
        guild_id=guild_id,
        user_id=user_id,
        actor_id=actor_id,
        reason=reason,
        job_id=job_id,
        image_id=image_id,
        details=None if details is None else dict(details),
    )
    session.add(row)
    return row


_UNCHANGED: Any = object()


class GuildStore(Store):
    """Per-server settings, including overrides of the configured limits."""

    def get(self, guild_id: int) -> GuildRecord | None:
        with self.db.read() as session:
            row = session.get(GuildSettings, guild_id)
            return None if row is None else GuildRecord.of(row)

    def update(
        self,
        guild_id: int,
        *,
        enabled: bool = _UNCHANGED,
        default_tier: str | None = _UNCHANGED,
        role_tiers: Iterable[tuple[int, str]] = _UNCHANGED,
        exempt_role_ids: Iterable[int] = _UNCHANGED,
        tier_overrides: Mapping[str, Mapping[str, Any]] = _UNCHANGED,
        server_limits: Mapping[str, Any] = _UNCHANGED,
    ) -> GuildRecord:
        """Change the given settings of a server (creating its row); others stay as they are.

        Tier names and limit fields are checked by ``bot.limits`` when used: an unknown tier
        or an invalid override is ignored there (and logged), never fatal.
        """
        now = self._now()
        with self.db.transaction() as session:
            row = _guild_row(session, guild_id, now)
            if enabled is not _UNCHANGED:
                row.enabled = enabled
            if default_tier is not _UNCHANGED:
                row.default_tier = _fits(GuildSettings.default_tier, default_tier)
            if role_tiers is not _UNCHANGED:
                row.role_tiers = [{"role_id": int(r), "tier": str(t)} for r, t in role_tiers]
            if exempt_role_ids is not _UNCHANGED:
                row.exempt_role_ids = sorted({int(r) for r in exempt_role_ids})
            if tier_overrides is not _UNCHANGED:
                row.tier_overrides = {str(k): dict(v) for k, v in tier_overrides.items()}
            if server_limits is not _UNCHANGED:
                row.server_limits = dict(server_limits)
            session.flush()
            return GuildRecord.of(row)

    def get_moderation(self, guild_id: int) -> dict[str, Any]:
        """The server's moderation overrides (empty: the configured defaults apply)."""
        record = self.get(guild_id)
        return {} if record is None else record.moderation

    def set_moderation(self, guild_id: int, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the server's moderation overrides with ``overrides`` (already validated
        by :func:`bot.moderation.validate_overrides` or ``merge_overrides``)."""
        now = self._now()
        with self.db.transaction() as session:
            row = _guild_row(session, guild_id, now)
            row.moderation = dict(overrides)
            return dict(row.moderation)

    def get_defaults(self, guild_id: int) -> dict[str, Any]:
        """The server's /imagine defaults (empty: the configured defaults apply)."""
        record = self.get(guild_id)
        return {} if record is None else record.generation_defaults

    def set_defaults(self, guild_id: int, values: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``values`` into the server's /imagine defaults; a ``None`` value removes a
        key (back to the configured default). Returns the defaults now in force."""
        now = self._now()
        with self.db.transaction() as session:
            row = _guild_row(session, guild_id, now)
            merged = dict(row.generation_defaults or {})
            for key, value in values.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            row.generation_defaults = merged
            return dict(merged)
