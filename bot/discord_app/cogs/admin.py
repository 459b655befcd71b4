"""``/settings``: a server's generation defaults, limits and moderation policy, for its admins.

Discord hides the group from members without Manage Server (``default_permissions``), but
server owners can change that in their integration settings, so the bot checks the
permission itself on every use. Member limits here override the server's default tier;
role tiers and exemptions stay as configured.

``/settings moderation ...`` stores the server's overrides of the moderation policy (see
:class:`bot.moderation.GuildOverrides`): blocked tags, extra negatives, classifier
thresholds, spoilers, the log channel, forwarding of withheld images and ``fail_closed``.
Every change goes through :class:`bot.admin.ServerAdmin` (``service.admin``), which merges it
with :func:`bot.moderation.merge_overrides`; its :class:`~bot.moderation.PolicySettingsError`
is the answer when a value is refused. This cog parses options, checks the permission and
formats the answers. Whether
the bot serves direct messages is bot-wide configuration (``moderation.dm_allowed``), never
a server setting.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import discord
from discord import app_commands
from discord.ext import commands

from bot.admin import ModerationView, ServerAdmin, Unblocked, max_steps
from bot.discord_app import choices, formatting
from bot.discord_app.context import is_server_admin
from bot.discord_app.i18n import locale_of, tr
from bot.discord_app.requests import ImagineOptions, build_request
from bot.limits import TierOverrideError
from bot.moderation import PolicySettingsError
from bot.request import RequestError, find_aspect
from bot.storage import DatabaseError

if TYPE_CHECKING:
    from bot.discord_app.client import AnimagineBot

log = logging.getLogger(__name__)

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


ADMIN_ONLY: Final = "Only members with the Manage Server permission can use /settings."


def _not_saved(interaction: discord.Interaction[Any], reason: object) -> str:
    """Why nothing was saved (the reason itself, from the core, reads English)."""
    return tr(locale_of(interaction), "Not saved: {reason}.", reason=reason)


class NotServerAdmin(app_commands.CheckFailure):
    """The member lacks Manage Server."""


def split_tags(text: str) -> list[str]:
    """Comma-separated tags as typed in an option (empty parts dropped)."""
    return [part.strip() for part in text.split(",") if part.strip()]


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class AdminCog(
    commands.GroupCog, group_name="settings", group_description="Image generation in this server"
):
    def __init__(self, bot: AnimagineBot) -> None:
        self.bot = bot
        super().__init__()

    @property
    def admin(self) -> ServerAdmin:
        return self.bot.service.admin

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        if not is_server_admin(interaction):
            raise NotServerAdmin(tr(locale_of(interaction), ADMIN_ONLY))
        return True

    async def _show(self, interaction: discord.Interaction[AnimagineBot], *, saved: bool) -> None:
        locale = locale_of(interaction)
        guild_id = interaction.guild_id
        assert guild_id is not None
        settings = self.bot.settings
        defaults = await self.admin.defaults(guild_id)
        limits = await self.admin.limits(guild_id)
        request = build_request(ImagineOptions(prompt="-"), defaults, settings)
        embed = formatting.server_settings_embed(
            locale,
            request,
            max_steps(defaults, settings),
            enabled=limits.enabled,
            tier_name=limits.tier_name,
            member=limits.member,
            server=limits.server,
        )
        moderation = await self._moderation_embed(locale, guild_id)
        embeds = [embed, moderation]
        workers = self.bot.service.workers()
        if workers is not None:  # the Redis backend: where jobs render
            embeds.append(formatting.workers_embed(locale, workers))
        note = tr(locale, "Saved.") if saved else ""
        await interaction.followup.send(note, embeds=embeds, ephemeral=True)

    async def _moderation_embed(self, locale: str, guild_id: int) -> discord.Embed:
        """The moderation policy in force here, as ``/settings show`` shows it."""
        return self._policy_embed(locale, await self.admin.moderation(guild_id))

    def _policy_embed(self, locale: str, view: ModerationView) -> discord.Embed:
        source = self.bot.settings.moderation.classifier.source
        status = self.bot.service.classifier_status()
        if not status.loaded:
            classifier = tr(locale, "not available: {problem}", problem=status.problem)
        elif status.problem is not None:
            classifier = tr(
                locale,
                "⚠ loaded ({source}), hard block incomplete: {problem}",
                source=source,
                problem=status.problem,
            )
        else:
            classifier = tr(
                locale,
                "loaded ({source}); the image hard block (sexual content with a minor) is on "
                "in every channel",
                source=source,
            )
        return formatting.moderation_embed(
            locale,
            view.policy,
            view.overrides,
            default_blocked=view.default_blocked,
            classifier=classifier,
        )

    @app_commands.command(name="show", description="What /imagine uses here, and the limits")
    async def show(self, interaction: discord.Interaction[AnimagineBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self._show(interaction, saved=False)

    @app_commands.command(name="defaults", description="Defaults for options members leave out")
    @app_commands.describe(
        steps="Default steps",
        max_steps="The most steps members may ask for here",
        cfg="Default guidance scale",
        aspect="Default size",
        hires="Hires pass by default",
        previews="Show live previews while rendering",
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
        previews: bool | None = None,
        reset: bool = False,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        guild_id = interaction.guild_id
        assert guild_id is not None
        given: dict[str, Any] = {
            "quality": quality,
            "style": style,
            "steps": steps,
            "max_steps": max_steps,
            "cfg": cfg,
            "sampler": sampler,
            "hires": hires,
            "previews": previews,
        }
        try:
            if aspect is not None:
                size = find_aspect(aspect)
                given.update(width=size.width, height=size.height)
            await self.admin.set_defaults(guild_id, given, reset=reset)
        except RequestError as exc:
            await interaction.followup.send(_not_saved(interaction, exc), ephemeral=True)
            return
        await self._show(interaction, saved=True)

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
        try:
            await self.admin.set_limits(
                guild_id,
                member={
                    MEMBER_FIELDS[k]: v
                    for k, v in given.items()
                    if k in MEMBER_FIELDS and v is not None
                },
                server={
                    SERVER_FIELDS[k]: v
                    for k, v in given.items()
                    if k in SERVER_FIELDS and v is not None
                },
                enabled=enabled,
                reset=reset,
            )
        except TierOverrideError as exc:
            await interaction.followup.send(_not_saved(interaction, exc), ephemeral=True)
            return
        await self._show(interaction, saved=True)

    # ------------------------------------------------------------------ moderation
    moderation = app_commands.Group(
        name="moderation", description="What may be asked for and posted in this server"
    )

    async def _save_moderation(
        self,
        interaction: discord.Interaction[AnimagineBot],
        change: Callable[[int], Awaitable[ModerationView | Unblocked]],
        *,
        note: str = "",
    ) -> None:
        """Run ``change`` on this server's policy and show the result (``note`` after
        "Saved."); or answer why nothing was saved."""
        guild_id = interaction.guild_id
        assert guild_id is not None
        locale = locale_of(interaction)
        try:
            result = await change(guild_id)
        except PolicySettingsError as exc:
            await interaction.followup.send(_not_saved(interaction, exc), ephemeral=True)
            return
        except DatabaseError as exc:
            log.error("saving moderation settings failed: %s", exc)  # noqa: TRY400
            await interaction.followup.send(formatting.database_down_text(locale), ephemeral=True)
            return
        view = result.view if isinstance(result, Unblocked) else result
        if isinstance(result, Unblocked) and result.still:
            still = ", ".join(result.still)
            note += "\n-# " + tr(
                locale, "Still refused (they contain other blocked tags): {tags}.", tags=still
            )
        embed = self._policy_embed(locale, view)
        await interaction.followup.send(tr(locale, "Saved.") + note, embed=embed, ephemeral=True)

    async def _change_tags(
        self,
        interaction: discord.Interaction[AnimagineBot],
        tags: str,
        change: Callable[[int, list[str]], Awaitable[ModerationView | Unblocked]],
    ) -> None:
        """``/settings moderation block`` and ``unblock``: the typed tags to ``change``."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        wanted = split_tags(tags)
        await self._save_moderation(interaction, lambda guild_id: change(guild_id, wanted))

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
            embed = await self._moderation_embed(locale_of(interaction), interaction.guild_id or 0)
            await interaction.followup.send(
                tr(locale_of(interaction), "Nothing to change."), embed=embed, ephemeral=True
            )
            return
        note = ""
        if log_channel is not None:
            if log_channel.guild.id != interaction.guild_id:
                await interaction.followup.send(
                    tr(
                        locale_of(interaction),
                        "Not saved: the log channel must be a channel of this server.",
                    ),
                    ephemeral=True,
                )
                return
            changes["log_channel_id"] = log_channel.id
            if not log_channel.is_nsfw():
                note = "\n-# " + tr(
                    locale_of(interaction),
                    "{channel} is not age-restricted: withheld images forwarded there are "
                    "only hidden behind spoilers.",
                    channel=log_channel.mention,
                )
        await self._save_moderation(
            interaction, lambda guild_id: self.admin.change_moderation(guild_id, changes), note=note
        )

    @moderation.command(
        name="block", description="Refuse more tags outside age-restricted channels"
    )
    @app_commands.describe(tags="Comma-separated tags, e.g. 'gore, blood'")
    async def moderation_block(
        self,
        interaction: discord.Interaction[AnimagineBot],
        tags: app_commands.Range[str, 1, 2000],
    ) -> None:
        await self._change_tags(interaction, tags, self.admin.block)

    @moderation.command(
        name="unblock", description="Allow tags that are blocked here (the ratings stay refused)"
    )
    @app_commands.describe(tags="Comma-separated tags, e.g. 'swimsuit, bikini'")
    async def moderation_unblock(
        self,
        interaction: discord.Interaction[AnimagineBot],
        tags: app_commands.Range[str, 1, 2000],
    ) -> None:
        await self._change_tags(interaction, tags, self.admin.unblock)

    @moderation.command(name="reset", description="Back to the bot's defaults")
    @app_commands.describe(setting="Which setting (or everything)")
    @app_commands.choices(setting=choices.MODERATION_KEY)
    async def moderation_reset(
        self, interaction: discord.Interaction[AnimagineBot], setting: str
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        key = None if setting == "*" else setting
        await self._save_moderation(
            interaction, lambda guild_id: self.admin.reset_moderation(guild_id, key)
        )
