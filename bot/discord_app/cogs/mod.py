"""``/mod ban``, ``/mod unban``, ``/mod purge`` and the "Who made this?" message command.

For moderators: members with Manage Messages in the channel. Discord hides these commands
from everyone else (``default_permissions``), but server owners can change that in their
integration settings, so the bot checks the permission itself on every use. Every action is
recorded as a moderation event and copied to the server's log channel when it has one.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import discord
from discord import app_commands
from discord.ext import commands

from bot.admin import ServerAdmin
from bot.discord_app import formatting
from bot.discord_app.context import is_moderator
from bot.discord_app.i18n import locale_of, say, tr, trn
from bot.discord_app.moderation import DurationError, job_id_of, parse_duration

if TYPE_CHECKING:
    from bot.discord_app.client import AnimagineBot

log = logging.getLogger(__name__)

MODERATOR_ONLY: Final = "Only moderators (Manage Messages in this channel) can do that."
Target = discord.Member | discord.User


class NotModerator(app_commands.CheckFailure):
    """The member lacks Manage Messages here."""


@app_commands.guild_only()
@app_commands.default_permissions(manage_messages=True)
class ModCog(
    commands.GroupCog, group_name="mod", group_description="Moderate image generation here"
):
    def __init__(self, bot: AnimagineBot) -> None:
        self.bot = bot
        self.who_menu = app_commands.ContextMenu(name="Who made this?", callback=self.who_made)
        self.who_menu.default_permissions = discord.Permissions(manage_messages=True)
        self.who_menu.guild_only = True
        super().__init__()

    @property
    def admin(self) -> ServerAdmin:
        return self.bot.service.admin

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.who_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.who_menu.name, type=self.who_menu.type)

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        if not is_moderator(interaction):
            raise NotModerator(tr(locale_of(interaction), MODERATOR_ONLY))
        return True

    # ------------------------------------------------------------------ Who made this?
    async def who_made(
        self, interaction: discord.Interaction[AnimagineBot], message: discord.Message
    ) -> None:
        """Requester, server, channel, message, prompt, seeds and scores of a bot image."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        locale = locale_of(interaction)
        if not is_moderator(interaction):
            await interaction.followup.send(tr(locale, MODERATOR_ONLY), ephemeral=True)
            return
        me = self.bot.user
        job_id = job_id_of(message) if me is not None and message.author.id == me.id else None
        made = None if job_id is None else await self.admin.made_by(job_id, interaction.guild_id)
        if made is None:
            await interaction.followup.send(
                tr(locale, "This is not an image message of this bot from this server."),
                ephemeral=True,
            )
            return
        job = made.job
        request = job.request
        policy = await self.bot.modlog.policy(job.guild_id)
        guild = None if job.guild_id is None else self.bot.get_guild(job.guild_id)
        embed = formatting.who_made_embed(
            locale,
            job,
            request,
            made.images,
            guild_name=None if guild is None else guild.name,
            target_url=formatting.message_url(interaction.guild_id, message.channel.id, message.id),
            thresholds=None if policy is None else policy.thresholds,
        )
        await interaction.followup.send(embed=embed, ephemeral=True)

    # ------------------------------------------------------------------ /mod ban, unban
    @app_commands.command(name="ban", description="Stop a member from using the image bot")
    @app_commands.describe(
        member="Who to ban from the bot (in this server)",
        reason="Why (the member is told)",
        duration="How long, e.g. 30m, 12h, 7d, 2w (leave out for a ban without end)",
    )
    async def ban(
        self,
        interaction: discord.Interaction[AnimagineBot],
        member: Target,
        reason: app_commands.Range[str, 1, 500],
        duration: app_commands.Range[str, 1, 40] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        locale = locale_of(interaction)
        guild_id = interaction.guild_id
        assert guild_id is not None
        if member.bot or member.id == interaction.user.id:
            await interaction.followup.send(
                tr(locale, "Ban someone else: not yourself, not a bot."), ephemeral=True
            )
            return
        until: datetime | None = None
        if duration is not None:
            try:
                until = discord.utils.utcnow() + parse_duration(duration)
            except DurationError as exc:
                await interaction.followup.send(
                    tr(locale, "Not banned: {reason}.", reason=say(locale, exc)), ephemeral=True
                )
                return
        banned = await self.admin.ban(
            guild_id, member.id, reason=reason, until=until, actor_id=interaction.user.id
        )
        cancelled = banned.cancelled
        await self.bot.modlog.post(
            guild_id,
            formatting.log_ban_text(
                self.bot.modlog.locale(guild_id),
                member.id,
                interaction.user.id,
                reason,
                until=until,
                cancelled=cancelled,
            ),
        )
        text = tr(
            locale,
            "Banned {member} from the bot {until}: {reason}.",
            member=member.mention,
            until=formatting.ban_line(locale, until),
            reason=reason,
        )
        if cancelled:
            text += " " + trn(
                locale, cancelled, "1 waiting job cancelled.", "{count} waiting jobs cancelled."
            )
        await interaction.followup.send(text, ephemeral=True)

    @app_commands.command(name="unban", description="Let a banned member use the bot again")
    @app_commands.describe(member="Who to unban", reason="Why (for the log)")
    async def unban(
        self,
        interaction: discord.Interaction[AnimagineBot],
        member: Target,
        reason: app_commands.Range[str, 1, 500] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        locale = locale_of(interaction)
        guild_id = interaction.guild_id
        assert guild_id is not None
        record = await self.admin.unban(
            guild_id, member.id, actor_id=interaction.user.id, reason=reason
        )
        if record is None:
            await interaction.followup.send(
                tr(
                    locale,
                    "{member} is not banned from the bot in this server.",
                    member=member.mention,
                ),
                ephemeral=True,
            )
            return
        await self.bot.modlog.post(
            guild_id,
            formatting.log_unban_text(
                self.bot.modlog.locale(guild_id), member.id, interaction.user.id, reason
            ),
        )
        await interaction.followup.send(
            tr(locale, "Unbanned {member}: they can use the bot again.", member=member.mention),
            ephemeral=True,
        )

    # ------------------------------------------------------------------ /mod purge
    @app_commands.command(name="purge", description="Delete a member's bot images in a channel")
    @app_commands.describe(
        member="Whose images to delete",
        channel="Where (this channel when left out)",
        scan="How many recent messages of the channel to look through",
        reason="Why (for the log)",
    )
    async def purge(
        self,
        interaction: discord.Interaction[AnimagineBot],
        member: Target,
        channel: discord.TextChannel | discord.Thread | None = None,
        scan: app_commands.Range[int, 1, 1000] = 200,
        reason: app_commands.Range[str, 1, 500] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        locale = locale_of(interaction)
        guild_id = interaction.guild_id
        channel_id = channel.id if channel is not None else interaction.channel_id
        assert guild_id is not None
        assert channel_id is not None
        me = self.bot.user
        assert me is not None
        where = self.bot.get_partial_messageable(channel_id, guild_id=guild_id)
        purgeable: dict[int, bool] = {}
        deleted: list[int] = []
        jobs: set[int] = set()
        problem = ""
        try:
            async for message in where.history(limit=scan):
                if message.author.id != me.id or (job_id := job_id_of(message)) is None:
                    continue
                if job_id not in purgeable:
                    purgeable[job_id] = await self.admin.purgeable(job_id, guild_id, member.id)
                if not purgeable[job_id]:
                    continue
                try:
                    await message.delete()
                except discord.NotFound:
                    continue
                deleted.append(message.id)
                jobs.add(job_id)
        except discord.HTTPException as exc:
            log.warning("purge in %s stopped: %s", channel_id, exc.status)
            problem = " " + tr(
                locale,
                "Stopped early: Discord refused ({status}).",
                status=exc.status,
            )
        if deleted:
            await self.admin.record_purge(
                guild_id,
                member.id,
                actor_id=interaction.user.id,
                channel_id=channel_id,
                message_ids=deleted,
                job_ids=sorted(jobs),
                reason=reason,
            )
            await self.bot.modlog.post(
                guild_id,
                formatting.log_purge_text(
                    self.bot.modlog.locale(guild_id),
                    member.id,
                    interaction.user.id,
                    channel_id,
                    len(deleted),
                ),
            )
        text = tr(
            locale,
            "Deleted {deleted} of {member} in {channel} (looked through the last {scanned}).",
            deleted=formatting.messages_count(locale, len(deleted), bot=True),
            member=member.mention,
            channel=f"<#{channel_id}>",
            scanned=formatting.messages_count(locale, scan),
        )
        await interaction.followup.send(text + problem, ephemeral=True)
