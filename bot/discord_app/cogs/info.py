"""``/queue``, ``/limits``, ``/help`` and the "Generation info" message command."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import TYPE_CHECKING, Final

import discord
from discord import app_commands
from discord.ext import commands
from PIL import UnidentifiedImageError

from bot.admin import max_steps
from bot.discord_app import formatting
from bot.discord_app.context import requester
from bot.discord_app.delivery import file_name, fit_images
from bot.discord_app.i18n import locale_of, say, tr
from bot.discord_app.moderation import job_id_of
from bot.images import Infotext, read_infotext
from bot.service import NotAllowed

if TYPE_CHECKING:
    from bot.discord_app.client import AnimagineBot

log = logging.getLogger(__name__)

MAX_INFO_BYTES: Final = 50 * 1024 * 1024
"""Attachments larger than this are not downloaded to read their settings."""


def _infotext(data: bytes) -> Infotext | None:
    try:
        return read_infotext(data)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


class InfoCog(commands.Cog):
    def __init__(self, bot: AnimagineBot) -> None:
        self.bot = bot
        self.info_menu = app_commands.ContextMenu(
            name="Generation info", callback=self.generation_info
        )

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.info_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.info_menu.name, type=self.info_menu.type)

    @app_commands.command(name="queue", description="Your jobs, their places in the queue and ETAs")
    async def queue(self, interaction: discord.Interaction[AnimagineBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        status = await self.bot.service.status(requester(interaction))
        text = formatting.queue_text(locale_of(interaction), status)
        await interaction.followup.send(text, ephemeral=True)

    @app_commands.command(name="limits", description="How many images you may ask for now")
    async def limits(self, interaction: discord.Interaction[AnimagineBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        allowance = await self.bot.service.allowance(requester(interaction))
        text = formatting.allowance_text(locale_of(interaction), allowance)
        await interaction.followup.send(text, ephemeral=True)

    @app_commands.command(name="images", description="Get the images of one of your jobs again")
    @app_commands.describe(job="The job number (default: your latest whose images are kept)")
    async def images(
        self,
        interaction: discord.Interaction[AnimagineBot],
        job: app_commands.Range[int, 1] | None = None,
    ) -> None:
        """Only the member sees the answer; images are read from the outbox's store."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        locale = locale_of(interaction)
        here_restricted = bool(getattr(interaction.channel, "nsfw", False))
        try:
            record, images = await self.bot.service.kept_images(
                requester(interaction), job, age_restricted_here=here_restricted
            )
        except NotAllowed as exc:
            await interaction.followup.send(
                tr(locale, "Sorry: {reason}.", reason=say(locale, exc)), ephemeral=True
            )
            return
        if not images:
            await interaction.followup.send(
                tr(locale, "Job #{job} has no image you may see here.", job=record.id),
                ephemeral=True,
            )
            return
        files = [(file_name(record, image), image.png) for image in images]
        fitted = await asyncio.to_thread(fit_images, locale, files, interaction.filesize_limit)
        for number, group in enumerate(fitted.groups):
            text = formatting.images_again_text(locale, record, len(images)) if number == 0 else ""
            if number == 0 and fitted.notes:
                text += "\n" + "\n".join(f"-# {note}" for note in fitted.notes)
            attachments = [
                discord.File(io.BytesIO(fitted.files[i][1]), filename=fitted.files[i][0])
                for i in group
            ]
            if text:
                await interaction.followup.send(text, files=attachments, ephemeral=True)
            else:
                await interaction.followup.send(files=attachments, ephemeral=True)

    @app_commands.command(name="help", description="How to prompt Animagine XL 3.1")
    async def help_command(self, interaction: discord.Interaction[AnimagineBot]) -> None:
        settings = self.bot.settings
        embed = formatting.help_embed(
            locale_of(interaction), max_steps({}, settings), settings.engine.max_count
        )
        await interaction.response.send_message(embed=embed, ephemeral=True)

    async def generation_info(
        self, interaction: discord.Interaction[AnimagineBot], message: discord.Message
    ) -> None:
        """The full settings of a bot image: its PNG infotext and the job behind it."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        pngs = [
            a
            for a in message.attachments
            if a.filename.lower().endswith(".png") or a.content_type == "image/png"
        ][:9]
        budget = formatting.EMBED_TOTAL_MAX // (len(pngs) + 1) - 50
        embeds: list[discord.Embed] = []
        for attachment in pngs:
            if attachment.size > MAX_INFO_BYTES:
                continue
            try:
                data = await attachment.read()
            except discord.HTTPException as exc:
                log.info("could not download %s (%s)", attachment.filename, exc.status)
                continue
            infotext = await asyncio.to_thread(_infotext, data)
            if infotext is not None:
                embeds.append(formatting.infotext_embed(attachment.filename, infotext, budget))
        job_embed = await self._job_embed(interaction, message)
        if job_embed is not None:
            embeds.append(job_embed)
        if not embeds:
            await interaction.followup.send(
                tr(locale_of(interaction), "This message has no image with generation settings."),
                ephemeral=True,
            )
            return
        await interaction.followup.send(embeds=embeds, ephemeral=True)

    async def _job_embed(
        self, interaction: discord.Interaction[AnimagineBot], message: discord.Message
    ) -> discord.Embed | None:
        me = self.bot.user
        job_id = job_id_of(message) if me is not None and message.author.id == me.id else None
        if job_id is None:
            return None
        try:
            job = await self.bot.service.job(job_id)
        except NotAllowed:
            return None
        if job.guild_id != interaction.guild_id:
            return None
        request = job.request
        locale = locale_of(interaction)
        embed = discord.Embed(title=tr(locale, "Job #{job}", job=job.id), colour=formatting.COLOR)
        formatting.job_fields(locale, embed, job, request)
        return embed
