"""The answer to ``/describe``: the tags, and buttons to imagine from them.

The answer is ephemeral, so its buttons are a plain :class:`discord.ui.View` with a timeout
rather than persistent :class:`~discord.ui.DynamicItem` s: the tags must travel with the
buttons and a custom id holds 100 characters, so persistent buttons would need the tags
stored in the database; an ephemeral message cannot be seen after a restart anyway, and its
webhook token (to disable the buttons) lasts 15 minutes. The view lives 14 minutes; after a
restart or the timeout, the buttons answer nothing and the member describes again.

**Imagine** queues ``/imagine`` with the tags as the prompt and the server's defaults for
everything else, through :func:`~bot.discord_app.submit.submit_request`: the same bounds,
moderation policy, limits, queue and delivery as ``/imagine``. **Edit & imagine** opens a
modal prefilled with the tags (negative prompt and seed below), submitted the same way.
Only the member who asked can press them (the message is theirs alone anyway).
"""

from __future__ import annotations

import logging
from typing import Any, Final

import discord

from bot.describe import Visibility
from bot.discord_app import formatting
from bot.discord_app.components import PromptModal, guarded
from bot.discord_app.context import bot_of, reply
from bot.discord_app.i18n import locale_of, tr, trn
from bot.discord_app.requests import ImagineOptions, build_request
from bot.discord_app.submit import submit_request
from bot.request import GenerationRequest, RequestError

log = logging.getLogger(__name__)

PREFIX: Final = "animagine-describe"
VIEW_TIMEOUT: Final = 14 * 60.0
"""Seconds the buttons work: under the 15 minutes the answer's webhook token lasts."""
MESSAGE_MAX: Final = 2000


def described_text(locale: str, filename: str, answer: Visibility) -> str:
    """The answer's text: the prompt in a code block, and what this channel left out."""
    assert answer.description is not None
    prompt = answer.description.prompt
    name = f"`{discord.utils.escape_markdown(filename)[:80]}`"
    head = tr(locale, "**Tags of** {name}", name=name)
    tail = "-# " + tr(
        locale,
        "Imagine draws them with this server's defaults; Edit & imagine lets you change them.",
    )
    if answer.left_out:
        left_out = trn(
            locale,
            len(answer.left_out),
            "1 sexual tag left out: this channel is not age-restricted.",
            "{count} sexual tags left out: this channel is not age-restricted.",
        )
        tail = f"-# {left_out}\n{tail}"
    room = MESSAGE_MAX - len(head) - len(tail) - 12
    if len(prompt) > room:
        prompt = prompt[:room].rsplit(", ", 1)[0]
    return f"{head}\n```\n{prompt}\n```\n{tail}"


async def _submit(
    interaction: discord.Interaction[Any], options: ImagineOptions, what: str
) -> None:
    """Queue ``options`` as /imagine would: server defaults, then the shared submit path."""
    bot = bot_of(interaction)
    settings = bot.settings
    try:
        draft = build_request(options, {}, settings)
    except RequestError as exc:
        await reply(interaction, formatting.bad_request_text(locale_of(interaction), exc))
        return

    async def make() -> GenerationRequest:
        defaults = await bot.service.admin.defaults(interaction.guild_id)
        return build_request(options, defaults, settings)

    await guarded(interaction, what, submit_request(interaction, make, draft=draft))


class DescribeModal(PromptModal):
    """The described tags, prefilled and editable, with a negative prompt and a seed."""

    def __init__(self, prompt: str, *, nonce: int, locale: str) -> None:
        super().__init__(
            title=tr(locale, "Imagine from these tags"),
            custom_id=f"{PREFIX}:modal:{nonce}",
            locale=locale,
            prompt=prompt,
        )

    async def submit(
        self, interaction: discord.Interaction[Any], prompt: str, negative: str, seed: int | None
    ) -> None:
        options = ImagineOptions(prompt=prompt, negative=negative or None, seed=seed)
        await _submit(interaction, options, "edit & imagine")


class DescribeView(discord.ui.View):
    """Imagine and Edit & imagine under a description; for ``owner_id`` only."""

    def __init__(self, prompt: str, owner_id: int, *, nonce: int, locale: str) -> None:
        super().__init__(timeout=VIEW_TIMEOUT)
        self.prompt = prompt
        self.owner_id = owner_id
        self.message: discord.WebhookMessage | None = None
        imagine: discord.ui.Button[DescribeView] = discord.ui.Button(
            label=tr(locale, "Imagine"),
            emoji="🎨",
            style=discord.ButtonStyle.primary,
            custom_id=f"{PREFIX}:imagine:{nonce}",
        )
        edit: discord.ui.Button[DescribeView] = discord.ui.Button(
            label=tr(locale, "Edit & imagine"),
            emoji="✏️",
            style=discord.ButtonStyle.secondary,
            custom_id=f"{PREFIX}:edit:{nonce}",
        )
        imagine.callback = self.imagine  # type: ignore[method-assign]
        edit.callback = self.edit  # type: ignore[method-assign]
        self.add_item(imagine)
        self.add_item(edit)

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        if interaction.user.id != self.owner_id:
            await reply(
                interaction,
                tr(locale_of(interaction), "These buttons belong to the member who asked."),
            )
            return False
        return True

    async def imagine(self, interaction: discord.Interaction[Any]) -> None:
        await _submit(interaction, ImagineOptions(prompt=self.prompt), "imagine from tags")

    async def edit(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.send_modal(
            DescribeModal(self.prompt, nonce=interaction.id, locale=locale_of(interaction))
        )

    async def on_timeout(self) -> None:
        if self.message is None:
            return
        for item in self.children:
            if isinstance(item, discord.ui.Button):
                item.disabled = True
        try:
            await self.message.edit(view=self)
        except discord.HTTPException as exc:
            log.debug("could not disable the describe buttons (%s)", exc.status)
