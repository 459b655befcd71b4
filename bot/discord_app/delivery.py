"""What members see of their jobs: the Discord side of :class:`~bot.queue.events.JobEvents`.

One message per job: the reply to the command shows the queue position, then progress
(at most one edit every ``progress_interval`` seconds), then the result or the reason it
failed. Edits go through the interaction's webhook token while it is valid (15 minutes);
after that, or when Discord refuses the token (401/404), the answer is posted in the
channel with the bot's own token, mentioning the member, and as a last resort in a DM: a
result is never dropped.

Uploads respect the interaction's ``attachment_size_limit`` (and Discord's 10 MiB default
for channel sends): PNGs that do not fit together are re-encoded with maximum compression,
then split one image per message, and the member is told.

Moderation: images whose verdict is ``withhold`` are never uploaded where the job was
asked; the member is told why, and the server's log channel hears about them
(:meth:`~bot.discord_app.moderation.ModLog.withheld`). Images from an age-restricted channel
that plain-channel rules would hold back never go to the last-resort DM.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import discord
from PIL import Image, PngImagePlugin

from bot.discord_app import formatting
from bot.discord_app.components import cancel_view, result_view
from bot.discord_app.context import DEFAULT_FILESIZE_LIMIT
from bot.discord_app.i18n import SOURCE_LOCALE, locale_of, tr, trn
from bot.engine import Progress
from bot.logs import job_context
from bot.queue.events import Attempt, OutputImage
from bot.request import GenerationRequest
from bot.service import Submitted
from bot.storage import DatabaseError, JobRecord

if TYPE_CHECKING:
    from bot.discord_app.client import AnimagineBot

log = logging.getLogger(__name__)

TOKEN_MARGIN: Final = timedelta(seconds=30)
"""A token this close to its expiry is not used: a slow upload would outlive it."""
_GONE: Final = frozenset({401, 404})


POST_TIMEOUT_S: Final = 120.0
"""The longest one post (an upload of up to 25 MiB) may take before it counts as failed."""
PROGRESS_EDIT_TIMEOUT_S: Final = 5.0
"""A progress edit slower than this is skipped."""
PREVIEW_NAME: Final = "preview.jpg"
PREVIEW_QUALITY: Final = 80


def encode_preview(image: Image.Image) -> bytes:
    """A live preview as a small JPEG (blocking: run it in a thread)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=PREVIEW_QUALITY)
    return buffer.getvalue()


def _locale(job: JobRecord) -> str:
    """The language the job's messages are written in: the requester's."""
    return job.locale or SOURCE_LOCALE


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class _Problem:
    """Why one post went nowhere, and whether trying again later may help."""

    text: str
    transient: bool
    retry_after: float | None = None

    @classmethod
    def of(cls, exc: BaseException) -> _Problem:
        if isinstance(exc, discord.RateLimited):
            return cls(f"rate limited for {exc.retry_after:.0f} s", True, exc.retry_after)
        if isinstance(exc, discord.HTTPException):
            retry_after = _retry_after(exc)
            transient = exc.status >= 500 or exc.status == 429
            return cls(f"HTTP {exc.status}", transient, retry_after)
        return cls(_describe(exc), True)  # a timeout, no connection


def _retry_after(exc: discord.HTTPException) -> float | None:
    headers = getattr(exc.response, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None


def _most_hopeful(problems: Sequence[_Problem]) -> _Problem:
    transient = [p for p in problems if p.transient]
    if not transient:
        return problems[-1] if problems else _Problem("nowhere to post", False)
    waits = [p.retry_after for p in transient if p.retry_after is not None]
    return _Problem(transient[-1].text, True, max(waits) if waits else None)


def _attempt_of(problems: Sequence[_Problem], *, posted: int) -> Attempt:
    problem = _most_hopeful(problems)
    if problem.transient:
        return Attempt.later(problem.text, posted=posted, retry_after=problem.retry_after)
    return Attempt.refused(problem.text, posted=posted)


class Stage(IntEnum):
    QUEUED = 0
    RUNNING = 1
    DONE = 2


@dataclass(eq=False)
class Track:
    """What the bot knows about the message of one job in this process."""

    job_id: int
    filesize_limit: int = DEFAULT_FILESIZE_LIMIT
    message_id: int | None = None
    stage: Stage = Stage.QUEUED
    last_edit: float = -math.inf
    webhook_ok: bool = True
    progress: Progress | None = None  # the newest step heard of
    preview: bytes | None = None  # a checked live preview not shown yet (JPEG)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def done(self) -> bool:
        return self.stage is Stage.DONE


@dataclass(frozen=True)
class Fitted:
    """The images as they will be uploaded: files, grouped one group per message."""

    files: list[tuple[str, bytes]]
    groups: list[list[int]]
    notes: list[str]


def recompress(png: bytes) -> bytes:
    """The same PNG (text chunks kept) at maximum compression, or ``png`` if not smaller."""
    with Image.open(io.BytesIO(png)) as image:
        info = PngImagePlugin.PngInfo()
        for key, value in image.info.items():
            if isinstance(key, str) and isinstance(value, str):
                info.add_text(key, value)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", pnginfo=info, compress_level=9, optimize=True)
    smaller = buffer.getvalue()
    return smaller if len(smaller) < len(png) else png


def _mib(size: int) -> str:
    return f"{size / 1_048_576:.3g} MiB"


def fit_images(locale: str, files: Sequence[tuple[str, bytes]], limit: int) -> Fitted:
    """Group ``files`` into messages under ``limit`` bytes each (blocking: PNG re-encoding).

    All in one message when they fit; else every image is re-encoded at maximum
    compression; if they still do not fit together, one image per message; an image too
    large even alone is left out, and ``notes`` say so.
    """
    items = list(files)
    if sum(len(data) for _, data in items) <= limit:
        return Fitted(items, [list(range(len(items)))] if items else [], [])
    items = [(name, recompress(data)) for name, data in items]
    notes = [tr(locale, "Re-compressed to fit Discord's upload limit of {size}.", size=_mib(limit))]
    if sum(len(data) for _, data in items) <= limit:
        return Fitted(items, [list(range(len(items)))], notes)
    groups: list[list[int]] = []
    for index, (name, data) in enumerate(items):
        if len(data) <= limit:
            groups.append([index])
        else:
            notes.append(
                tr(
                    locale,
                    "{name} is {size}, over the upload limit even re-compressed: ask for a "
                    "smaller size to get it.",
                    name=name,
                    size=_mib(len(data)),
                )
            )
    if len(groups) > 1:
        notes.append(tr(locale, "Too large for one message together: sent one image per message."))
    return Fitted(items, groups, notes)


def file_name(job: JobRecord, image: OutputImage) -> str:
    """``SPOILER_`` first when the moderation verdict asks for a spoiler (Discord's rule)."""
    name = f"animagine_{job.id}_{image.index + 1}_{image.seed}.png"
    return f"SPOILER_{name}" if image.verdict.spoiler else name


@dataclass
class _Post:
    content: str
    embed: discord.Embed | None = None
    files: list[tuple[str, bytes]] = field(default_factory=list)
    view: discord.ui.View | None = None
    not_for_dm: frozenset[str] = frozenset()
    """Files allowed where the job was asked (an age-restricted channel) but not in a DM."""

    def discord_files(self, *, dm: bool = False) -> list[discord.File]:
        return [
            discord.File(io.BytesIO(data), filename=name)
            for name, data in self.files
            if not (dm and name in self.not_for_dm)
        ]


class Delivery:
    """The bot's :class:`~bot.queue.events.JobEvents`: queue line, progress, result."""

    def __init__(
        self,
        bot: AnimagineBot,
        *,
        progress_interval: float = 2.0,
        ready_timeout: float = 10.0,
    ) -> None:
        self.bot = bot
        self.progress_interval = progress_interval
        self.ready_timeout = ready_timeout
        self._tracks: dict[int, Track] = {}
        self.upload_seconds: OrderedDict[int, float] = OrderedDict()
        """Seconds each recent job's result took to fit and upload (for benchmarks)."""

    # ------------------------------------------------------------------ the reply
    def track(self, job_id: int, filesize_limit: int) -> Track:
        """Start following a job whose reply is about to be posted (see :meth:`announce`).

        Call it right after :meth:`ImagineService.submit` returns, before awaiting
        anything: events of the job then wait until the reply exists.
        """
        track = Track(job_id, min(filesize_limit, DEFAULT_FILESIZE_LIMIT))
        self._tracks[job_id] = track
        return track

    async def announce(
        self,
        interaction: discord.Interaction[Any],
        submitted: Submitted,
        request: GenerationRequest,
    ) -> None:
        """Turn the deferred reply into the job's message: position, ETA, Cancel."""
        job = submitted.job
        track = self._tracks.get(job.id) or self.track(job.id, interaction.filesize_limit)
        try:
            async with track.lock:
                locale = locale_of(interaction)
                message = await interaction.edit_original_response(
                    content=formatting.queued_text(locale, submitted, request),
                    view=cancel_view(job.id, locale),
                )
                track.message_id = message.id
                track.last_edit = time.monotonic()
        except discord.HTTPException as exc:
            log.warning("job %s: could not post its queue message (%s)", job.id, exc.status)
        finally:
            track.ready.set()
        if track.message_id is not None:
            try:
                await self.bot.service.admin.set_message(job.id, track.message_id)
            except DatabaseError:
                log.exception("job %s: could not store its message id", job.id)

    async def _follow(self, job: JobRecord) -> Track:
        track = self._tracks.get(job.id)
        if track is None:  # a job from before a restart: its message is in the database
            track = Track(job.id, message_id=job.message_id)
            track.ready.set()
            self._tracks[job.id] = track
        elif not track.ready.is_set():
            try:
                await asyncio.wait_for(track.ready.wait(), self.ready_timeout)
            except TimeoutError:
                log.warning("job %s: its queue message never came; answering without it", job.id)
        if track.message_id is None:
            track.message_id = job.message_id
        return track

    # ------------------------------------------------------------------ JobEvents
    async def on_started(self, job: JobRecord) -> None:
        request = job.request
        await self._progress_edit(job, formatting.started_text(_locale(job), job, request))

    async def on_progress(self, job: JobRecord, progress: Progress) -> None:
        """A step's progress; with a live preview (already through the image check: see
        :mod:`bot.queue.render`), the preview waits for the next edit the throttle allows
        and is shown as the message's one attachment."""
        track = self._tracks.get(job.id)
        if progress.preview is not None and (track is None or not track.done):
            preview = await asyncio.to_thread(encode_preview, progress.preview)
            track = self._tracks.get(job.id)
            if track is not None and not track.done:
                track.preview = preview
        if track is not None:
            newest = track.progress
            if newest is None or progress.step >= newest.step:
                track.progress = progress
            else:
                progress = newest  # a preview checked late: the text says the newest step
        request = job.request
        text = formatting.progress_text(_locale(job), job, request, progress)
        await self._progress_edit(job, text)

    async def on_finished(self, job: JobRecord, images: list[OutputImage]) -> Attempt:
        """One delivery attempt (the outbox calls again after one that did not go
        through: the posts already out are skipped)."""
        started = time.perf_counter()
        track = await self._follow(job)
        request = job.request
        async with track.lock:
            track.stage = Stage.DONE
            attempt = await self._deliver_result(job, track, request, images)
        if attempt.delivered or attempt.final:
            self._tracks.pop(job.id, None)
        if job.delivery_attempts == 0 and any(image.withheld for image in images):
            await self.bot.modlog.withheld(job, request, images)  # once, whatever came of it
        if attempt.delivered:
            self.upload_seconds[job.id] = time.perf_counter() - started
            while len(self.upload_seconds) > 1000:
                self.upload_seconds.popitem(last=False)
        return attempt

    async def on_undelivered(self, job: JobRecord, reason: str) -> None:
        """Tell the member once that the result could not be posted (text only: an upload
        outage often lets text through), in the channel, else in a DM."""
        hours = self.bot.settings.delivery.retry_hours
        text = formatting.undelivered_text(_locale(job), job, reason, hours)
        sent, _problem = await self._via_channel(job, _Post(text), mention=True, dms=set())
        if sent is None:
            log.error("job %s: the member could not be told that the result is waiting", job.id)

    async def on_failed(self, job: JobRecord, reason: str) -> None:
        await self._final_text(job, formatting.failed_text(_locale(job), job, reason))

    async def on_cancelled(self, job: JobRecord) -> None:
        await self._final_text(job, formatting.cancelled_text(_locale(job), job))

    # ------------------------------------------------------------------ edits
    def _webhook_usable(self, job: JobRecord, track: Track) -> bool:
        expires = job.interaction_expires_at
        return (
            track.webhook_ok
            and job.interaction_token is not None
            and expires is not None
            and discord.utils.utcnow() < expires - TOKEN_MARGIN
        )

    def _webhook(self, job: JobRecord) -> discord.Webhook:
        assert job.interaction_token is not None
        app_id = self.bot.application_id
        assert app_id is not None
        return discord.Webhook.partial(app_id, job.interaction_token, client=self.bot)

    async def _progress_edit(self, job: JobRecord, content: str) -> None:
        with job_context(job_id=job.id, guild_id=job.guild_id, channel_id=job.channel_id):
            await self._edit_progress(job, content)

    async def _edit_progress(self, job: JobRecord, content: str) -> None:
        track = await self._follow(job)
        now = time.monotonic()
        if track.done or now - track.last_edit < self.progress_interval:
            return
        track.last_edit = now  # reserve the slot before awaiting the lock
        async with track.lock:
            if track.done or track.message_id is None:
                return
            if not self._webhook_usable(job, track):
                return  # progress after the token expired is not worth a channel message
            track.stage = Stage.RUNNING
            preview = track.preview
            extra: dict[str, Any] = {}
            if preview is not None:  # replaces the previous preview
                extra["attachments"] = [discord.File(io.BytesIO(preview), filename=PREVIEW_NAME)]
            try:
                # Bounded: a progress edit is skipped, never retried for long (discord.py
                # itself retries 5xx for up to ~25 s), and never holds up the result.
                await asyncio.wait_for(
                    self._webhook(job).edit_message(
                        track.message_id,
                        content=content,
                        view=cancel_view(job.id, _locale(job)),
                        **extra,
                    ),
                    PROGRESS_EDIT_TIMEOUT_S,
                )
                if track.preview is preview:
                    track.preview = None
            except discord.HTTPException as exc:
                track.webhook_ok = exc.status not in _GONE
                log.info("job %s: progress edit failed (%s)", job.id, exc.status)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.info("job %s: progress edit skipped (%s)", job.id, _describe(exc))

    async def _final_text(self, job: JobRecord, content: str) -> None:
        with job_context(job_id=job.id, guild_id=job.guild_id, channel_id=job.channel_id):
            await self._post_final_text(job, content)

    async def _post_final_text(self, job: JobRecord, content: str) -> None:
        track = await self._follow(job)
        async with track.lock:
            track.stage = Stage.DONE
            attempt = await self._send_all(job, track, [_Post(content)])
        if not attempt.delivered:
            log.error("job %s: its answer could not be delivered (%s)", job.id, attempt.error)
        self._tracks.pop(job.id, None)

    async def _deliver_result(
        self,
        job: JobRecord,
        track: Track,
        request: GenerationRequest,
        images: Sequence[OutputImage],
    ) -> Attempt:
        shown = [image for image in images if image.verdict.posted]
        locale = _locale(job)
        notes = formatting.verdict_notes(locale, images)
        files = [(file_name(job, image), image.png) for image in shown]
        limit = track.filesize_limit
        if sum(len(data) for _, data in files) <= limit:
            fitted = Fitted(files, [list(range(len(files)))] if files else [], [])
        else:
            fitted = await asyncio.to_thread(fit_images, locale, files, limit)
        # A direct message counts as not age-restricted: the last-resort DM gets only the
        # images that plain-channel rules would post (rated, under the thresholds).
        not_for_dm = frozenset(
            file_name(job, image)
            for image in shown
            if job.channel.age_restricted and (image.verdict.flagged or image.scores is None)
        )
        model = self.bot.settings.model.name
        embed = formatting.result_embed(locale, job, request, images, model)
        view = result_view(job.id, request, [image.index for image in shown], len(images), locale)
        groups = fitted.groups or [[]]
        first = _Post(
            formatting.finished_text(locale, job, images, notes + fitted.notes),
            embed,
            [fitted.files[i] for i in groups[0]],
            view,
            not_for_dm,
        )
        rest = [
            _Post(
                formatting.part_text(locale, job, shown[group[0]].index + 1, len(images)),
                files=[fitted.files[i] for i in group],
                not_for_dm=not_for_dm,
            )
            for group in groups[1:]
        ]
        return await self._send_all(job, track, [first, *rest])

    async def _send_all(self, job: JobRecord, track: Track, posts: Sequence[_Post]) -> Attempt:
        """Post ``posts`` in order, skipping the ``job.delivery_posted`` already out: each by
        the webhook (the first replaces the job's message) while it works, else in the
        channel (the first there mentions the member), else in a DM. A post that goes
        nowhere ends the attempt: later when Discord failed for now (5xx, 429, timeout,
        no connection), refused for good when every place refused it."""
        first_id: int | None = None
        in_channel = False
        dms: set[int] = set()  # messages that went to the member's DMs
        done = job.delivery_posted
        for number, post in enumerate(posts):
            if number < done:
                continue
            sent: int | None = None
            problems: list[_Problem] = []
            if not in_channel and self._webhook_usable(job, track):
                try:
                    sent = await asyncio.wait_for(
                        self._via_webhook(job, track, post, edit=number == 0), POST_TIMEOUT_S
                    )
                except discord.HTTPException as exc:
                    track.webhook_ok = exc.status not in _GONE
                    problems.append(_Problem.of(exc))
                    log.info(
                        "job %s: webhook answer failed (%s); using the channel", job.id, exc.status
                    )
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    problems.append(_Problem.of(exc))
                    log.info("job %s: webhook answer failed (%s)", job.id, _describe(exc))
            if sent is None:
                mention = not in_channel
                in_channel = True
                sent, problem = await self._via_channel(job, post, mention=mention, dms=dms)
                if problem is not None:
                    problems.append(problem)
            if sent is None:
                return _attempt_of(problems, posted=number)
            if number == 0:
                first_id = sent
        in_dm = first_id in dms
        if in_channel and track.message_id is not None and first_id not in (None, track.message_id):
            await self._retire(job, track.message_id, in_dm=in_dm)
        # A result in the member's DMs is not the job's message: links (/history, "Who
        # made this?") keep pointing at the job's message in its channel, which says where
        # the answer went.
        if first_id is not None and first_id != job.message_id and not in_dm:
            try:
                await self.bot.service.admin.set_message(job.id, first_id)
            except DatabaseError:
                log.exception("job %s: could not store its message id", job.id)
        return Attempt.done(len(posts))

    async def _via_webhook(self, job: JobRecord, track: Track, post: _Post, *, edit: bool) -> int:
        webhook = self._webhook(job)
        extra: dict[str, Any] = {}
        if post.embed is not None:
            extra["embed"] = post.embed
        if edit and track.message_id is not None:
            message = await webhook.edit_message(
                track.message_id,
                content=post.content,
                embeds=[post.embed] if post.embed is not None else [],
                attachments=post.discord_files(),
                view=post.view,
            )
            return message.id
        if post.view is not None:
            extra["view"] = post.view
        sent = await webhook.send(post.content, files=post.discord_files(), wait=True, **extra)
        return sent.id

    async def _via_channel(
        self, job: JobRecord, post: _Post, *, mention: bool, dms: set[int]
    ) -> tuple[int | None, _Problem | None]:
        """Post with the bot's token (in the channel, else in a DM, whose message id is
        added to ``dms``): the message id, or None and what went wrong (the most hopeful
        problem: one that may pass)."""
        content = post.content
        if mention:
            content = f"{formatting.late_mention(_locale(job), job.user_id, job.id)}\n{content}"
        extra: dict[str, Any] = {
            "allowed_mentions": discord.AllowedMentions(
                everyone=False, roles=False, users=[discord.Object(job.user_id)]
            )
        }
        if post.embed is not None:
            extra["embed"] = post.embed
        if post.view is not None:
            extra["view"] = post.view
        targets: list[str] = ["channel", "dm"] if job.channel_id is not None else ["dm"]
        problems: list[_Problem] = []
        for target in targets:
            try:
                if target == "channel":
                    assert job.channel_id is not None
                    channel: discord.abc.Messageable = self.bot.get_partial_messageable(
                        job.channel_id
                    )
                else:
                    channel = await asyncio.wait_for(
                        self.bot.create_dm(discord.Object(job.user_id)), POST_TIMEOUT_S
                    )
                files = post.discord_files(dm=target == "dm")
                text = content
                if len(files) < len(post.files):
                    held = len(post.files) - len(files)
                    text += "\n-# " + trn(
                        _locale(job),
                        held,
                        "1 image from an age-restricted channel is not sent in a direct message.",
                        "{count} images from an age-restricted channel are not sent in a "
                        "direct message.",
                    )
                message = await asyncio.wait_for(
                    channel.send(formatting.clip(text, 2000), files=files, **extra),
                    POST_TIMEOUT_S,
                )
            except (discord.HTTPException, TimeoutError, aiohttp.ClientError, OSError) as exc:
                problem = _Problem.of(exc)
                problems.append(problem)
                log.warning("job %s: could not post in the %s (%s)", job.id, target, problem.text)
                continue
            if target == "dm":
                dms.add(message.id)
            return message.id, None
        log.warning("job %s: its answer could not be delivered anywhere this time", job.id)
        return None, _most_hopeful(problems)

    async def _retire(self, job: JobRecord, message_id: int, *, in_dm: bool) -> None:
        """Best effort: point the old queue message at the answer (posted below it, or
        sent to the member in a DM)."""
        if job.channel_id is None:
            return
        channel = self.bot.get_partial_messageable(job.channel_id)
        try:
            await channel.get_partial_message(message_id).edit(
                content=formatting.answered_text(_locale(job), job, in_dm=in_dm), view=None
            )
        except discord.HTTPException as exc:
            log.debug("job %s: could not update its old message (%s)", job.id, exc.status)
