"""What admins and moderators do to a server's stored state, without Discord.

:class:`ServerAdmin` (reachable as ``ImagineService.admin``) is the one door the adapters go
through for everything besides submitting and cancelling jobs: a server's ``/imagine``
defaults, its limits and its moderation policy; bans, unbans and member tiers; the records
of purges and deletions; the moderation history; and the lookups behind "Who made this?".
The adapters parse options, check the permissions of the interaction and format the answers;
every rule (what a value may be, how a change merges with what is stored) lives here.

Errors for people to read: :class:`~bot.request.RequestError` (defaults),
:class:`~bot.limits.TierOverrideError` (limits), :class:`~bot.moderation.PolicySettingsError`
(moderation) and :class:`UnknownTier`. A database failure raises
:class:`~bot.storage.database.DatabaseError`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from bot.config import Settings
from bot.limits import Requester, Tier
from bot.limits.tiers import member_tier, override_tier, server_tier, server_tier_name
from bot.moderation import GuildPolicy, PolicySettingsError, merge_overrides, tag_key
from bot.prompts import QUALITY_PRESETS, STYLE_PRESETS
from bot.request import RequestError, find_sampler
from bot.storage.clock import Clock, utc_now
from bot.storage.database import Database
from bot.storage.jobs import ImageRecord, JobNotFoundError, JobRecord, JobStore
from bot.storage.members import GuildStore, MemberRecord, MemberStore, ModerationEventRecord

log = logging.getLogger(__name__)

DEFAULT_KEYS: Final = (
    "quality",
    "style",
    "steps",
    "max_steps",
    "cfg",
    "sampler",
    "width",
    "height",
    "hires",
    "previews",
)
"""The ``/imagine`` options a server may give defaults for (``previews``: live previews
while rendering, on unless set to false)."""


class Canceller(Protocol):
    """Cancels a job: :meth:`bot.service.ImagineService.cancel`."""

    def __call__(
        self, job_id: int, who: Requester, /, *, moderator: bool = ...
    ) -> Awaitable[object]: ...


class UnknownTier(ValueError):
    """A tier name the configuration does not define."""


def max_steps(defaults: Mapping[str, Any], settings: Settings) -> int:
    """The step limit in a server: its own when set and lower, else the configured one."""
    limit = settings.engine.max_steps
    own = defaults.get("max_steps")
    if isinstance(own, int) and 1 <= own < limit:
        return own
    return limit


def previews_on(defaults: Mapping[str, Any]) -> bool:
    """Whether a server with ``defaults`` shows live previews (yes unless it said no)."""
    return defaults.get("previews") is not False


def check_defaults(values: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Validate server defaults; returns them cleaned, or raises :class:`RequestError`."""
    engine = settings.engine
    unknown = sorted(set(values) - set(DEFAULT_KEYS))
    if unknown:
        raise RequestError("unknown server defaults: {names}", names=", ".join(unknown))
    clean = dict(values)
    if "quality" in clean and clean["quality"] not in QUALITY_PRESETS:
        raise RequestError("unknown quality preset {name}", name=repr(clean["quality"]))
    if "style" in clean and clean["style"] not in STYLE_PRESETS:
        raise RequestError("unknown style preset {name}", name=repr(clean["style"]))
    if "sampler" in clean:
        clean["sampler"] = find_sampler(str(clean["sampler"]))
    if "max_steps" in clean and not 1 <= int(clean["max_steps"]) <= engine.max_steps:
        raise RequestError("max_steps must be between 1 and {most}", most=engine.max_steps)
    limit = int(clean.get("max_steps", engine.max_steps))
    if "steps" in clean and not 1 <= int(clean["steps"]) <= limit:
        raise RequestError("the default steps must be between 1 and {most}", most=limit)
    if "cfg" in clean:
        clean["cfg"] = float(clean["cfg"])
        if not 1.0 <= clean["cfg"] <= 30.0:
            raise RequestError("the default CFG scale must be between 1 and 30")
    if "previews" in clean and not isinstance(clean["previews"], bool):
        raise RequestError("previews must be true or false")
    for side in ("width", "height"):
        if side in clean:
            value = int(clean[side])
            if value % 8 or not engine.min_side <= value <= engine.max_side:
                raise RequestError(
                    "{name} must be a multiple of 8 between {low} and {high}",
                    name=side,
                    low=engine.min_side,
                    high=engine.max_side,
                )
    return clean


@dataclass(frozen=True)
class ServerLimits:
    """The limits in force in a server (invalid stored overrides ignored)."""

    enabled: bool
    tier_name: str  # the tier members get by default
    member: Tier
    server: Tier


@dataclass(frozen=True)
class ModerationView:
    """A server's moderation policy and the overrides it is made of."""

    policy: GuildPolicy
    overrides: dict[str, Any]  # empty when the stored ones are no longer valid
    default_blocked: int  # how many tags the bot-wide policy blocks


@dataclass(frozen=True)
class Unblocked:
    """The policy after ``/settings moderation unblock``; ``still``: the tags asked for that
    stay refused because they contain other blocked tags."""

    view: ModerationView
    still: list[str]


@dataclass(frozen=True)
class Banned:
    member: MemberRecord
    cancelled: int  # the member's jobs in the server that were cancelled


@dataclass(frozen=True)
class MadeBy:
    """A job of a server and its stored images ("Who made this?")."""

    job: JobRecord
    images: list[ImageRecord]


class ServerAdmin:
    """See the module documentation. Every method is a coroutine running the stores on the
    database's threads."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        jobs: JobStore,
        guilds: GuildStore,
        members: MemberStore,
        cancel: Canceller,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.db = db
        self.jobs = jobs
        self.guilds = guilds
        self.members = members
        self.cancel = cancel
        self.clock = clock

    # ------------------------------------------------------------ /imagine defaults
    async def defaults(self, guild_id: int | None) -> dict[str, Any]:
        """A server's ``/imagine`` defaults (none outside servers)."""
        if guild_id is None:
            return {}
        return await self.db.run(self.guilds.get_defaults, guild_id)

    async def set_defaults(
        self, guild_id: int, changes: Mapping[str, Any], *, reset: bool = False
    ) -> dict[str, Any]:
        """Change the given defaults (``None`` values are left as they are; ``reset``: forget
        the others first); returns the defaults now in force. Raises :class:`RequestError`
        and stores nothing when a value is refused."""
        values = {} if reset else await self.defaults(guild_id)
        values.update({k: v for k, v in changes.items() if v is not None})
        clean = check_defaults(values, self.settings)
        # set_defaults merges and drops keys given as None: this replaces them all.
        replacement = {key: clean.get(key) for key in DEFAULT_KEYS}
        return await self.db.run(self.guilds.set_defaults, guild_id, replacement)

    # ------------------------------------------------------------ limits
    async def limits(self, guild_id: int) -> ServerLimits:
        record = await self.db.run(self.guilds.get, guild_id)
        limits = self.settings.limits
        tier_name, member = member_tier(record, limits)
        return ServerLimits(
            enabled=record.enabled if record else True,
            tier_name=tier_name,
            member=member,
            server=server_tier(record, limits),
        )

    async def set_limits(
        self,
        guild_id: int,
        *,
        member: Mapping[str, Any],
        server: Mapping[str, Any],
        enabled: bool | None = None,
        reset: bool = False,
    ) -> ServerLimits:
        """Override fields of the server's default tier (``member``) and of the whole
        server's limits; ``reset``: forget the stored overrides first (and enable the bot
        unless ``enabled`` says otherwise). Raises :class:`~bot.limits.TierOverrideError`
        and stores nothing when a value is refused."""
        limits = self.settings.limits
        record = await self.db.run(self.guilds.get, guild_id)
        tier_name = server_tier_name(record, limits)
        kept = None if reset else record
        overrides = dict(kept.tier_overrides) if kept else {}
        member_fields = {**overrides.get(tier_name, {}), **member}
        server_fields = {**(kept.server_limits if kept else {}), **server}
        override_tier(limits.tiers[tier_name], member_fields)
        override_tier(limits.server, server_fields)
        overrides[tier_name] = member_fields
        changes: dict[str, Any] = {"tier_overrides": overrides, "server_limits": server_fields}
        if enabled is not None:
            changes["enabled"] = enabled
        elif reset:
            changes["enabled"] = True
        await self.db.run(lambda: self.guilds.update(guild_id, **changes))
        return await self.limits(guild_id)

    # ------------------------------------------------------------ moderation policy
    async def moderation(self, guild_id: int) -> ModerationView:
        """The moderation policy in force in a server; stored overrides that a rule change
        made invalid are ignored (and logged)."""
        settings = self.settings.moderation
        overrides = await self.db.run(self.guilds.get_moderation, guild_id)
        try:
            policy = GuildPolicy.from_settings(settings, overrides)
        except PolicySettingsError as exc:  # stored before a rule changed: the defaults
            overrides = {}
            policy = GuildPolicy.from_settings(settings)
            log.warning("guild %s: stored moderation settings are invalid: %s", guild_id, exc)
        return ModerationView(
            policy, overrides, len(GuildPolicy.from_settings(settings).blocked_tags)
        )

    async def change_moderation(
        self, guild_id: int, changes: Mapping[str, Any], *, replace: bool = False
    ) -> ModerationView:
        """Merge ``changes`` (a ``None`` value resets a key) into the stored overrides, or
        replace them all; raises :class:`PolicySettingsError` and stores nothing when a value
        is refused."""
        current = {} if replace else await self.db.run(self.guilds.get_moderation, guild_id)
        merged = merge_overrides(current, changes)
        await self.db.run(self.guilds.set_moderation, guild_id, merged)
        return await self.moderation(guild_id)

    async def reset_moderation(self, guild_id: int, key: str | None = None) -> ModerationView:
        """One setting back to the bot's default, or all of them (``key=None``)."""
        if key is None:
            return await self.change_moderation(guild_id, {}, replace=True)
        return await self.change_moderation(guild_id, {key: None})

    async def block(self, guild_id: int, tags: Sequence[str]) -> ModerationView:
        """Refuse ``tags`` too outside age-restricted channels (allowing them no longer)."""
        current = await self.db.run(self.guilds.get_moderation, guild_id)
        keys = {tag_key(tag) for tag in tags}
        allowed = _without(current.get("blocked_tags_remove"), keys)
        changes = {
            "blocked_tags_add": [*(current.get("blocked_tags_add") or []), *tags],
            "blocked_tags_remove": allowed or None,
        }
        return await self.change_moderation(guild_id, changes)

    async def unblock(self, guild_id: int, tags: Sequence[str]) -> Unblocked:
        """Allow ``tags``: those this server blocked are dropped, those the bot blocks are
        allowed here. Tags that contain other blocked tags stay refused (``still``)."""
        settings = self.settings.moderation
        current = await self.db.run(self.guilds.get_moderation, guild_id)
        keys = {tag_key(tag) for tag in tags}
        added = _without(current.get("blocked_tags_add"), keys)
        bot_wide = GuildPolicy.from_settings(settings).blocked
        allowed = [*(current.get("blocked_tags_remove") or [])]
        allowed += [tag for tag in tags if bot_wide.find(tag)]
        changes = {"blocked_tags_add": added or None, "blocked_tags_remove": allowed or None}
        after = GuildPolicy.from_settings(settings, merge_overrides(current, changes))
        still = [tag for tag in tags if after.blocked.find(tag)]
        return Unblocked(await self.change_moderation(guild_id, changes), still)

    # ------------------------------------------------------------ members
    async def ban(
        self,
        guild_id: int,
        user_id: int,
        *,
        reason: str,
        actor_id: int,
        until: datetime | None = None,
    ) -> Banned:
        """Ban a member from the bot in a server (``until=None``: until unbanned) and cancel
        their waiting and running jobs there."""
        record = await self.db.run(
            self.members.ban, guild_id, user_id, reason=reason, until=until, actor_id=actor_id
        )
        from bot.service import NotAllowed  # bot.service builds this class

        jobs = await self.db.run(self.jobs.active, guild_id=guild_id, user_id=user_id)
        moderator = Requester(actor_id, guild_id)
        cancelled = 0
        for job in jobs:
            try:
                await self.cancel(job.id, moderator, moderator=True)
            except NotAllowed:
                continue  # finished meanwhile
            cancelled += 1
        return Banned(record, cancelled)

    async def unban(
        self, guild_id: int, user_id: int, *, actor_id: int, reason: str | None = None
    ) -> MemberRecord | None:
        """Lift a member's ban in a server; None (and nothing recorded) when none is active."""
        record = await self.db.run(self.members.get, guild_id, user_id)
        if record is None or not record.ban_active(self.clock()):
            return None
        return await self.db.run(
            self.members.unban, guild_id, user_id, actor_id=actor_id, reason=reason
        )

    async def set_tier(
        self, guild_id: int, user_id: int, tier: str | None, *, actor_id: int
    ) -> MemberRecord:
        """Give a member a configured tier whatever their roles (None: back to roles and
        the server's default); raises :class:`UnknownTier` for other names."""
        if tier is not None and tier not in self.settings.limits.tiers:
            known = ", ".join(sorted(self.settings.limits.tiers))
            raise UnknownTier(f"unknown tier {tier!r}: choose one of {known}")
        return await self.db.run(self.members.set_tier, guild_id, user_id, tier, actor_id=actor_id)

    async def history(
        self, guild_id: int, *, user_id: int | None = None, limit: int = 50
    ) -> list[ModerationEventRecord]:
        """The server's moderation events, newest first (of one member when given)."""
        return await self.db.run(
            lambda: self.members.events(guild_id=guild_id, user_id=user_id, limit=limit)
        )

    # ------------------------------------------------------------ jobs and their messages
    async def job_in(self, job_id: int, guild_id: int | None) -> JobRecord | None:
        """Job ``job_id`` when it was asked for in this server (None: no such job here)."""
        try:
            job = await self.db.run(self.jobs.get, job_id)
        except JobNotFoundError:
            return None
        return job if job.guild_id == guild_id else None

    async def made_by(self, job_id: int, guild_id: int | None) -> MadeBy | None:
        """A job of this server and its images, for "Who made this?"."""
        job = await self.job_in(job_id, guild_id)
        if job is None:
            return None
        return MadeBy(job, await self.images(job.id))

    async def images(self, job_id: int) -> list[ImageRecord]:
        return await self.db.run(self.jobs.images, job_id)

    async def set_message(self, job_id: int, message_id: int) -> None:
        """Remember the message that shows a job's result."""
        await self.db.run(self.jobs.set_message, job_id, message_id)

    async def purgeable(self, job_id: int, guild_id: int, user_id: int) -> bool:
        """Whether the messages of job ``job_id`` may be purged as ``user_id``'s in this
        server: theirs, from here, and no longer being edited (finished)."""
        job = await self.job_in(job_id, guild_id)
        return job is not None and job.user_id == user_id and not job.status.is_active

    async def record_purge(
        self,
        guild_id: int,
        user_id: int,
        *,
        actor_id: int,
        channel_id: int,
        message_ids: Sequence[int],
        job_ids: Sequence[int],
        reason: str | None = None,
    ) -> ModerationEventRecord:
        """Record that a moderator deleted a member's bot messages in a channel."""
        details = {
            "channel_id": channel_id,
            "message_ids": list(message_ids),
            "job_ids": sorted(job_ids),
        }
        return await self.db.run(
            lambda: self.members.record_event(
                "purge",
                guild_id=guild_id,
                user_id=user_id,
                actor_id=actor_id,
                reason=reason,
                details=details,
            )
        )

    async def record_delete(self, job: JobRecord, actor_id: int) -> ModerationEventRecord | None:
        """Record that a job's posted images were deleted: the job remembers it (``/history``
        hides it), and when someone else than its requester deleted them, a moderation
        event (a member deleting their own images is not one: None)."""
        await self.db.run(self.jobs.mark_deleted, job.id)
        if job.user_id == actor_id:
            return None
        return await self.db.run(
            lambda: self.members.record_event(
                "image_deleted",
                guild_id=job.guild_id,
                user_id=job.user_id,
                actor_id=actor_id,
                job_id=job.id,
            )
        )


def _without(tags: list[str] | None, keys: set[str]) -> list[str]:
    """``tags`` less those whose key is in ``keys``."""
    return [tag for tag in tags or [] if tag_key(tag) not in keys]
