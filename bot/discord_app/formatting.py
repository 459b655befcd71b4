"""Every text and embed the bot shows: queue and progress lines, results, refusals, help.

Pure functions of core values (no I/O), so the wording lives in one place and tests can
compare against it. Each takes the reader's ``locale`` first (Discord's code, e.g. ``ja``:
the member's for their replies and their job's messages, the server's for its moderation
log) and writes its English templates through :func:`~bot.discord_app.i18n.tr`: the
translations live in the message catalogues. Reasons that come from the core (a request's
validation error, a moderation verdict) are quoted as the core wrote them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import discord

from bot.config import LimitsSettings
from bot.discord_app.i18n import say, tr, trn
from bot.engine import Progress
from bot.images import Infotext
from bot.limits import Allowance, BucketAllowance, LimitKind, Refusal
from bot.moderation import Decision, GuildPolicy, PromptDecision, Thresholds
from bot.prompts import QUALITY_PRESETS, RATINGS, STYLE_PRESETS, YEAR_RANGES
from bot.queue.events import OutputImage
from bot.request import ASPECTS, SAMPLERS, GenerationRequest
from bot.service import QueueStatus, Submitted, WorkerStatus
from bot.storage import ImageRecord, JobRecord, JobStatus

COLOR: Final = discord.Colour(0x8E6AD8)
ERROR_COLOR: Final = discord.Colour(0xD05050)
EMBED_DESCRIPTION_MAX: Final = 4096
EMBED_FIELD_MAX: Final = 1024
EMBED_TOTAL_MAX: Final = 6000

LIMIT_TITLES: Final[dict[LimitKind, str]] = {
    LimitKind.BANNED: "Banned",
    LimitKind.DISABLED: "Switched off in this server",
    LimitKind.DAILY: "Daily quota",
    LimitKind.CONCURRENT: "Too many jobs at once",
    LimitKind.RATE: "Rate limit",
    LimitKind.SERVER_DAILY: "Server daily quota",
    LimitKind.SERVER_CONCURRENT: "Server busy",
    LimitKind.SERVER_RATE: "Server rate limit",
}
"""The title of each limit's refusal (English templates: see :func:`refusal_text`)."""

JOB_STATUS_WORDS: Final[dict[JobStatus, str]] = {
    JobStatus.QUEUED: "queued",
    JobStatus.RUNNING: "rendering",
    JobStatus.FINISHED: "finished",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}
"""A job's status as members read it (English templates, translated by :func:`status_word`)."""


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def images_count(locale: str, n: int) -> str:
    """``1 image``, ``3 images`` (in ``locale``)."""
    return trn(locale, n, "1 image", "{count} images")


def jobs_count(locale: str, n: int) -> str:
    return trn(locale, n, "1 job", "{count} jobs")


def status_word(locale: str, status: JobStatus) -> str:
    return tr(locale, JOB_STATUS_WORDS[status])


def duration(locale: str, seconds: float) -> str:
    """A short human duration: ``4 s``, ``3 min``, ``1.5 h``."""
    if seconds < 1:
        return tr(locale, "under a second")
    if seconds < 90:
        return tr(locale, "{n} s", n=round(seconds))
    if seconds < 90 * 60:
        return tr(locale, "{n} min", n=round(seconds / 60))
    return tr(locale, "{n} h", n=f"{seconds / 3600:.1f}")


def eta(locale: str, seconds: float) -> str:
    return f"~{duration(locale, seconds)}"


def timestamp(moment: datetime, style: str = "R") -> str:
    """A Discord timestamp (rendered in each reader's time zone and language)."""
    return f"<t:{int(moment.timestamp())}:{style}>"


def prompt_line(prompt: str, limit: int = 300) -> str:
    return "> " + clip(" ".join(prompt.split()), limit)


# ---------------------------------------------------------------------------- job messages


def queued_text(locale: str, submitted: Submitted, request: GenerationRequest) -> str:
    job = submitted.job
    when = eta(locale, submitted.eta_seconds)
    if submitted.position == 0:
        head = tr(locale, "**Rendering** job #{job} · ETA {eta}", job=job.id, eta=when)
    else:
        head = tr(
            locale,
            "**Queued** job #{job} · position {position} · ETA {eta}",
            job=job.id,
            position=submitted.position,
            eta=when,
        )
    lines = [head, prompt_line(request.prompt)]
    image_words = image_prompt_words(locale, request)
    if image_words is not None:
        lines.append(f"-# {image_words}")
    cost = []
    if submitted.cost:
        cost.append(tr(locale, "cost: {images}", images=images_count(locale, submitted.cost)))
    if submitted.daily_remaining is not None:
        cost.append(
            tr(
                locale,
                "{images} left today",
                images=images_count(locale, submitted.daily_remaining),
            )
        )
    if cost:
        lines.append("-# " + " · ".join(cost))
    return "\n".join(lines)


def started_text(locale: str, job: JobRecord, request: GenerationRequest) -> str:
    head = tr(locale, "**Rendering** job #{job}…", job=job.id)
    return f"{head}\n{prompt_line(request.prompt)}"


PROGRESS_BAR_CELLS = 10


def progress_bar(fraction: float, cells: int = PROGRESS_BAR_CELLS) -> str:
    """``▰▰▰▰▰▱▱▱▱▱ 50 %``: ``fraction`` (0-1) as filled cells and a percentage."""
    fraction = min(1.0, max(0.0, fraction))
    filled = math.floor(fraction * cells + 1e-9)
    return f"{'▰' * filled}{'▱' * (cells - filled)} {math.floor(fraction * 100 + 1e-9)} %"


def progress_text(
    locale: str, job: JobRecord, request: GenerationRequest, progress: Progress
) -> str:
    values = {"job": job.id, "step": progress.step, "total": progress.total}
    if progress.phase == "hires":
        head = tr(locale, "**Rendering** job #{job} · step {step}/{total} (hires pass)", **values)
    else:
        head = tr(locale, "**Rendering** job #{job} · step {step}/{total}", **values)
    bar = progress_bar(progress.fraction)
    if progress.seconds_left is not None and progress.step < progress.total:
        bar += " · " + tr(locale, "{time} left", time=duration(locale, progress.seconds_left))
    return f"{head}\n{bar}\n{prompt_line(request.prompt)}"


def refund_note(locale: str, job: JobRecord) -> str:
    if job.cost <= 0:
        return tr(locale, "Nothing was charged for it.")
    cost = images_count(locale, job.cost)
    if job.refunded_at is not None:
        return tr(locale, "Its cost ({cost}) was refunded to your allowance.", cost=cost)
    return tr(locale, "Its cost ({cost}) stays charged, as it had already started.", cost=cost)


def failed_text(locale: str, job: JobRecord, reason: str) -> str:
    head = tr(locale, "Sorry, job #{job} failed on our side: {reason}.", job=job.id, reason=reason)
    again = tr(locale, "You can try again with the same settings.")
    return f"{head}\n{refund_note(locale, job)} {again}"


def undelivered_text(locale: str, job: JobRecord, reason: str, hours: float) -> str:
    """Said once when Discord would not take a finished result for ``hours``."""
    return tr(
        locale,
        "Job #{job} finished, but Discord would not take its images for {hours} h ({reason}). "
        "They are kept for you: fetch them with `/images job:{job}`.",
        job=job.id,
        hours=f"{hours:g}",
        reason=reason,
    )


def images_again_text(locale: str, job: JobRecord, count: int) -> str:
    prompt = clip(job.request.prompt, 200)
    return trn(
        locale,
        count,
        "Job #{job} (1 image): {prompt}",
        "Job #{job} ({count} images): {prompt}",
        job=job.id,
        prompt=prompt,
    )


def cancelled_text(locale: str, job: JobRecord) -> str:
    head = tr(locale, "Job #{job} was cancelled.", job=job.id)
    return f"{head} {refund_note(locale, job)}"


def stopping_text(locale: str, job_id: int) -> str:
    return tr(locale, "Stopping job #{job} at its next step.", job=job_id)


def finished_text(
    locale: str, job: JobRecord, images: Sequence[OutputImage], notes: Sequence[str]
) -> str:
    head = tr(
        locale,
        "**Done** · job #{job} · {images}",
        job=job.id,
        images=images_count(locale, len(images)),
    )
    return "\n".join([head, *(f"-# {note}" for note in notes)])


def late_mention(locale: str, user_id: int, job_id: int) -> str:
    return tr(locale, "{member} your job #{job} is ready.", member=f"<@{user_id}>", job=job_id)


def part_text(locale: str, job: JobRecord, number: int, count: int) -> str:
    """The caption of one image posted on its own (a result too large for one message)."""
    return tr(
        locale, "Job #{job}: image {number} of {count}", job=job.id, number=number, count=count
    )


def answered_text(locale: str, job: JobRecord, *, in_dm: bool) -> str:
    """What the job's first message says once the answer went elsewhere."""
    if in_dm:
        return tr(locale, "Job #{job}: the answer was sent to you in a direct message.", job=job.id)
    return tr(locale, "Job #{job}: the answer was posted below.", job=job.id)


def _hires_words(locale: str, request: GenerationRequest) -> str:
    if request.hires is None:
        return tr(locale, "off")
    return tr(
        locale,
        "×{scale}, denoise {strength}",
        scale=f"{request.hires.scale:g}",
        strength=f"{request.hires.strength:g}",
    )


def image_prompt_words(locale: str, request: GenerationRequest) -> str | None:
    """What an img2img job starts from, and how strongly it departs from it (None: a job
    drawn from noise)."""
    image = request.image
    if image is None:
        return None
    strength = f"{image.strength:g}"
    if image.origin == "vary" and image.from_job is not None:
        if image.from_index is None:
            return tr(
                locale,
                "img2img · a variation of job #{job} · strength {strength}",
                job=image.from_job,
                strength=strength,
            )
        return tr(
            locale,
            "img2img · a variation of job #{job} image {number} · strength {strength}",
            job=image.from_job,
            number=image.from_index + 1,
            strength=strength,
        )
    return tr(locale, "img2img · from the attached image · strength {strength}", strength=strength)


def result_embed(
    locale: str,
    job: JobRecord,
    request: GenerationRequest,
    images: Sequence[OutputImage],
    model: str,
) -> discord.Embed:
    """Prompt, seeds and settings of a finished job."""
    embed = discord.Embed(
        colour=COLOR, description=clip(request.prompt, EMBED_DESCRIPTION_MAX - 100)
    )
    seeds = ", ".join(str(i.seed) for i in images) or str(request.seed)
    size = (
        f"{images[0].width}x{images[0].height}" if images else f"{request.width}x{request.height}"
    )
    embed.add_field(name=tr(locale, "Seed" if len(images) == 1 else "Seeds"), value=seeds)
    embed.add_field(name=tr(locale, "Size"), value=size)
    embed.add_field(name=tr(locale, "Steps"), value=str(request.steps))
    embed.add_field(name=tr(locale, "CFG"), value=f"{request.cfg:g}")
    embed.add_field(name=tr(locale, "Sampler"), value=request.sampler)
    embed.add_field(name=tr(locale, "Hires"), value=_hires_words(locale, request))
    embed.add_field(name=tr(locale, "Quality"), value=request.quality)
    embed.add_field(name=tr(locale, "Style"), value=request.style)
    if request.rating or request.year:
        tags = " · ".join(t for t in (request.rating, request.year) if t)
        embed.add_field(name=tr(locale, "Rating · year"), value=tags)
    image_words = image_prompt_words(locale, request)
    if image_words is not None:
        embed.add_field(name=tr(locale, "Image prompt"), value=image_words, inline=False)
    if request.negative_prompt.strip():
        embed.add_field(
            name=tr(locale, "Negative"),
            value=clip(request.negative_prompt, EMBED_FIELD_MAX),
            inline=False,
        )
    embed.set_footer(text=tr(locale, "Job #{job} · {model}", job=job.id, model=model))
    return embed


def verdict_notes(locale: str, images: Sequence[OutputImage]) -> list[str]:
    """What the member is told about images the moderation policy held back or hid."""
    notes = []
    for image in images:
        number = image.index + 1
        reason = say(locale, image.verdict.reason)
        if not image.verdict.posted:
            notes.append(
                tr(
                    locale,
                    "Image {number} (seed {seed}) was not posted: {reason}.",
                    number=number,
                    seed=image.seed,
                    reason=reason,
                )
            )
        elif image.verdict.spoiler:
            notes.append(
                tr(
                    locale,
                    "Image {number} is behind a spoiler: {reason}.",
                    number=number,
                    reason=reason,
                )
            )
    return notes


# ---------------------------------------------------------------------------- refusals


def refusal_text(locale: str, refusal: Refusal) -> str:
    """Which limit, why, when to retry (``<t:UNIX:R>``) and the daily quota left."""
    title = tr(locale, LIMIT_TITLES.get(refusal.limit, "Limit reached"))
    lines = [f"**{title}**: {say(locale, refusal.message)}"]
    when = refusal.retry_at_unix
    if when is not None:
        moment = f"<t:{when}:R>"
        if refusal.limit is LimitKind.BANNED:
            lines.append(tr(locale, "The ban ends {when}.", when=moment))
        else:
            lines.append(tr(locale, "You can try again {when}.", when=moment))
    if refusal.daily_remaining is not None:
        left = images_count(locale, refusal.daily_remaining)
        lines.append(tr(locale, "Daily quota left: {images}.", images=left))
    return "\n".join(lines)


def bad_request_text(locale: str, reason: object) -> str:
    """``reason``: an error of the core (written in ``locale``) or a text."""
    return tr(locale, "That request cannot be rendered: {reason}", reason=say(locale, reason))


def apology_text(locale: str, reason: str) -> str:
    return tr(
        locale,
        "Sorry, something went wrong on our side: {reason}. Nothing was charged.",
        reason=reason,
    )


def database_down_text(locale: str) -> str:
    return apology_text(locale, tr(locale, "the database is not available"))


def internal_error_text(locale: str, exc: BaseException) -> str:
    reason = tr(locale, "an internal error ({error})", error=type(exc).__name__)
    return apology_text(locale, reason)


def not_allowed_text(locale: str, reason: object) -> str:
    return tr(locale, "You cannot do that: {reason}.", reason=say(locale, reason))


# ---------------------------------------------------------------------------- /queue, /limits


def queue_text(locale: str, status: QueueStatus) -> str:
    lines: list[str] = []
    if not status.mine:
        lines.append(tr(locale, "You have no jobs waiting or running."))
    for item in status.mine:
        prompt = clip(" ".join(item.job.request.prompt.split()), 80)
        when = eta(locale, item.eta_seconds)
        if item.job.status is JobStatus.RUNNING or item.position == 0:
            line = tr(
                locale,
                "• Job #{job}: rendering now, done in {eta}: `{prompt}`",
                job=item.job.id,
                eta=when,
                prompt=prompt,
            )
        else:
            line = tr(
                locale,
                "• Job #{job}: position {position}, ETA {eta}: `{prompt}`",
                job=item.job.id,
                position=item.position,
                eta=when,
                prompt=prompt,
            )
        lines.append(line)
    empty = eta(locale, status.eta_empty_seconds)
    if status.running:
        summary = trn(
            locale,
            status.length,
            "Queue: one rendering, 1 job waiting; empty in {eta} (estimated from recent "
            "render times).",
            "Queue: one rendering, {count} jobs waiting; empty in {eta} (estimated from "
            "recent render times).",
            eta=empty,
        )
    else:
        summary = trn(
            locale,
            status.length,
            "Queue: 1 job waiting; empty in {eta} (estimated from recent render times).",
            "Queue: {count} jobs waiting; empty in {eta} (estimated from recent render times).",
            eta=empty,
        )
    lines.append("\n" + summary)
    if status.warming_up:
        lines.append(
            tr(locale, "The engine is warming up (compiling for this GPU); jobs start soon.")
        )
    return "\n".join(lines)


def _bucket_lines(locale: str, bucket: BucketAllowance, *, server: bool) -> list[str]:
    values = {
        "available": bucket.available_now,
        "burst": bucket.burst,
        "every": duration(locale, bucket.refill_seconds),
    }
    if server:
        head = tr(
            locale,
            "This server: {available}/{burst} images available now, one more every {every}",
            **values,
        )
    else:
        head = tr(
            locale,
            "You: {available}/{burst} images available now, one more every {every}",
            **values,
        )
    lines = [head]
    if bucket.next_image_at is not None:
        lines.append("  " + tr(locale, "next image {when}", when=timestamp(bucket.next_image_at)))
    if bucket.daily_quota is not None:
        lines.append(
            "  "
            + tr(
                locale,
                "today: {used}/{quota} used, {left} left",
                used=bucket.daily_used,
                quota=bucket.daily_quota,
                left=bucket.daily_remaining,
            )
        )
    lines.append(
        "  "
        + tr(
            locale,
            "jobs waiting or running: {active}/{most}",
            active=bucket.active_jobs,
            most=bucket.max_concurrent_jobs,
        )
    )
    return lines


def allowance_text(locale: str, allowance: Allowance) -> str:
    if allowance.banned:
        until = allowance.banned_until
        reason = allowance.ban_reason
        if until is not None and reason:
            return tr(
                locale,
                "You are banned from generating images until {when}: {reason}.",
                when=timestamp(until),
                reason=reason,
            )
        if until is not None:
            return tr(
                locale, "You are banned from generating images until {when}.", when=timestamp(until)
            )
        if reason:
            return tr(locale, "You are banned from generating images: {reason}.", reason=reason)
        return tr(locale, "You are banned from generating images.")
    if allowance.exempt:
        return tr(locale, "Tier **{tier}**: you are exempt from every limit.", tier=allowance.tier)
    lines = [
        tr(
            locale,
            "Tier **{tier}**: you can ask for {count} image(s) now.",
            tier=allowance.tier,
            count=allowance.images_now,
        )
    ]
    lines += _bucket_lines(locale, allowance.member, server=False)
    if allowance.server is not None:
        lines += _bucket_lines(locale, allowance.server, server=True)
    lines.append(
        tr(locale, "Daily quotas reset {when}.", when=timestamp(allowance.daily_resets_at))
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- info, help


def infotext_embed(filename: str, infotext: Infotext, budget: int) -> discord.Embed:
    """One image's full settings (its A1111 infotext) in an embed of at most ``budget``."""
    text = infotext.to_text()
    body = clip(text, max(200, min(budget, EMBED_DESCRIPTION_MAX) - 20))
    return discord.Embed(title=clip(filename, 200), colour=COLOR, description=f"```\n{body}\n```")


def job_fields(
    locale: str, embed: discord.Embed, job: JobRecord, request: GenerationRequest
) -> None:
    embed.add_field(name=tr(locale, "Job"), value=f"#{job.id} · {status_word(locale, job.status)}")
    embed.add_field(name=tr(locale, "Requested by"), value=f"<@{job.user_id}>")
    embed.add_field(name=tr(locale, "Queued"), value=timestamp(job.queued_at, "f"))
    embed.add_field(
        name=tr(locale, "Quality · style"), value=f"{request.quality} · {request.style}"
    )
    embed.add_field(name=tr(locale, "Images"), value=str(request.count))
    embed.add_field(name=tr(locale, "Hires"), value=_hires_words(locale, request))


def help_embed(locale: str, max_steps: int, max_count: int) -> discord.Embed:
    example = (
        "`1girl, souryuu asuka langley, neon genesis evangelion, solo, upper body, "
        "looking at viewer`"
    )
    embed = discord.Embed(
        title=tr(locale, "How to prompt Animagine XL 3.1"),
        colour=COLOR,
        description="\n".join(
            (
                tr(locale, "Write **Danbooru tags**, separated by commas, in this order:"),
                tr(locale, "`1girl/1boy, character name, from what series, everything else`"),
                tr(locale, "e.g. {example}", example=example),
            )
        ),
    )
    embed.add_field(
        name=tr(locale, "Quality tags"),
        value="masterpiece > best quality > great quality > good quality > normal quality "
        "> low quality > worst quality",
        inline=False,
    )
    ratings = ", ".join(f"`{', '.join(tags)}`" for tags in RATINGS.values())
    embed.add_field(
        name=tr(locale, "Rating tags"),
        value=tr(
            locale,
            "{ratings} (`nsfw` and `explicit` only in age-restricted channels)",
            ratings=ratings,
        ),
        inline=False,
    )
    years = ", ".join(f"`{name}` {span}" for name, span in YEAR_RANGES.items())
    embed.add_field(name=tr(locale, "Year tags"), value=years, inline=False)
    embed.add_field(
        name=tr(locale, "Aesthetic tags"),
        value="`very aesthetic`, `aesthetic`, `displeasing`, `very displeasing`",
        inline=False,
    )
    embed.add_field(
        name=tr(locale, "Emphasis"),
        value=tr(
            locale,
            "`(tag)` weighs 1.1, `[tag]` 1/1.1, `(a, b:1.2)` both 1.2; write `\\(` for a "
            "literal parenthesis, e.g. `ganyu \\(genshin impact\\)`",
        ),
        inline=False,
    )
    embed.add_field(
        name=tr(locale, "Settings"),
        value=tr(
            locale,
            "Recommended: CFG 5-7, under 30 steps (at most {max_steps} here), sampler Euler a; "
            "up to {max_count} images per request. Samplers: {samplers}.",
            max_steps=max_steps,
            max_count=max_count,
            samplers=", ".join(SAMPLERS),
        ),
        inline=False,
    )
    embed.add_field(
        name=tr(locale, "Presets"),
        value="\n".join(
            (
                tr(locale, "Quality: {presets}", presets=", ".join(QUALITY_PRESETS)),
                tr(locale, "Style: {presets}", presets=", ".join(STYLE_PRESETS)),
            )
        ),
        inline=False,
    )
    embed.add_field(
        name=tr(locale, "Sizes"),
        value=", ".join(f"{a.label} {a.size}" for a in ASPECTS),
        inline=False,
    )
    embed.add_field(
        name=tr(locale, "Buttons"),
        value=tr(
            locale,
            "🎲 Re-roll (new seed) · 🔍 Upscale (hires pass on that seed) · 🪄 Vary (subtle) "
            "and 🌀 Vary (strong): new takes on that image · ✏️ Edit (prompt, negative, seed) "
            "· 🗑️ Delete · ✖️ Cancel while queued or running. Right-click a bot image → Apps "
            "→ **Generation info** for its full settings.",
        ),
        inline=False,
    )
    return embed


# ---------------------------------------------------------------------------- /settings


def tier_text(locale: str, tier: LimitsSettings.Tier) -> str:
    values = {
        "images": images_count(locale, tier.burst),
        "every": duration(locale, tier.refill_seconds),
        "jobs": jobs_count(locale, tier.max_concurrent_jobs),
    }
    if tier.daily_quota == 0:
        return tr(
            locale,
            "{images} at once, then one every {every}; no daily quota; {jobs} at a time",
            **values,
        )
    return tr(
        locale,
        "{images} at once, then one every {every}; {quota} a day; {jobs} at a time",
        quota=tier.daily_quota,
        **values,
    )


def server_settings_embed(
    locale: str,
    request: GenerationRequest,
    step_limit: int,
    *,
    enabled: bool,
    tier_name: str,
    member: LimitsSettings.Tier,
    server: LimitsSettings.Tier,
) -> discord.Embed:
    """What ``/imagine`` uses in this server when a member leaves an option out."""
    embed = discord.Embed(title=tr(locale, "Server settings"), colour=COLOR)
    embed.add_field(name=tr(locale, "Generation"), value=tr(locale, "on" if enabled else "**off**"))
    embed.add_field(name=tr(locale, "Size"), value=f"{request.width}x{request.height}")
    embed.add_field(
        name=tr(locale, "Steps"),
        value=tr(locale, "{steps} (at most {most})", steps=request.steps, most=step_limit),
    )
    embed.add_field(name=tr(locale, "CFG"), value=f"{request.cfg:g}")
    embed.add_field(name=tr(locale, "Sampler"), value=request.sampler)
    embed.add_field(name=tr(locale, "Hires"), value=_hires_words(locale, request))
    embed.add_field(name=tr(locale, "Quality"), value=request.quality)
    embed.add_field(name=tr(locale, "Style"), value=request.style)
    embed.add_field(
        name=tr(locale, "Members (tier {tier})", tier=tier_name),
        value=tier_text(locale, member),
        inline=False,
    )
    embed.add_field(name=tr(locale, "Whole server"), value=tier_text(locale, server), inline=False)
    return embed


def workers_embed(locale: str, workers: Sequence[WorkerStatus]) -> discord.Embed:
    """The GPU workers reached through Redis, one field each (``/settings show``)."""
    counted = sum(w.counted for w in workers)
    embed = discord.Embed(title=tr(locale, "Workers"), colour=COLOR)
    if not workers:
        embed.description = tr(
            locale,
            "No worker has reported in the last few seconds: jobs wait until one is up "
            "(`python -m bot worker`).",
        )
        return embed
    embed.description = trn(
        locale,
        len(workers),
        "{taking} of 1 worker taking jobs",
        "{taking} of {count} workers taking jobs",
        taking=counted,
    )
    shown = workers if len(workers) <= 24 else workers[:23]
    for w in shown:
        embed.add_field(
            name=clip(w.name, 256),
            value=clip(
                tr(
                    locale,
                    "host {host} · GPU {gpu}\nmodel {model}\n{state} · {jobs} done · "
                    "last heartbeat {seconds} s ago",
                    host=w.host,
                    gpu=w.gpu,
                    model=w.model,
                    state=w.state,
                    jobs=jobs_count(locale, w.jobs_done),
                    seconds=f"{w.seconds_since_heartbeat:.1f}",
                ),
                1024,
            ),
            inline=False,
        )
    if len(shown) < len(workers):
        embed.add_field(
            name="…",
            value=tr(
                locale,
                "and {count} more (`python -m bot workers`)",
                count=len(workers) - len(shown),
            ),
        )
    return embed


# ---------------------------------------------------------------------------- moderation

SCORE_ORDER: Final = ("explicit", "questionable", "sensitive", "general")
LOG_PROMPT_MAX: Final = 600


def policy_refusal_text(locale: str, decision: PromptDecision) -> str:
    """Why the channel's policy refused a prompt (shown only to the member)."""
    if decision.decision is Decision.HARD_BLOCK:
        return tr(locale, "**Refused**: {reason}.", reason=say(locale, decision.reason))
    return tr(locale, "**Not allowed here**: {reason}.", reason=say(locale, decision.reason))


def message_url(guild_id: int | None, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def channel_kind(locale: str, job: JobRecord) -> str:
    """How the policy saw the channel of a job (as stored with it)."""
    channel = job.channel
    if channel.is_dm:
        return tr(locale, "direct message")
    if channel.is_thread:
        if channel.age_restricted:
            return tr(locale, "thread, age-restricted")
        return tr(locale, "thread, not age-restricted")
    return tr(locale, "age-restricted" if channel.age_restricted else "not age-restricted")


def scores_text(
    locale: str, scores: Mapping[str, float] | None, thresholds: Thresholds | None = None
) -> str:
    """``explicit 0.90 ⚠ · questionable 0.01 · ...`` (⚠: above the server's threshold)."""
    if not scores:
        return tr(locale, "not rated")
    parts = []
    for name in SCORE_ORDER:
        if name not in scores:
            continue
        limit = None if thresholds is None else getattr(thresholds, name, None)
        flag = " ⚠" if limit is not None and scores[name] > limit else ""
        parts.append(f"{name} {scores[name]:.2f}{flag}")
    return " · ".join(parts)


def who_made_embed(
    locale: str,
    job: JobRecord,
    request: GenerationRequest,
    images: Sequence[ImageRecord],
    *,
    guild_name: str | None,
    target_url: str,
    thresholds: Thresholds | None,
) -> discord.Embed:
    """For moderators: who asked for a bot image, where, with what prompt, seeds and scores."""
    embed = discord.Embed(
        title=tr(locale, "Job #{job}", job=job.id),
        colour=COLOR,
        description=f"```\n{clip(request.prompt, EMBED_DESCRIPTION_MAX - 200)}\n```",
    )
    embed.add_field(name=tr(locale, "Requested by"), value=f"<@{job.user_id}> (`{job.user_id}`)")
    if job.guild_id is None:
        server = tr(locale, "direct message")
    else:
        server = f"{guild_name or '?'} (`{job.guild_id}`)"
    embed.add_field(name=tr(locale, "Server"), value=server)
    if job.channel_id is not None:
        embed.add_field(
            name=tr(locale, "Channel"), value=f"<#{job.channel_id}> ({channel_kind(locale, job)})"
        )
    messages = [tr(locale, "[this message]({url})", url=target_url)]
    if job.message_id is not None and job.channel_id is not None:
        url = message_url(job.guild_id, job.channel_id, job.message_id)
        if url != target_url:
            messages.append(tr(locale, "[job message]({url})", url=url))
    embed.add_field(name=tr(locale, "Message"), value=" · ".join(messages))
    embed.add_field(name=tr(locale, "Asked"), value=timestamp(job.queued_at, "f"))
    embed.add_field(name=tr(locale, "Status"), value=status_word(locale, job.status))
    if request.negative_prompt.strip():
        embed.add_field(
            name=tr(locale, "Negative"),
            value=clip(request.negative_prompt, EMBED_FIELD_MAX),
            inline=False,
        )
    if request.rating:
        embed.add_field(name=tr(locale, "Rating"), value=request.rating)
    for image in images[:10]:
        embed.add_field(
            name=tr(
                locale, "Image {number} · seed {seed}", number=image.index + 1, seed=image.seed
            ),
            value=scores_text(locale, image.moderation_scores, thresholds),
            inline=False,
        )
    if not images:
        embed.add_field(name=tr(locale, "Seed"), value=str(request.seed), inline=False)
    embed.set_footer(
        text=tr(locale, "Scores: the image classifier's ratings (⚠: above this server's limit)")
    )
    return embed


def _log_prompt(prompt: str, *, hide: bool) -> str:
    text = clip(" ".join(prompt.split()), LOG_PROMPT_MAX).replace("`", "ˋ")
    return f"||`{text}`||" if hide else f"`{text}`"


def _who_where(locale: str, user_id: int, channel_id: int | None) -> str:
    """``<@member> in <#channel>`` (the member alone when there is no channel)."""
    if channel_id is None:
        return f"<@{user_id}>"
    return tr(locale, "{member} in {channel}", member=f"<@{user_id}>", channel=f"<#{channel_id}>")


def log_refusal_text(
    locale: str,
    decision: PromptDecision,
    *,
    user_id: int,
    channel_id: int | None,
    prompt: str | None,
) -> str:
    """A refused prompt, for the moderation log (hard-blocked prompts behind a spoiler)."""
    hard = decision.decision is Decision.HARD_BLOCK
    title = tr(locale, "🛑 **Hard block**" if hard else "⛔ **Prompt refused**")
    lines = [f"{title} · {_who_where(locale, user_id, channel_id)}"]
    lines.append(tr(locale, "Reason: {reason}", reason=say(locale, decision.reason)))
    if prompt is not None:
        lines.append(tr(locale, "Prompt: {prompt}", prompt=_log_prompt(prompt, hide=hard)))
    return "\n".join(lines)


def log_withheld_text(
    locale: str,
    job: JobRecord,
    request: GenerationRequest,
    withheld: Sequence[OutputImage],
    *,
    forwarded: bool,
) -> str:
    """Images that were not posted, for the moderation log (hard blocks: the prompt behind
    a spoiler, and a note that the image is forwarded to nobody)."""
    hard = any(i.verdict.hard_block for i in withheld)
    title = tr(locale, "🛑 **Hard block (image)**" if hard else "🙈 **Image withheld**")
    job_words = tr(locale, "job #{job}", job=job.id)
    lines = [f"{title} · {job_words} · {_who_where(locale, job.user_id, job.channel_id)}"]
    lines += [
        tr(
            locale,
            "Image {number} (seed {seed}): {reason}",
            number=i.index + 1,
            seed=i.seed,
            reason=say(locale, i.verdict.reason),
        )
        for i in withheld
    ]
    lines.append(tr(locale, "Prompt: {prompt}", prompt=_log_prompt(request.prompt, hide=hard)))
    if any(i.verdict.quarantined for i in withheld):
        lines.append(
            tr(locale, "Hard-blocked or unchecked sexual images are not attached: never forwarded.")
        )
    if forwarded:
        lines.append(
            tr(locale, "The other images are attached behind spoilers.")
            if hard
            else tr(locale, "The images are attached behind spoilers.")
        )
    return "\n".join(lines)


def ban_line(locale: str, until: datetime | None) -> str:
    if until is None:
        return tr(locale, "until unbanned")
    return tr(
        locale, "until {when} ({relative})", when=timestamp(until, "f"), relative=timestamp(until)
    )


def log_ban_text(
    locale: str,
    user_id: int,
    actor_id: int,
    reason: str,
    *,
    until: datetime | None,
    cancelled: int,
) -> str:
    lines = [
        tr(
            locale,
            "🔨 **Ban** · {member} by {moderator} · {until}",
            member=f"<@{user_id}>",
            moderator=f"<@{actor_id}>",
            until=ban_line(locale, until),
        ),
        tr(locale, "Reason: {reason}", reason=reason),
    ]
    if cancelled:
        lines.append(
            trn(locale, cancelled, "1 waiting job cancelled.", "{count} waiting jobs cancelled.")
        )
    return "\n".join(lines)


def log_unban_text(locale: str, user_id: int, actor_id: int, reason: str | None) -> str:
    line = tr(
        locale,
        "✅ **Unban** · {member} by {moderator}",
        member=f"<@{user_id}>",
        moderator=f"<@{actor_id}>",
    )
    if not reason:
        return line
    because = tr(locale, "Reason: {reason}", reason=reason)
    return f"{line}\n{because}"


def messages_count(locale: str, n: int, *, bot: bool = False) -> str:
    if bot:
        return trn(locale, n, "1 bot message", "{count} bot messages")
    return trn(locale, n, "1 message", "{count} messages")


def log_purge_text(locale: str, user_id: int, actor_id: int, channel_id: int, deleted: int) -> str:
    return tr(
        locale,
        "🧹 **Purge** · {deleted} of {member} deleted in {channel} by {moderator}",
        deleted=messages_count(locale, deleted, bot=True),
        member=f"<@{user_id}>",
        channel=f"<#{channel_id}>",
        moderator=f"<@{actor_id}>",
    )


def moderation_embed(
    locale: str,
    policy: GuildPolicy,
    overrides: Mapping[str, Any],
    *,
    default_blocked: int,
    classifier: str,
) -> discord.Embed:
    """The moderation policy in force in a server (``/settings show``)."""
    embed = discord.Embed(title=tr(locale, "Moderation"), colour=COLOR)
    blocked = [
        tr(
            locale,
            "{count} tags (the bot's list has {default})",
            count=len(policy.blocked_tags),
            default=default_blocked,
        )
    ]
    if added := overrides.get("blocked_tags_add"):
        blocked.append(tr(locale, "added here: {tags}", tags=clip(", ".join(added), 300)))
    if removed := overrides.get("blocked_tags_remove"):
        blocked.append(tr(locale, "allowed here: {tags}", tags=clip(", ".join(removed), 300)))
    blocked.append(tr(locale, "the nsfw and explicit ratings and the hard block always apply"))
    embed.add_field(name=tr(locale, "Blocked tags"), value="\n".join(blocked), inline=False)
    negatives = ", ".join(("nsfw", *(t for t in policy.extra_negatives if t != "nsfw")))
    embed.add_field(
        name=tr(locale, "Extra negatives"), value=clip(negatives, EMBED_FIELD_MAX), inline=False
    )
    thresholds = policy.thresholds
    embed.add_field(
        name=tr(locale, "Withhold above"),
        value=tr(
            locale,
            "questionable {questionable} · explicit {explicit}",
            questionable=f"{thresholds.questionable:.2f}",
            explicit=f"{thresholds.explicit:.2f}",
        ),
    )
    embed.add_field(name=tr(locale, "Spoilers (age-restricted)"), value=policy.spoiler)
    embed.add_field(
        name=tr(locale, "Classifier down"),
        value=tr(locale, "withhold (fail_closed)" if policy.fail_closed else "post unchecked"),
    )
    if policy.log_channel_id is None:
        log_channel = tr(locale, "none")
    else:
        log_channel = f"<#{policy.log_channel_id}>"
    embed.add_field(name=tr(locale, "Log channel"), value=log_channel)
    embed.add_field(
        name=tr(locale, "Forward withheld images"),
        value=tr(locale, "yes, as spoilers" if policy.forward_withheld else "no"),
    )
    embed.add_field(name=tr(locale, "Image classifier"), value=clip(classifier, EMBED_FIELD_MAX))
    if policy.dm_allowed:
        dms = tr(
            locale,
            "served (as not age-restricted): bot-wide config `moderation.dm_allowed`, "
            "not a server setting",
        )
    else:
        dms = tr(locale, "refused: bot-wide config `moderation.dm_allowed`, not a server setting")
    embed.add_field(name=tr(locale, "Direct messages"), value=dms, inline=False)
    return embed
