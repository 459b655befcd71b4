"""``/settings``: a server's generation defaults, limits and moderation policy, for its admins.

Discord hides the group from members without Manage Server (``default_permissions``), but
server owners can change that in their integration settings, so the bot checks the
permission itself on every use. Member limits here override the server's default tier;
role tiers and exemptions stay as configured.

``/settings moderation ...`` stores the server's overrides of the moderation policy (see
:class:`bot.moderation.GuildOverrides`): blocked tags, extra negatives, classifier
thresholds, spoilers, the log channel, forwarding of withheld images and ``fail_closed``.
Every change goes through :func:`bot.moderation.merge_overrides`; its
:class:`~bot.moderation.PolicySettingsError` is the answer when a value is refused. Whether
the bot serves direct messages is bot-wide configuration (``moderation.dm_allowed``), never
a server setting.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands
from pydantic import ValidationError

from bot.config import LimitsSettings
from bot.discord_app import choices, formatting
from bot.discord_app.context import is_server_admin
from bot.discord_app.requests import (
    DEFAULT_KEYS,
    ImagineOptions,
    build_request,
    check_defaults,
    max_steps,
)
from bot.moderation import GuildPolicy, PolicySettingsError, merge_overrides, tag_key
from bot.request import RequestError, find_aspect
from bot.storage import DatabaseError, GuildRecord, GuildStore

if TYPE_CHECKING:
    from bot.discord_app.client import AnimagineBot

log = logging.getLogger(__name__)

Tier = LimitsSettings.Tier
MEMBER_FIELDS = {
    "member_burst": "burst",
    "member_refill_seconds": "refill_seconds",
    "member_daily_quota": "daily_quota",
    "member_max_jobs": "max_concurrent_jobs",
}
SERVER_FIELDS = {
    "server_burst": "burst",
    "server_refill_seconds": "refill_seconds",
    "server_daily_quota": "daily_quota",
    "server_max_jobs": "max_concurrent_jobs",
}


class NotServerAdmin(app_commands.CheckFailure):
    """The member lacks Manage Server."""


def tier_with(base: Tier, override: Mapping[str, Any]) -> Tier:
    """``base`` with ``override`` applied; raises ``ValueError`` naming the bad field."""
    try:
        return Tier.model_validate({**base.model_dump(), **override})
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"])
        raise ValueError(f"{field}: {error['msg']}") from None


def split_tags(text: str) -> list[str]:
    """Comma-separated tags as typed in an option (empty parts dropped)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def default_tier_name(record: GuildRecord | None, limits: LimitsSettings) -> str:
    if record is not None and record.default_tier in limits.tiers:
        return record.default_tier
    return limits.default_tier


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class AdminCog(
    commands.GroupCog, group_name="settings", group_description="Image generation in this server"
):
    def __init__(self, bot: AnimagineBot) -> None:
        self.bot = bot
        self.guilds = GuildStore(bot.db)
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        if not is_server_admin(interaction):
            raise NotServerAdmin(
                "Only members with the Manage Server permission can use /settings."
            )
        return True

    async def _show(self, interaction: discord.Interaction[AnimagineBot], note: str) -> None:
        guild_id = interaction.guild_id
        assert guild_id is not None
        settings = self.bot.settings
        defaults = await self.bot.guild_defaults(guild_id)
        record = await self.bot.db.run(self.guilds.get, guild_id)
        tier_name = default_tier_name(record, settings.limits)
        base = settings.limits.tiers[tier_name]
        overrides = record.tier_overrides.get(tier_name, {}) if record else {}
        request = build_request(ImagineOptions(prompt="-"), defaults, settings)
        try:
            member = tier_with(base, overrides)
        except ValueError:
            member = base
        try:
            server = tier_with(settings.limits.server, record.server_limits if record else {})
        except ValueError:
            server = settings.limits.server
        embed = formatting.server_settings_embed(
            request,
            max_steps(defaults, settings),
            enabled=record.enabled if record else True,
            tier_name=tier_name,
            member=member,
            server=server,
        )
        moderation = await self._moderation_embed(guild_id)
        await interaction.followup.send(note, embeds=[embed, moderation], ephemeral=True)

    async def _moderation_embed(self, guild_id: int) -> discord.Embed:
        """The moderation policy in force here, as ``/settings show`` shows it."""
        settings = self.bot.settings.moderation
        overrides = await self.bot.db.run(self.guilds.get_moderation, guild_id)
        try:
            policy = GuildPolicy.from_settings(settings, overrides)
        except PolicySettingsError as exc:  # stored before a rule changed: the defaults
            overrides = {}
            policy = GuildPolicy.from_settings(settings)
            log.warning("guild %s: stored moderation settings are invalid: %s", guild_id, exc)
        worker = self.bot.service.worker
        if worker.classifier is None:
            classifier = f"not available: {worker.classifier_error or 'none configured'}"
        elif (problem := worker.classifier.problem) is not None:
            classifier = (
                f"⚠ loaded ({settings.classifier.source}), hard block incomplete: {problem}"
            )
        else:
            classifier = (
                f"loaded ({settings.classifier.source}); the image hard block (sexual content "
                "with a minor) is on in every channel"
            )
        return formatting.moderation_embed(
            policy,
            overrides,
            default_blocked=len(GuildPolicy.from_settings(settings).blocked_tags),
            classifier=classifier,
        )

    @app_commands.command(name="show", description="What /imagine uses here, and the limits")
    async def show(self, interaction: discord.Interaction[AnimagineBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self._show(interaction, "")

    @app_commands.command(name="defaults", description="Defaults for options members leave out")
    @app_commands.describe(
        steps="Default steps",
        max_steps="The most steps members may ask for here",
        cfg="Default guidance scale",
        aspect="Default size",
        hires="Hires pass by default",
        reset="Forget every default first (back to the bot's configuration)",
    )
    @app_commands.choices(
        quality=choices.QUALITY,
        style=choices.STYLE,
        sampler=choices.SAMPLER,
        aspect=choices.ASPECT,
    )
    async def defaults(
        self,
        interaction: discord.Interaction[AnimagineBot],
        *,
        quality: str | None = None,
        style: str | None = None,
        steps: app_commands.Range[int, 1, 150] | None = None,
        max_steps: app_commands.Range[int, 1, 150] | None = None,
        cfg: app_commands.Range[float, 1.0, 30.0] | None = None,
        sampler: str | None = None,
        aspect: str | None = None,
        hires: bool | None = None,
        reset: bool = False,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        guild_id = interaction.guild_id
        assert guild_id is not None
        values: dict[str, Any] = {} if reset else dict(await self.bot.guild_defaults(guild_id))
        given = {
            "quality": quality,
            "style": style,
            "steps": steps,
            "max_steps": max_steps,
            "cfg": cfg,
            "sampler": sampler,
            "hires": hires,
        }
        values.update({k: v for k, v in given.items() if v is not None})
        try:
            if aspect is not None:
                size = find_aspect(aspect)
                values.update(width=size.width, height=size.height)
            clean = check_defaults(values, self.bot.settings)
        except RequestError as exc:
            await interaction.followup.send(f"Not saved: {exc}.", ephemeral=True)
            return
        # set_defaults merges and drops keys given as None: this replaces them all.
        replacement = {key: clean.get(key) for key in DEFAULT_KEYS}
        await self.bot.db.run(self.guilds.set_defaults, guild_id, replacement)
        await self._show(interaction, "Saved.")

    @app_commands.command(name="limits", description="Limits for members and the whole server")
    @app_commands.describe(
        enabled="Allow image generation in this server",
        member_burst="Images a member may start at once",
        member_refill_seconds="Then one more image every this many seconds",
        member_daily_quota="Images per member per day (0: no daily quota)",
        member_max_jobs="Jobs a member may have waiting or running",
        server_burst="Images the whole server may start at once",
        server_refill_seconds="Then one more image every this many seconds",
        server_daily_quota="Images per day for the whole server (0: no daily quota)",
        server_max_jobs="Jobs the whole server may have waiting or running",
        reset="Forget this server's limits first (back to the bot's configuration)",
    )
    async def limits(
        self,
        interaction: discord.Interaction[AnimagineBot],
        *,
        enabled: bool | None = None,
        member_burst: app_commands.Range[int, 1, 10_000] | None = None,
        member_refill_seconds: app_commands.Range[float, 0.1, 86_400.0] | None = None,
        member_daily_quota: app_commands.Range[int, 0, 1_000_000] | None = None,
        member_max_jobs: app_commands.Range[int, 1, 10_000] | None = None,
        server_burst: app_commands.Range[int, 1, 10_000] | None = None,
        server_refill_seconds: app_commands.Range[float, 0.1, 86_400.0] | None = None,
        server_daily_quota: app_commands.Range[int, 0, 1_000_000] | None = None,
        server_max_jobs: app_commands.Range[int, 1, 10_000] | None = None,
        reset: bool = False,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        guild_id = interaction.guild_id
        assert guild_id is not None
        given = {
            "member_burst": member_burst,
            "member_refill_seconds": member_refill_seconds,
            "member_daily_quota": member_daily_quota,
            "member_max_jobs": member_max_jobs,
            "server_burst": server_burst,
            "server_refill_seconds": server_refill_seconds,
            "server_daily_quota": server_daily_quota,
            "server_max_jobs": server_max_jobs,
        }
        limits = self.bot.settings.limits
        record = await self.bot.db.run(self.guilds.get, guild_id)
        tier_name = default_tier_name(record, limits)
        overrides = dict(record.tier_overrides) if record and not reset else {}
        member = dict(overrides.get(tier_name, {}))
        server = dict(record.server_limits) if record and not reset else {}
        member.update(
            {MEMBER_FIELDS[k]: v for k, v in given.items() if k in MEMBER_FIELDS and v is not None}
        )
        server.update(
            {SERVER_FIELDS[k]: v for k, v in given.items() if k in SERVER_FIELDS and v is not None}
        )
        try:
            tier_with(limits.tiers[tier_name], member)
            tier_with(limits.server, server)
        except ValueError as exc:
            await interaction.followup.send(f"Not saved: {exc}.", ephemeral=True)
            return
        overrides[tier_name] = member
        changes: dict[str, Any] = {"tier_overrides": overrides, "server_limits": server}
        if enabled is not None:
            changes["enabled"] = enabled
        elif reset:
            changes["enabled"] = True
        await self.bot.db.run(lambda: self.guilds.update(guild_id, **changes))
        await self._show(interaction, "Saved.")

    # ------------------------------------------------------------------ moderation
    moderation = app_commands.Group(
        name="moderation", description="What may be asked for and posted in this server"
    )

    async def _save_moderation(
        self,
        interaction: discord.Interaction[AnimagineBot],
        changes: Mapping[str, Any],
        *,
        replace: bool = False,
        note: str = "",
    ) -> None:
        """Validate and store ``changes`` (a None value resets a key), then show the result;
        or answer why nothing was saved."""
        guild_id = interaction.guild_id
        assert guild_id is not None
        current = {} if replace else await self.bot.db.run(self.guilds.get_moderation, guild_id)
        try:
            merged = merge_overrides(current, changes)
        except PolicySettingsError as exc:
            await interaction.followup.send(f"Not saved: {exc}.", ephemeral=True)
            return
        try:
            await self.bot.db.run(self.guilds.set_moderation, guild_id, merged)
        except DatabaseError as exc:
            log.error("saving moderation settings failed: %s", exc)  # noqa: TRY400
            await interaction.followup.send(
                formatting.apology_text("the database is not available"), ephemeral=True
            )
            return
        embed = await self._moderation_embed(guild_id)
        await interaction.followup.send(f"Saved.{note}", embed=embed, ephemeral=True)

    @moderation.command(name="set", description="Thresholds, spoilers, the log channel, ...")
    @app_commands.describe(
        questionable_threshold="Outside age-restricted channels, withhold images rated "
        "questionable above this (0-1)",
        explicit_threshold="Outside age-restricted channels, withhold images rated explicit "
        "above this (0-1)",
        spoiler="Spoilers in age-restricted channels: never, flagged (rated over a threshold "
        "or not rated) or always",
        fail_closed="Withhold images outside age-restricted channels when the classifier "
        "cannot run",
        log_channel="Channel that receives refusals, withheld images and bans (best kept "
        "private and age-restricted)",
        forward_withheld="Send withheld images, as spoilers, to the log channel",
        extra_negatives="Comma-separated tags added to the negative prompt outside "
        "age-restricted channels (replaces the bot's list; '-' for none; nsfw stays)",
    )
    @app_commands.choices(spoiler=choices.SPOILER)
    async def moderation_set(
        self,
        interaction: discord.Interaction[AnimagineBot],
        *,
        questionable_threshold: app_commands.Range[float, 0.0, 1.0] | None = None,
        explicit_threshold: app_commands.Range[float, 0.0, 1.0] | None = None,
        spoiler: str | None = None,
        fail_closed: bool | None = None,
        log_channel: discord.TextChannel | None = None,
        forward_withheld: bool | None = None,
        extra_negatives: app_commands.Range[str, 1, 2000] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        changes: dict[str, Any] = {
            key: value
            for key, value in (
                ("questionable_threshold", questionable_threshold),
                ("explicit_threshold", explicit_threshold),
                ("spoiler", spoiler),
                ("fail_closed", fail_closed),
                ("forward_withheld", forward_withheld),
            )
            if value is not None
        }
        if extra_negatives is not None:
            text = extra_negatives.strip()
            changes["extra_negatives"] = [] if text == "-" else split_tags(text)
        if not changes and log_channel is None:
            embed = await self._moderation_embed(interaction.guild_id or 0)
            await interaction.followup.send("Nothing to change.", embed=embed, ephemeral=True)
            return
        note = ""
        if log_channel is not None:
            if log_channel.guild.id != interaction.guild_id:
                await interaction.followup.send(
                    "Not saved: the log channel must be a channel of this server.", ephemeral=True
                )
                return
            changes["log_channel_id"] = log_channel.id
            if not log_channel.is_nsfw():
                note = (
                    f"\n-# {log_channel.mention} is not age-restricted: withheld images "
                    "forwarded there are only hidden behind spoilers."
                )
        await self._save_moderation(interaction, changes, note=note)

    @moderation.command(
        name="block", description="Refuse more tags outside age-restricted channels"
    )
    @app_commands.describe(tags="Comma-separated tags, e.g. 'gore, blood'")
    async def moderation_block(
        self,
        interaction: discord.Interaction[AnimagineBot],
        tags: app_commands.Range[str, 1, 2000],
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild_id is not None
        wanted = split_tags(tags)
        current = await self.bot.db.run(self.guilds.get_moderation, interaction.guild_id)
        keys = {tag_key(tag) for tag in wanted}
        allowed = [t for t in current.get("blocked_tags_remove") or [] if tag_key(t) not in keys]
        changes = {
            "blocked_tags_add": [*(current.get("blocked_tags_add") or []), *wanted],
            "blocked_tags_remove": allowed or None,
        }
        await self._save_moderation(interaction, changes)

    @moderation.command(
        name="unblock", description="Allow tags that are blocked here (the ratings stay refused)"
    )
    @app_commands.describe(tags="Comma-separated tags, e.g. 'swimsuit, bikini'")
    async def moderation_unblock(
        self,
        interaction: discord.Interaction[AnimagineBot],
        tags: app_commands.Range[str, 1, 2000],
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        guild_id = interaction.guild_id
        assert guild_id is not None
        wanted = split_tags(tags)
        settings = self.bot.settings.moderation
        current = await self.bot.db.run(self.guilds.get_moderation, guild_id)
        keys = {tag_key(tag) for tag in wanted}
        added = [t for t in current.get("blocked_tags_add") or [] if tag_key(t) not in keys]
        bot_wide = GuildPolicy.from_settings(settings).blocked
        allowed = [*(current.get("blocked_tags_remove") or [])]
        allowed += [tag for tag in wanted if bot_wide.find(tag)]
        changes = {"blocked_tags_add": added or None, "blocked_tags_remove": allowed or None}
        try:
            after = GuildPolicy.from_settings(settings, merge_overrides(current, changes))
        except PolicySettingsError:
            after = None  # _save_moderation answers with the reason
        still = [] if after is None else [tag for tag in wanted if after.blocked.find(tag)]
        note = ""
        if still:
            note = f"\n-# Still refused (they contain other blocked tags): {', '.join(still)}."
        await self._save_moderation(interaction, changes, note=note)

    @moderation.command(name="reset", description="Back to the bot's defaults")
    @app_commands.describe(setting="Which setting (or everything)")
    @app_commands.choices(setting=choices.MODERATION_KEY)
    async def moderation_reset(
        self, interaction: discord.Interaction[AnimagineBot], setting: str
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        if setting == "*":
            await self._save_moderation(interaction, {}, replace=True)
        else:
            await self._save_moderation(interaction, {setting: None})
