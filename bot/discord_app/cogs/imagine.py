"""``/imagine``: every option of a generation request, server defaults for the rest.

With an image attachment the job is img2img (:class:`~bot.request.ImagePrompt`): the
interaction is acknowledged, then the image downloaded with a timeout and a byte cap,
bounded before decoding, fitted to the nearest card resolution (or the ``aspect`` given),
rated by the image classifier and stored (:meth:`bot.service.ImagineService.image_prompt`);
each refusal is an ephemeral answer saying why."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.attachments import AttachmentRefused, download, too_large
from bot.discord_app import choices
from bot.discord_app.context import destination, reply
from bot.discord_app.formatting import bad_request_text
from bot.discord_app.i18n import locale_of, tr
from bot.discord_app.requests import ImagineOptions, build_request
from bot.discord_app.submit import retract, submit_request
from bot.request import MAX_SEED, GenerationRequest, RequestError, find_aspect

if TYPE_CHECKING:
    from bot.discord_app.client import AnimagineBot


class ImagineCog(commands.Cog):
    def __init__(self, bot: AnimagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine", description="Draw an image with Animagine XL 3.1")
    @app_commands.describe(
        prompt="Danbooru tags: 1girl/1boy, character, series, everything else",
        negative="What to avoid (added after the preset's negative prompt)",
        aspect="One of the nine resolutions the model was trained on",
        quality="Quality preset (tags added to the prompt and negative)",
        style="Style preset",
        rating="Rating tag (nsfw and explicit only in age-restricted channels)",
        year="Year tag: the era the picture should look like",
        seed="Seed for a reproducible image (random when left out)",
        steps="Denoising steps (fewer than 30 is recommended)",
        cfg="Guidance scale (5-7 is recommended)",
        sampler="Sampler (Euler a is recommended)",
        count="How many images (1-4)",
        hires="Add the hires pass (upscale by 1.5 and refine)",
        image="Start from this image (img2img): PNG, JPEG or WebP",
        strength="How far to depart from the image: 0.05 keeps it, 1 ignores it",
    )
    @app_commands.choices(
        aspect=choices.ASPECT,
        quality=choices.QUALITY,
        style=choices.STYLE,
        rating=choices.RATING,
        year=choices.YEAR,
        sampler=choices.SAMPLER,
    )
    async def imagine(
        self,
        interaction: discord.Interaction[AnimagineBot],
        *,
        prompt: app_commands.Range[str, 1, 6000],
        negative: app_commands.Range[str, 0, 6000] | None = None,
        aspect: str | None = None,
        quality: str | None = None,
        style: str | None = None,
        rating: str | None = None,
        year: str | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        steps: app_commands.Range[int, 1, 150] | None = None,
        cfg: app_commands.Range[float, 1.0, 30.0] | None = None,
        sampler: str | None = None,
        count: app_commands.Range[int, 1, 4] | None = None,
        hires: bool | None = None,
        image: discord.Attachment | None = None,
        strength: app_commands.Range[float, 0.05, 1.0] | None = None,
    ) -> None:
        options = ImagineOptions(
            prompt=prompt,
            negative=negative,
            aspect=aspect,
            quality=quality,
            style=style,
            rating=rating,
            year=year,
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler=sampler,
            count=count,
            hires=hires,
        )
        settings = self.bot.settings
        try:
            draft = build_request(options, {}, settings)
        except RequestError as exc:
            await reply(interaction, bad_request_text(locale_of(interaction), exc))
            return

        update: dict[str, object] = {}
        if image is None:
            if strength is not None:
                locale = locale_of(interaction)
                reason = tr(locale, "strength needs an image to start from")
                await reply(interaction, bad_request_text(locale, reason))
                return
        else:
            # Refused before anything is downloaded when the declared size is too large.
            limit = settings.engine.input_max_bytes
            if image.size > limit:
                reason = str(too_large(image.size, limit))
                await reply(interaction, bad_request_text(locale_of(interaction), reason))
                return
            await interaction.response.defer(thinking=True)
            try:
                update = await self._image_prompt(interaction, image, options, strength)
            except AttachmentRefused as exc:
                await retract(interaction, bad_request_text(locale_of(interaction), exc))
                return
            draft = draft.model_copy(update=update)

        async def make() -> GenerationRequest:
            defaults = await self.bot.service.admin.defaults(interaction.guild_id)
            return build_request(options, defaults, settings).model_copy(update=update)

        await submit_request(interaction, make, draft=draft)

    async def _image_prompt(
        self,
        interaction: discord.Interaction[AnimagineBot],
        attachment: discord.Attachment,
        options: ImagineOptions,
        strength: float | None,
    ) -> dict[str, object]:
        """The request's changes for an attached image: downloaded (bounded), checked,
        rated, stored; the size is the card the image was fitted to."""
        engine = self.bot.settings.engine
        data = await download(
            attachment.url,
            declared=attachment.size,
            max_bytes=engine.input_max_bytes,
            limit_s=engine.input_download_timeout_s,
        )
        prompt, _aspect, (width, height) = await self.bot.service.image_prompt(
            data,
            destination(interaction).channel,
            interaction.guild_id,
            strength=engine.image_prompt_strength if strength is None else strength,
            aspect=find_aspect(options.aspect) if options.aspect else None,
            user_id=interaction.user.id,
        )
        return {"image": prompt, "width": width, "height": height}
