"""``/describe image:`` and the "Describe" message command: an image's tags as a prompt.

Both answer ephemerally (only the member sees the tags), after the same steps:

1. the tagger is the moderation classifier (``[moderation.classifier]``); without one,
   the member is told describing is not available;
2. the attachment is bounded before it is read: Discord's declared size against
   ``describe.max_bytes``, then (in a worker thread, :func:`bot.describe.describe_bytes`)
   the bytes again, the format by content (PNG, JPEG, WebP), the pixels from the header,
   PIL's bomb check; at most ``describe.max_concurrent`` images are tagged at once;
3. :func:`bot.describe.visibility` decides what this channel may be shown, with the
   server's moderation policy: nothing for a hard block (anywhere) or for a questionable,
   explicit or sexual image outside age-restricted channels (the member is told why), and
   the sexual tags left out of what a plain channel is shown;
4. the answer holds the prompt and the Imagine / Edit & imagine buttons
   (:mod:`bot.discord_app.describe_views`).

The message command takes the first image attachment of any message (a bot result or a
member's picture).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

import discord
from discord import app_commands
from discord.ext import commands

from bot.attachments import AttachmentRefused, download
from bot.describe import ImageRejected, TagReader, describe_bytes, visibility
from bot.discord_app import formatting
from bot.discord_app.context import channel_of
from bot.discord_app.describe_views import DescribeView, described_text
from bot.discord_app.i18n import locale_of, say, tr
from bot.moderation.classifier import ClassifierUnavailable
from bot.storage import DatabaseError

if TYPE_CHECKING:
    from bot.discord_app.client import AnimagineBot

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT: Final = 15.0
"""Seconds the attachment's download may take."""
_IMAGE_SUFFIXES: Final = (".png", ".jpg", ".jpeg", ".webp")


def _looks_like_image(attachment: discord.Attachment) -> bool:
    """Which attachment of a message to try (the content is sniffed after download)."""
    kind = attachment.content_type or ""
    return kind.startswith("image/") or attachment.filename.lower().endswith(_IMAGE_SUFFIXES)


class DescribeCog(commands.Cog):
    def __init__(self, bot: AnimagineBot) -> None:
        self.bot = bot
        # Made at first use: ``doctor`` builds the command tree on a bare ``commands.Bot``.
        self._slots: asyncio.Semaphore | None = None
        self.describe_menu = app_commands.ContextMenu(
            name="Describe", callback=self.describe_message
        )

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.describe_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.describe_menu.name, type=self.describe_menu.type)

    @app_commands.command(
        name="describe", description="An image's tags as an Animagine prompt (only you see it)"
    )
    @app_commands.describe(image="A PNG, JPEG or WebP image")
    async def describe(
        self, interaction: discord.Interaction[AnimagineBot], image: discord.Attachment
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self._answer(interaction, image)

    async def describe_message(
        self, interaction: discord.Interaction[AnimagineBot], message: discord.Message
    ) -> None:
        """Apps -> Describe: the first image of a message (anyone's)."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        attachment = next((a for a in message.attachments if _looks_like_image(a)), None)
        if attachment is None:
            await self._send(
                interaction, tr(locale_of(interaction), "This message has no image to describe.")
            )
            return
        await self._answer(interaction, attachment)

    @property
    def slots(self) -> asyncio.Semaphore:
        """At most ``describe.max_concurrent`` images decoded and tagged at once."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.bot.settings.describe.max_concurrent)
        return self._slots

    def _tagger(self) -> TagReader | None:
        classifier = self.bot.service.worker.classifier
        return classifier if isinstance(classifier, TagReader) else None

    @staticmethod
    async def _send(interaction: discord.Interaction[AnimagineBot], text: str) -> None:
        await interaction.followup.send(text, ephemeral=True)

    async def _answer(
        self, interaction: discord.Interaction[AnimagineBot], attachment: discord.Attachment
    ) -> None:
        settings = self.bot.settings.describe
        locale = locale_of(interaction)
        tagger = self._tagger()
        if tagger is None:
            why = self.bot.service.worker.classifier_error or tr(locale, "it has no image tagger")
            await self._send(
                interaction,
                tr(
                    locale,
                    "Describing images is not available on this bot right now ({why}).",
                    why=why,
                ),
            )
            return
        name = attachment.filename
        if attachment.size > settings.max_bytes:
            await self._send(
                interaction,
                tr(
                    locale,
                    "Cannot describe {name}: the file is {size} MiB; at most {most} MiB can be "
                    "described.",
                    name=f"`{name}`",
                    size=f"{attachment.size / 1_048_576:.1f}",
                    most=f"{settings.max_bytes / 1_048_576:.1f}",
                ),
            )
            return
        try:
            data = await download(  # stops as soon as the body passes the cap
                attachment.url,
                declared=attachment.size,
                max_bytes=settings.max_bytes,
                limit_s=DOWNLOAD_TIMEOUT,
            )
            async with self.slots:
                description = await describe_bytes(
                    tagger,
                    data,
                    general_threshold=settings.general_threshold,
                    character_threshold=settings.character_threshold,
                    max_tags=settings.max_tags,
                    max_bytes=settings.max_bytes,
                    max_pixels=settings.max_pixels,
                )
            policy = await self.bot.service.policy(interaction.guild_id)
        except (ImageRejected, AttachmentRefused) as exc:
            await self._send(
                interaction,
                tr(
                    locale,
                    "Cannot describe {name}: {reason}.",
                    name=f"`{name}`",
                    reason=say(locale, exc),
                ),
            )
            return
        except ClassifierUnavailable as exc:
            log.warning("describe: %s", exc)
            reason = tr(locale, "the image tagger failed")
            await self._send(interaction, formatting.apology_text(locale, reason))
            return
        except DatabaseError as exc:
            log.error("describe: %s", exc)  # noqa: TRY400
            await self._send(interaction, formatting.database_down_text(locale))
            return
        answer = visibility(
            description, channel_of(interaction), policy, sexual_tags=tagger.sexual_tags
        )
        if answer.description is None:
            log.info("describe: not shown (%s)", answer.code)
            if answer.code == "hard_block":
                await self.bot.service.record_hard_blocked_input(
                    "describe",
                    str(answer.reason),
                    channel_of(interaction),
                    guild_id=interaction.guild_id,
                    user_id=interaction.user.id,
                )
            await self._send(
                interaction,
                tr(locale, "Not described here: {reason}.", reason=say(locale, answer.reason)),
            )
            return
        view = DescribeView(
            answer.description.prompt, interaction.user.id, nonce=interaction.id, locale=locale
        )
        view.message = await interaction.followup.send(
            described_text(locale, name, answer), view=view, ephemeral=True, wait=True
        )
