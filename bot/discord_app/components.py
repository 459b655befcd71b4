"""Buttons and the Edit modal of job messages.

The buttons are persistent :class:`discord.ui.DynamicItem` s, registered once with
``bot.add_dynamic_items``: they keep working after a restart. Their custom ids only name
the job (``animagine:<action>:<job id>``); who may press what is decided from the job's
row in the database:

* Re-roll, Upscale, Vary and Edit queue a new job for whoever presses them (charged to them,
  checked against their limits), in the server the job belongs to;
* Delete: the member who asked, or a moderator (Manage Messages in the channel);
* Cancel: the member who asked, or a moderator (the core checks it again).

Vary (subtle) and Vary (strong) start an img2img job from one posted image (its kept PNG,
stored as the new job's input image): the same prompt and settings, a new seed, strength
``engine.vary_subtle_strength`` or ``engine.vary_strong_strength``. A job of several images
has a pair per image (``Vary 2 (subtle)``...). Re-roll of an img2img job renders again from
the same input image with a new seed; Upscale adds the hires pass to it.

Views holding dynamic items never time out and are never stopped: discord.py removes the
dynamic item registrations of a view when it is removed from its store.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Coroutine, Sequence
from typing import Any, ClassVar, Final, Self

import discord

from bot.discord_app import formatting
from bot.discord_app.context import bot_of, is_moderator, reply, requester
from bot.discord_app.i18n import SOURCE_LOCALE, locale_of, tr
from bot.discord_app.requests import hires_options
from bot.discord_app.submit import submit_request
from bot.moderation.image_check import Verdict
from bot.request import MAX_SEED, GenerationRequest, ImagePrompt
from bot.service import NotAllowed
from bot.storage import DatabaseError, ImageRecord, JobRecord, JobStatus

log = logging.getLogger(__name__)

PREFIX: Final = "animagine"
LOOKUP_TIMEOUT: Final = 2.0
"""Seconds a button that must answer with a modal may spend reading the job."""
TEXT_INPUT_MAX: Final = 4000

Button = discord.ui.Button[discord.ui.View]


async def _job_here(interaction: discord.Interaction[Any], job_id: int) -> JobRecord:
    """The job a button names, if it belongs where the button was pressed."""
    job = await bot_of(interaction).service.job(job_id)
    if job.guild_id != interaction.guild_id:
        raise NotAllowed(
            tr(locale_of(interaction), "this button belongs to a job of another server")
        )
    return job


async def _finished_image(
    interaction: discord.Interaction[Any], job_id: int, index: int
) -> tuple[JobRecord, ImageRecord]:
    """A finished job of this server and its image ``index`` (NotAllowed says why not)."""
    locale = locale_of(interaction)
    job = await _job_here(interaction, job_id)
    if job.status is not JobStatus.FINISHED:
        raise NotAllowed(
            tr(
                locale,
                "job {job} is {status}, not finished",
                job=job_id,
                status=formatting.status_word(locale, job.status),
            )
        )
    images = await bot_of(interaction).service.admin.images(job_id)
    image = next((i for i in images if i.index == index), None)
    if image is None:
        raise NotAllowed(
            tr(locale, "job {job} has no image {number}", job=job_id, number=index + 1)
        )
    return job, image


async def guarded(interaction: discord.Interaction[Any], what: str, action: Any) -> None:
    """Run a button's action; a failure of the bot gets an apology, never silence."""
    locale = locale_of(interaction)
    try:
        await action
    except NotAllowed as exc:
        await reply(interaction, formatting.not_allowed_text(locale, exc))
    except DatabaseError as exc:
        log.error("%s failed: %s", what, exc)  # noqa: TRY400
        await reply(interaction, formatting.database_down_text(locale))
    except discord.HTTPException:
        log.exception("%s failed talking to Discord", what)
    except Exception as exc:
        log.exception("%s failed", what)
        await reply(interaction, formatting.internal_error_text(locale, exc))


# ------------------------------------------------------------------------------ actions


async def reroll(interaction: discord.Interaction[Any], job_id: int) -> None:
    async def make() -> GenerationRequest:
        request = (await _job_here(interaction, job_id)).request
        return request.model_copy(update={"seed": None})

    await submit_request(interaction, make)


async def upscale(interaction: discord.Interaction[Any], job_id: int, index: int) -> None:
    bot = bot_of(interaction)

    async def make() -> GenerationRequest:
        job = await _job_here(interaction, job_id)
        request = job.request
        if request.hires is not None:
            raise NotAllowed(tr(locale_of(interaction), "these images already had the hires pass"))
        _job, image = await _finished_image(interaction, job_id, index)
        update = {"seed": image.seed, "count": 1, "hires": hires_options(bot.settings)}
        return request.model_copy(update=update)

    await submit_request(interaction, make)


async def vary(interaction: discord.Interaction[Any], job_id: int, index: int, how: str) -> None:
    bot = bot_of(interaction)
    engine = bot.settings.engine
    strength = engine.vary_strong_strength if how == "strong" else engine.vary_subtle_strength

    async def make() -> GenerationRequest:
        locale = locale_of(interaction)
        job, image = await _finished_image(interaction, job_id, index)
        values = {"job": job_id, "number": index + 1}
        if image.verdict is None or not Verdict.from_row(image.verdict).posted:
            raise NotAllowed(tr(locale, "image {number} of job {job} was not posted", **values))
        vault = bot.service.outbox.vault
        png = await asyncio.to_thread(vault.read, job_id, index)
        if png is None:
            raise NotAllowed(
                tr(
                    locale,
                    "image {number} of job {job} is no longer kept, so it cannot be varied",
                    **values,
                )
            )
        source = await asyncio.to_thread(vault.keep_input, png)
        prompt = ImagePrompt(
            source=source, strength=strength, origin="vary", from_job=job_id, from_index=index
        )
        return job.request.model_copy(update={"seed": None, "image": prompt})

    await submit_request(interaction, make)


async def open_editor(interaction: discord.Interaction[Any], job_id: int) -> None:
    try:
        job = await asyncio.wait_for(_job_here(interaction, job_id), LOOKUP_TIMEOUT)
    except TimeoutError:
        await reply(
            interaction,
            tr(
                locale_of(interaction),
                "The bot is very busy right now: press Edit again in a moment.",
            ),
        )
        return
    request = job.request
    await interaction.response.send_modal(
        EditModal(job.id, request, nonce=interaction.id, locale=locale_of(interaction))
    )


async def delete(interaction: discord.Interaction[Any], job_id: int) -> None:
    await interaction.response.defer()
    bot = bot_of(interaction)
    job = await bot.service.job(job_id)
    moderator = is_moderator(interaction)
    if job.user_id != interaction.user.id and not moderator:
        await reply(
            interaction,
            tr(
                locale_of(interaction),
                "Only the member who asked for these images, or a moderator, can delete them.",
            ),
        )
        return
    try:
        await interaction.delete_original_response()
    except discord.NotFound:
        return  # already gone
    await bot.service.admin.record_delete(job, interaction.user.id)


async def cancel(interaction: discord.Interaction[Any], job_id: int) -> None:
    await interaction.response.defer()
    bot = bot_of(interaction)
    record = await bot.service.cancel(
        job_id, requester(interaction), moderator=is_moderator(interaction)
    )
    locale = locale_of(interaction)
    if record.status is JobStatus.CANCELLED:
        text = formatting.cancelled_text(locale, record)
    else:
        text = formatting.stopping_text(locale, job_id)
    await reply(interaction, text)


# ------------------------------------------------------------------------------ buttons


class _JobButton(discord.ui.DynamicItem[Button], template=r"(?!)"):
    """A persistent button acting on one job; subclasses name the action and its handler.

    The custom id only says which job: who may press it is checked against the database.
    """

    action: ClassVar[str]
    label: ClassVar[str]
    emoji: ClassVar[str]
    style: ClassVar[discord.ButtonStyle] = discord.ButtonStyle.secondary

    def __init__(self, job_id: int, *, locale: str = SOURCE_LOCALE) -> None:
        super().__init__(
            discord.ui.Button(
                label=tr(locale, self.label),
                emoji=self.emoji,
                style=self.style,
                custom_id=f"{PREFIX}:{self.action}:{job_id}",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> Self:
        return cls(int(match["job"]))

    def handle(self, interaction: discord.Interaction[Any]) -> Coroutine[Any, Any, None]:
        raise NotImplementedError

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await guarded(interaction, self.label.lower(), self.handle(interaction))


class RerollButton(_JobButton, template=rf"{PREFIX}:reroll:(?P<job>[0-9]+)"):
    action, label, emoji = "reroll", "Re-roll", "🎲"

    def handle(self, interaction: discord.Interaction[Any]) -> Coroutine[Any, Any, None]:
        return reroll(interaction, self.job_id)


class EditButton(_JobButton, template=rf"{PREFIX}:edit:(?P<job>[0-9]+)"):
    action, label, emoji = "edit", "Edit", "✏️"

    def handle(self, interaction: discord.Interaction[Any]) -> Coroutine[Any, Any, None]:
        return open_editor(interaction, self.job_id)


class DeleteButton(_JobButton, template=rf"{PREFIX}:delete:(?P<job>[0-9]+)"):
    action, label, emoji = "delete", "Delete", "🗑️"
    style = discord.ButtonStyle.danger

    def handle(self, interaction: discord.Interaction[Any]) -> Coroutine[Any, Any, None]:
        return delete(interaction, self.job_id)


class CancelButton(_JobButton, template=rf"{PREFIX}:cancel:(?P<job>[0-9]+)"):
    action, label, emoji = "cancel", "Cancel", "✖️"
    style = discord.ButtonStyle.danger

    def handle(self, interaction: discord.Interaction[Any]) -> Coroutine[Any, Any, None]:
        return cancel(interaction, self.job_id)


class UpscaleButton(
    discord.ui.DynamicItem[Button],
    template=rf"{PREFIX}:upscale:(?P<job>[0-9]+):(?P<index>[0-9]+)",
):
    def __init__(
        self, job_id: int, index: int, *, numbered: bool = False, locale: str = SOURCE_LOCALE
    ) -> None:
        if numbered:
            label = tr(locale, "Upscale {number}", number=index + 1)
        else:
            label = tr(locale, "Upscale")
        super().__init__(
            discord.ui.Button(
                label=label,
                emoji="🔍",
                style=discord.ButtonStyle.secondary,
                custom_id=f"{PREFIX}:upscale:{job_id}:{index}",
            )
        )
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> Self:
        return cls(int(match["job"]), int(match["index"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await guarded(interaction, "upscale", upscale(interaction, self.job_id, self.index))


def _vary_label(locale: str, how: str, number: int | None) -> str:
    if how == "strong":
        if number is None:
            return tr(locale, "Vary (strong)")
        return tr(locale, "Vary {number} (strong)", number=number)
    if number is None:
        return tr(locale, "Vary (subtle)")
    return tr(locale, "Vary {number} (subtle)", number=number)


class VaryButton(
    discord.ui.DynamicItem[Button],
    template=rf"{PREFIX}:vary:(?P<job>[0-9]+):(?P<index>[0-9]+):(?P<how>subtle|strong)",
):
    """Vary one image of a job: subtly or strongly (see the module)."""

    def __init__(
        self,
        job_id: int,
        index: int,
        how: str,
        *,
        numbered: bool = False,
        locale: str = SOURCE_LOCALE,
    ) -> None:
        label = _vary_label(locale, how, index + 1 if numbered else None)
        super().__init__(
            discord.ui.Button(
                label=label,
                emoji="🪄" if how == "subtle" else "🌀",
                style=discord.ButtonStyle.secondary,
                custom_id=f"{PREFIX}:vary:{job_id}:{index}:{how}",
            )
        )
        self.job_id = job_id
        self.index = index
        self.how = how

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> Self:
        return cls(int(match["job"]), int(match["index"]), match["how"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await guarded(
            interaction, f"vary {self.how}", vary(interaction, self.job_id, self.index, self.how)
        )


DYNAMIC_ITEMS: Final = (
    RerollButton,
    UpscaleButton,
    VaryButton,
    EditButton,
    DeleteButton,
    CancelButton,
)


def cancel_view(job_id: int, locale: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id, locale=locale))
    return view


def result_view(
    job_id: int, request: GenerationRequest, posted: Sequence[int], count: int, locale: str
) -> discord.ui.View:
    """Re-roll, Edit, Delete (row 1); an Upscale for each posted image (of ``count``) unless
    they already had the hires pass (row 2); Vary (subtle) and Vary (strong) for each posted
    image: side by side for one image, else one row of each (rows 3 and 4). At most 4
    images a job: never more than 5 buttons a row, nor 5 rows."""
    view = discord.ui.View(timeout=None)
    view.add_item(RerollButton(job_id, locale=locale))
    view.add_item(EditButton(job_id, locale=locale))
    view.add_item(DeleteButton(job_id, locale=locale))
    numbered = count > 1
    shown = list(posted)[:4]
    if request.hires is None:
        for index in shown:
            item = UpscaleButton(job_id, index, numbered=numbered, locale=locale)
            item.row = 1
            view.add_item(item)
    for index in shown:
        for how, row in (("subtle", 2), ("strong", 3 if numbered else 2)):
            vary_item = VaryButton(job_id, index, how, numbered=numbered, locale=locale)
            vary_item.row = row
            view.add_item(vary_item)
    return view


# ------------------------------------------------------------------------------ the modal


class PromptModal(discord.ui.Modal):
    """Prompt, negative prompt and seed, prefilled and editable; a seed that is not one is
    answered at once, the rest goes to :meth:`submit`."""

    def __init__(
        self,
        *,
        title: str,
        custom_id: str,
        locale: str,
        prompt: str,
        negative: str = "",
        seed: int | None = None,
    ) -> None:
        super().__init__(title=title, custom_id=custom_id, timeout=900)
        self.prompt: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(
            label=tr(locale, "Prompt"),
            style=discord.TextStyle.paragraph,
            custom_id="prompt",
            default=prompt[:TEXT_INPUT_MAX],
            max_length=TEXT_INPUT_MAX,
        )
        self.negative: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(
            label=tr(locale, "Negative prompt (after the preset's)"),
            style=discord.TextStyle.paragraph,
            custom_id="negative",
            default=negative[:TEXT_INPUT_MAX],
            required=False,
            max_length=TEXT_INPUT_MAX,
        )
        self.seed: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(
            label=tr(locale, "Seed (empty for a random one)"),
            custom_id="seed",
            required=False,
            default="" if seed is None else str(seed),
            max_length=10,
        )
        for item in (self.prompt, self.negative, self.seed):
            self.add_item(item)

    async def on_submit(self, interaction: discord.Interaction[Any], /) -> None:
        text = self.seed.value.strip()
        if text and not (text.isdigit() and int(text) <= MAX_SEED):
            await reply(
                interaction,
                tr(
                    locale_of(interaction),
                    "The seed must be a whole number from 0 to {most}.",
                    most=MAX_SEED,
                ),
            )
            return
        seed = int(text) if text else None
        await self.submit(interaction, self.prompt.value, self.negative.value, seed)

    async def submit(
        self, interaction: discord.Interaction[Any], prompt: str, negative: str, seed: int | None
    ) -> None:
        raise NotImplementedError


class EditModal(PromptModal):
    """Prompt, negative and seed of a job, prefilled; submitting queues the edited request."""

    def __init__(self, job_id: int, request: GenerationRequest, *, nonce: int, locale: str) -> None:
        super().__init__(
            title=tr(locale, "Edit job #{job}", job=job_id),
            custom_id=f"{PREFIX}:edit-modal:{job_id}:{nonce}",
            locale=locale,
            prompt=request.prompt,
            negative=request.negative_prompt,
            seed=request.seed,
        )
        self.request = request

    async def submit(
        self, interaction: discord.Interaction[Any], prompt: str, negative: str, seed: int | None
    ) -> None:
        edited = self.request.model_copy(
            update={"prompt": prompt, "negative_prompt": negative, "seed": seed}
        )

        async def make() -> GenerationRequest:
            return edited

        await guarded(interaction, "edit", submit_request(interaction, make, draft=edited))
