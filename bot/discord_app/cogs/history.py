"""``/history``: a member's own recent jobs, a page at a time, only they see it.

What is listed, in what order and what stays hidden is decided by the core
(:mod:`bot.history`): the member's own jobs asked for where they ask (this server, or their
DMs with the bot), newest first, without those a moderator deleted or purged, and without
the prompts of age-restricted jobs outside age-restricted channels.

Each page is one embed (at most :data:`PAGE_SIZE` jobs: prompt, negative prompt, seeds,
size, steps, status, when, and a link to the job's message) with buttons:

* **Images #N** sends the job's kept images again, exactly as ``/images job:N`` does (the
  same command callback runs: own jobs only, the age-restriction rules of the channel
  asked from);
* **Re-run #N** queues the same request with the same seed through
  :func:`~bot.discord_app.submit.submit_request`, like ``/imagine``: this channel's policy,
  the member's limits and the server's step limit of now decide;
* **Previous** and **Next** page through newer and older jobs.

The view is not persistent: it answers its owner only, and its buttons go after
:data:`VIEW_TIMEOUT_S` (the interaction token that edits the message lives 15 minutes).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, cast

import discord
from discord import app_commands
from discord.ext import commands

from bot.admin import max_steps
from bot.discord_app import formatting
from bot.discord_app.cogs.info import InfoCog
from bot.discord_app.context import age_restricted, reply
from bot.discord_app.i18n import locale_of, tr, trn
from bot.discord_app.submit import submit_request
from bot.history import HistoryEntry, HistoryPage, history_page
from bot.request import GenerationRequest, RequestError
from bot.storage import DatabaseError, JobStatus

if TYPE_CHECKING:
    from bot.discord_app.client import AnimagineBot

log = logging.getLogger(__name__)

PAGE_SIZE: Final = 5
"""Jobs per page: five fields of at most ~700 characters keep the embed far below 6000, and
two buttons a job fit two rows of five."""
VIEW_TIMEOUT_S: Final = 600.0
"""Seconds without a press before the buttons go (below the token's 15 minutes)."""
PROMPT_CHARS: Final = 250
NEGATIVE_CHARS: Final = 120
REASON_CHARS: Final = 120
ID_PREFIX: Final = "animagine-history"

STATUS_EMOJI: Final[dict[JobStatus, str]] = {
    JobStatus.QUEUED: "⏳",
    JobStatus.RUNNING: "🎨",
    JobStatus.FINISHED: "✅",
    JobStatus.FAILED: "⚠️",
    JobStatus.CANCELLED: "✖️",
}

Button = discord.ui.Button["HistoryView"]

_IMAGES_COMMAND: Final = cast(
    "Callable[[InfoCog, discord.Interaction[Any], int | None], Awaitable[None]]",
    InfoCog.images.callback,
)
"""``/images``' callback (typed as a union by discord.py: a cog's command takes the cog)."""


def _escaped(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters, markdown escaped."""
    return discord.utils.escape_markdown(formatting.clip(" ".join(text.split()), limit))


def _seeds_text(locale: str, seeds: tuple[int, ...]) -> str:
    if not seeds:
        return tr(locale, "Seed random")
    if len(seeds) == 1:
        return tr(locale, "Seed {seed}", seed=seeds[0])
    return tr(locale, "Seeds {seeds}", seeds=", ".join(str(seed) for seed in seeds))


def entry_field(locale: str, entry: HistoryEntry) -> tuple[str, str]:
    """The embed field (name, value) of one job; the value stays under 1024 characters."""
    status = f"{STATUS_EMOJI[entry.status]} {formatting.status_word(locale, entry.status)}"
    name = f"#{entry.job_id} · {status}"
    lines: list[str] = []
    if entry.prompt is None:
        lines.append(
            "*" + tr(locale, "Prompt hidden here: asked for in an age-restricted channel.") + "*"
        )
    else:
        lines.append(_escaped(entry.prompt, PROMPT_CHARS))
        if entry.negative_prompt and entry.negative_prompt.strip():
            negative = _escaped(entry.negative_prompt, NEGATIVE_CHARS)
            lines.append(tr(locale, "Negative: {negative}", negative=negative))
    request = entry.request
    if request.hires is None:
        size = entry.size
    else:
        size = tr(
            locale, "{size} (hires ×{scale})", size=entry.size, scale=f"{request.hires.scale:g}"
        )
    settings = [
        _seeds_text(locale, entry.seeds),
        size,
        trn(locale, request.steps, "1 step", "{count} steps"),
        formatting.timestamp(entry.queued_at),
    ]
    lines.append(" · ".join(settings))
    if entry.status is JobStatus.FAILED and entry.failure_reason and not entry.prompt_hidden:
        lines.append(f"-# {_escaped(entry.failure_reason, REASON_CHARS)}")
    url = entry.jump_url
    if url is not None:
        if entry.status is JobStatus.FINISHED:
            lines.append(tr(locale, "[Jump to the result]({url})", url=url))
        else:
            lines.append(tr(locale, "[Jump to the message]({url})", url=url))
    return name, formatting.clip("\n".join(lines), formatting.EMBED_FIELD_MAX)


def history_embed(locale: str, page: HistoryPage, *, number: int, in_server: bool) -> discord.Embed:
    if in_server:
        title = tr(locale, "Your recent jobs in this server")
    else:
        title = tr(locale, "Your recent jobs in direct messages")
    embed = discord.Embed(title=title, colour=formatting.COLOR)
    for entry in page.entries:
        name, value = entry_field(locale, entry)
        embed.add_field(name=name, value=value, inline=False)
    if any(entry.prompt_hidden for entry in page.entries):
        embed.description = "-# " + tr(
            locale, "Prompts of jobs from age-restricted channels show only in such channels."
        )
    embed.set_footer(
        text=tr(
            locale,
            "Page {number} · Images: get them again · Re-run: same settings and seed",
            number=number,
        )
    )
    return embed


class HistoryView(discord.ui.View):
    """One member's history pages: Images and Re-run per job, Previous and Next."""

    def __init__(
        self,
        bot: AnimagineBot,
        *,
        owner_id: int,
        guild_id: int | None,
        age_restricted_here: bool,
        nonce: int,
        locale: str,
    ) -> None:
        super().__init__(timeout=VIEW_TIMEOUT_S)
        self.bot = bot
        self.locale = locale
        self.owner_id = owner_id
        self.guild_id = guild_id
        self.age_restricted_here = age_restricted_here
        self.nonce = nonce
        self.page = HistoryPage((), None, None)
        self.number = 1
        self.message: discord.WebhookMessage | None = None

    async def load(self, *, before: int | None = None, after: int | None = None) -> HistoryPage:
        """Read a page (the newest without a cursor) and lay out its buttons."""
        self.page = await history_page(
            self.bot.db,
            self.owner_id,
            guild_id=self.guild_id,
            before=before,
            after=after,
            limit=PAGE_SIZE,
            age_restricted_here=self.age_restricted_here,
        )
        self._lay_out()
        return self.page

    def embed(self) -> discord.Embed:
        return history_embed(
            self.locale, self.page, number=self.number, in_server=self.guild_id is not None
        )

    def _button(
        self,
        action: str,
        label: str,
        row: int,
        handler: Callable[[discord.Interaction[Any]], Awaitable[None]],
        *,
        emoji: str | None = None,
        disabled: bool = False,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
    ) -> None:
        button: Button = discord.ui.Button(
            label=label,
            emoji=emoji,
            style=style,
            row=row,
            disabled=disabled,
            custom_id=f"{ID_PREFIX}:{self.nonce}:{action}",
        )

        async def callback(interaction: discord.Interaction[Any]) -> None:
            await handler(interaction)

        button.callback = callback  # type: ignore[method-assign]
        self.add_item(button)

    def _lay_out(self) -> None:
        self.clear_items()
        locale = self.locale
        for entry in self.page.entries:
            self._button(
                f"images:{entry.job_id}",
                tr(locale, "Images #{job}", job=entry.job_id),
                0,
                self._images_of(entry),
                emoji="🖼️",
                disabled=not entry.images_kept,
            )
            self._button(
                f"rerun:{entry.job_id}",
                tr(locale, "Re-run #{job}", job=entry.job_id),
                1,
                self._rerun_of(entry),
                emoji="🔁",
            )
        if self.page.newer is not None or self.page.older is not None:
            self._button(
                "previous",
                tr(locale, "Previous"),
                2,
                self._previous,
                emoji="◀️",
                disabled=not self.page.newer,
            )
            self._button(
                "next", tr(locale, "Next"), 2, self._next, emoji="▶️", disabled=not self.page.older
            )

    # ---------------------------------------------------------------- who may press
    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        if interaction.user.id == self.owner_id:
            return True
        await reply(
            interaction,
            tr(
                locale_of(interaction),
                "This is someone else's history: run `/history` for yours.",
            ),
        )
        return False

    async def on_error(
        self, interaction: discord.Interaction[Any], error: Exception, item: discord.ui.Item[Any], /
    ) -> None:
        locale = locale_of(interaction)
        if isinstance(error, DatabaseError):
            log.error("/history failed: %s", error)
            text = formatting.database_down_text(locale)
        else:
            log.error("/history failed", exc_info=error)
            text = formatting.internal_error_text(locale, error)
        try:
            await reply(interaction, text)
        except discord.HTTPException as exc:
            log.warning("could not report a /history error (%s)", exc.status)

    async def on_timeout(self) -> None:
        if self.message is None:
            return
        try:
            await self.message.edit(view=None)
        except discord.HTTPException as exc:
            log.debug("could not remove the /history buttons (%s)", exc.status)

    # ---------------------------------------------------------------- paging
    async def _turn(self, interaction: discord.Interaction[Any], step: int) -> None:
        if step < 0:
            await self.load(after=self.page.newer)
        else:
            await self.load(before=self.page.older)
        if not self.page.entries:  # the jobs went meanwhile (deleted): start again
            await self.load()
            self.number = 1
        else:
            self.number = max(1, self.number + step)
        if self.page.newer is None:
            self.number = 1
        await interaction.response.edit_message(embed=self.embed(), view=self)

    async def _previous(self, interaction: discord.Interaction[Any]) -> None:
        await self._turn(interaction, -1)

    async def _next(self, interaction: discord.Interaction[Any]) -> None:
        await self._turn(interaction, 1)

    # ---------------------------------------------------------------- a job's buttons
    def _images_of(
        self, entry: HistoryEntry
    ) -> Callable[[discord.Interaction[Any]], Awaitable[None]]:
        async def images(interaction: discord.Interaction[Any]) -> None:
            info = self.bot.get_cog(InfoCog.__cog_name__)
            if not isinstance(info, InfoCog):
                await reply(
                    interaction,
                    tr(
                        locale_of(interaction),
                        "Use `/images job:{job}` to get them again.",
                        job=entry.job_id,
                    ),
                )
                return
            # The /images command itself: one path for fetching kept images again.
            await _IMAGES_COMMAND(info, interaction, entry.job_id)

        return images

    def _rerun_of(
        self, entry: HistoryEntry
    ) -> Callable[[discord.Interaction[Any]], Awaitable[None]]:
        request = entry.request
        settings = self.bot.settings

        async def make() -> GenerationRequest:
            limit = max_steps(await self.bot.service.admin.defaults(self.guild_id), settings)
            if request.steps > limit:
                raise RequestError(
                    tr(
                        self.locale,
                        "this server allows at most {most} steps (job #{job} used {steps})",
                        most=limit,
                        job=entry.job_id,
                        steps=request.steps,
                    )
                )
            return request

        async def rerun(interaction: discord.Interaction[Any]) -> None:
            # The stored request holds its seed: the same images, if this channel allows.
            await submit_request(interaction, make, draft=request)

        return rerun


class HistoryCog(commands.Cog):
    def __init__(self, bot: AnimagineBot) -> None:
        self.bot = bot

    @app_commands.command(
        name="history", description="Your recent jobs here: settings, links, images, re-run"
    )
    async def history(self, interaction: discord.Interaction[AnimagineBot]) -> None:
        """Only the member sees the answer."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        view = HistoryView(
            self.bot,
            owner_id=interaction.user.id,
            guild_id=interaction.guild_id,
            age_restricted_here=age_restricted(interaction),
            nonce=interaction.id,
            locale=locale_of(interaction),
        )
        page = await view.load()
        if not page.entries:
            if interaction.guild_id is not None:
                text = tr(view.locale, "You have no jobs in this server yet: `/imagine` makes one.")
            else:
                text = tr(
                    view.locale, "You have no jobs in direct messages yet: `/imagine` makes one."
                )
            await interaction.followup.send(text, ephemeral=True)
            return
        view.message = await interaction.followup.send(
            embed=view.embed(), view=view, ephemeral=True, wait=True
        )
