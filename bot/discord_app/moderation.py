"""The Discord side of moderation: which job a bot message shows, ban durations, and the
server's moderation log channel.

Every message the bot posts about a job names it: by its buttons
(``animagine:<action>:<job id>``), the result embed's footer (``Job #12 · ...``), its
files (``animagine_<job>_<n>_<seed>.png``, ``SPOILER_`` first behind a spoiler) or, for the
extra messages of a result split to fit the upload limit, its first line
(``Job #12: image 2 of 4``; footer and caption in the member's language, read by the job's
``#12``). :func:`job_id_of` reads them back, so "Who made this?" and
``/mod purge`` work on every message of a job, not only the one stored as its message.

The log channel (``/settings moderation set log_channel``) receives refused prompts (hard
blocks included), withheld images (attached behind spoilers when ``forward_withheld`` is
on), bans, unbans and purges. Images the image check hard-blocked (sexual content with a
minor), and sexual images nobody could check for minors, are described there but never
attached: they are forwarded to nobody. Posting there is best effort: a log channel the bot cannot
post in never breaks what members see (the database keeps every event either way).
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Final

import discord

from bot.discord_app import formatting
from bot.discord_app.components import PREFIX
from bot.discord_app.context import DEFAULT_FILESIZE_LIMIT
from bot.discord_app.i18n import SOURCE_LOCALE, trn
from bot.errors import ReadableError
from bot.moderation import GuildPolicy, PolicySettingsError, PromptDecision
from bot.queue.events import OutputImage
from bot.request import GenerationRequest
from bot.storage import DatabaseError, JobRecord

if TYPE_CHECKING:
    from bot.discord_app.client import AnimagineBot

log = logging.getLogger(__name__)

_BUTTON: Final = re.compile(rf"{PREFIX}:[a-z-]+:([0-9]+)(?::[0-9]+)?")
# The footer and the caption are in the member's language: matched on the job's "#<id>".
_FOOTER: Final = re.compile(r"#([0-9]+) · ")
_FILE: Final = re.compile(r"(?:SPOILER_)?animagine_([0-9]+)_[0-9]+_[0-9]+\.png")
_SPLIT: Final = re.compile(r"[^\n#]{0,40}#([0-9]+)\b")

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION: Final = re.compile(r"\s*([0-9]{1,6})\s*(s|m|h|d|w)\s*", re.IGNORECASE)
MAX_BAN: Final = timedelta(days=3650)


def job_id_of(message: discord.Message) -> int | None:
    """The job a message of this bot shows (see the module docstring); None if none."""
    for row in message.components:
        for child in getattr(row, "children", []):
            match = _BUTTON.fullmatch(getattr(child, "custom_id", None) or "")
            if match:
                return int(match.group(1))
    for embed in message.embeds:
        match = _FOOTER.search(embed.footer.text or "")
        if match:
            return int(match.group(1))
    for attachment in message.attachments:
        match = _FILE.fullmatch(attachment.filename)
        if match:
            return int(match.group(1))
    match = _SPLIT.match(message.content or "")
    return int(match.group(1)) if match else None


class DurationError(ReadableError, ValueError):
    """A ban duration that cannot be read; the message is for the moderator."""


def parse_duration(text: str) -> timedelta:
    """``"30m"``, ``"1h"``, ``"7d"``, ``"2w"``, ``"1d 12h"``: units s, m, h, d, w.

    Raises :class:`DurationError` for anything else, a zero duration or one over ten years.
    """
    total = 0
    position = 0
    cleaned = text.strip()
    for match in _DURATION.finditer(cleaned):
        if match.start() != position:
            break
        total += int(match.group(1)) * _UNITS[match.group(2).lower()]
        position = match.end()
    if not cleaned or position != len(cleaned):
        raise DurationError(
            "{text} is not a duration: write a number and a unit (s, m, h, d or w), e.g. 30m, "
            "12h, 7d or 1d 12h",
            text=repr(text),
        )
    if total <= 0:
        raise DurationError(
            "a ban must last at least one second (leave the duration out for a ban without end)"
        )
    delta = timedelta(seconds=total)
    if delta > MAX_BAN:
        raise DurationError(
            "a ban with an end can last at most 10 years (leave the "
            "duration out for a ban without end)"
        )
    return delta


def _groups(files: Sequence[tuple[str, bytes]], limit: int) -> tuple[list[list[int]], int]:
    """Files grouped into messages under ``limit`` bytes; and how many are too large."""
    groups: list[list[int]] = []
    size = 0
    skipped = 0
    for index, (_, data) in enumerate(files):
        if len(data) > limit:
            skipped += 1
            continue
        if not groups or size + len(data) > limit or len(groups[-1]) >= 10:
            groups.append([])
            size = 0
        groups[-1].append(index)
        size += len(data)
    return groups, skipped


class ModLog:
    """Posts to a server's moderation log channel, when it has one."""

    def __init__(self, bot: AnimagineBot) -> None:
        self.bot = bot

    def locale(self, guild_id: int | None) -> str:
        """The language of the server's log: its preferred locale (Community servers set
        it; others read English)."""
        guild = None if guild_id is None else self.bot.get_guild(guild_id)
        return SOURCE_LOCALE if guild is None else str(guild.preferred_locale)

    async def policy(self, guild_id: int | None) -> GuildPolicy | None:
        """The server's policy, or None (outside servers, or when it cannot be read)."""
        if guild_id is None:
            return None
        try:
            return await self.bot.service.policy(guild_id)
        except (PolicySettingsError, DatabaseError) as exc:
            log.warning("guild %s: cannot read the moderation policy: %s", guild_id, exc)
            return None

    async def post(
        self,
        guild_id: int | None,
        content: str,
        *,
        files: Sequence[tuple[str, bytes]] = (),
        policy: GuildPolicy | None = None,
    ) -> list[int]:
        """Post in the log channel (files split over messages to fit); the message ids."""
        policy = policy or await self.policy(guild_id)
        if policy is None or policy.log_channel_id is None:
            return []
        channel = self.bot.get_partial_messageable(policy.log_channel_id, guild_id=guild_id)
        groups, skipped = _groups(files, DEFAULT_FILESIZE_LIMIT)
        if skipped:
            content += "\n-# " + trn(
                self.locale(guild_id),
                skipped,
                "1 image too large to attach.",
                "{count} images too large to attach.",
            )
        sent: list[int] = []
        try:
            for number, group in enumerate(groups or [[]]):
                text = formatting.clip(content, 2000) if number == 0 else ""
                attached = [
                    discord.File(io.BytesIO(files[i][1]), filename=files[i][0]) for i in group
                ]
                message = await channel.send(
                    text,
                    files=attached,
                    allowed_mentions=discord.AllowedMentions.none(),
                )
                sent.append(message.id)
        except discord.HTTPException as exc:
            log.warning(
                "guild %s: cannot post in the log channel %s (%s)",
                guild_id,
                policy.log_channel_id,
                exc.status,
            )
        return sent

    async def refusal(
        self,
        *,
        guild_id: int | None,
        user_id: int,
        channel_id: int | None,
        decision: PromptDecision,
        request: GenerationRequest | None,
    ) -> None:
        """A prompt the channel's policy refused (hard blocks always, when a channel is set)."""
        if decision.event_kind is None:
            return
        text = formatting.log_refusal_text(
            self.locale(guild_id),
            decision,
            user_id=user_id,
            channel_id=channel_id,
            prompt=None if request is None else request.prompt,
        )
        await self.post(guild_id, text)

    async def withheld(
        self, job: JobRecord, request: GenerationRequest, images: Sequence[OutputImage]
    ) -> None:
        """Images not posted: described in the log; attached behind spoilers when the
        server forwards withheld images."""
        held = [image for image in images if image.withheld]
        policy = await self.policy(job.guild_id) if held else None
        if policy is None or policy.log_channel_id is None:
            return
        files: list[tuple[str, bytes]] = []
        if policy.forward_withheld:
            files = [
                (f"SPOILER_animagine_{job.id}_{image.index + 1}_{image.seed}.png", image.png)
                for image in held
                if image.verdict.forwardable and image.png
            ]
        text = formatting.log_withheld_text(
            self.locale(job.guild_id), job, request, held, forwarded=bool(files)
        )
        await self.post(job.guild_id, text, files=files, policy=policy)
