"""Every text and embed the bot shows: queue and progress lines, results, refusals, help.

Pure functions of core values (no I/O), so the wording lives in one place and tests can
compare against it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import discord

from bot.config import LimitsSettings
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


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def duration(seconds: float) -> str:
    """A short human duration: ``4 s``, ``3 min``, ``1.5 h``."""
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"{round(seconds)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def eta(seconds: float) -> str:
    return f"~{duration(seconds)}"


def timestamp(moment: datetime, style: str = "R") -> str:
    """A Discord timestamp (rendered in each reader's time zone)."""
    return f"<t:{int(moment.timestamp())}:{style}>"


def prompt_line(prompt: str, limit: int = 300) -> str:
    return "> " + clip(" ".join(prompt.split()), limit)


# ---------------------------------------------------------------------------- job messages


def queued_text(submitted: Submitted, request: GenerationRequest) -> str:
    job = submitted.job
    if submitted.position == 0:
        head = f"**Rendering** job #{job.id} · ETA {eta(submitted.eta_seconds)}"
    else:
        head = (
            f"**Queued** job #{job.id} · position {submitted.position} · "
            f"ETA {eta(submitted.eta_seconds)}"
        )
    lines = [head, prompt_line(request.prompt)]
    image_words = image_prompt_words(request)
    if image_words is not None:
        lines.append(f"-# {image_words}")
    cost = []
    if submitted.cost:
        cost.append(f"cost: {plural(submitted.cost, 'image')}")
    if submitted.daily_remaining is not None:
        cost.append(f"{plural(submitted.daily_remaining, 'image')} left today")
    if cost:
        lines.append("-# " + " · ".join(cost))
    return "\n".join(lines)


def started_text(job: JobRecord, request: GenerationRequest) -> str:
    return f"**Rendering** job #{job.id}…\n{prompt_line(request.prompt)}"


PROGRESS_BAR_CELLS = 10


def progress_bar(fraction: float, cells: int = PROGRESS_BAR_CELLS) -> str:
    """``▰▰▰▰▰▱▱▱▱▱ 50 %``: ``fraction`` (0-1) as filled cells and a percentage."""
    fraction = min(1.0, max(0.0, fraction))
    filled = math.floor(fraction * cells + 1e-9)
    return f"{'▰' * filled}{'▱' * (cells - filled)} {math.floor(fraction * 100 + 1e-9)} %"


def progress_text(job: JobRecord, request: GenerationRequest, progress: Progress) -> str:
    phase = " (hires pass)" if progress.phase == "hires" else ""
    bar = progress_bar(progress.fraction)
    if progress.seconds_left is not None and progress.step < progress.total:
        bar += f" · {duration(progress.seconds_left)} left"
    return (
        f"**Rendering** job #{job.id} · step {progress.step}/{progress.total}{phase}\n"
        f"{bar}\n"
        f"{prompt_line(request.prompt)}"
    )


def refund_note(job: JobRecord) -> str:
    if job.cost <= 0:
        return "Nothing was charged for it."
    if job.refunded_at is not None:
        return f"Its cost ({plural(job.cost, 'image')}) was refunded to your allowance."
    return f"Its cost ({plural(job.cost, 'image')}) stays charged, as it had already started."


def failed_text(job: JobRecord, reason: str) -> str:
    return (
        f"Sorry, job #{job.id} failed on our side: {reason}.\n"
        f"{refund_note(job)} You can try again with the same settings."
    )


def undelivered_text(job: JobRecord, reason: str, hours: float) -> str:
    """Said once when Discord would not take a finished result for ``hours``."""
    return (
        f"Job #{job.id} finished, but Discord would not take its images for {hours:g} h "
        f"({reason}). They are kept for you: fetch them with `/images job:{job.id}`."
    )


def images_again_text(job: JobRecord, count: int) -> str:
    prompt = clip(job.request.prompt, 200)
    return f"Job #{job.id} ({count} image{'s' if count != 1 else ''}): {prompt}"


def cancelled_text(job: JobRecord) -> str:
    return f"Job #{job.id} was cancelled. {refund_note(job)}"


def finished_text(job: JobRecord, images: Sequence[OutputImage], notes: Sequence[str]) -> str:
    lines = [f"**Done** · job #{job.id} · {plural(len(images), 'image')}"]
    lines += [f"-# {note}" for note in notes]
    return "\n".join(lines)


def late_mention(user_id: int, job_id: int) -> str:
    return f"<@{user_id}> your job #{job_id} is ready."


def _hires_words(request: GenerationRequest) -> str:
    if request.hires is None:
        return "off"
    return f"×{request.hires.scale:g}, denoise {request.hires.strength:g}"


def image_prompt_words(request: GenerationRequest) -> str | None:
    """What an img2img job starts from, and how strongly it departs from it (None: a job
    drawn from noise)."""
    image = request.image
    if image is None:
        return None
    if image.origin == "vary" and image.from_job is not None:
        which = "" if image.from_index is None else f" image {image.from_index + 1}"
        source = f"a variation of job #{image.from_job}{which}"
    else:
        source = "from the attached image"
    return f"img2img · {source} · strength {image.strength:g}"


def result_embed(
    job: JobRecord, request: GenerationRequest, images: Sequence[OutputImage], model: str
) -> discord.Embed:
    """Prompt, seeds and settings of a finished job."""
    embed = discord.Embed(
        colour=COLOR, description=clip(request.prompt, EMBED_DESCRIPTION_MAX - 100)
    )
    seeds = ", ".join(str(i.seed) for i in images) or str(request.seed)
    size = (
        f"{images[0].width}x{images[0].height}" if images else f"{request.width}x{request.height}"
    )
    embed.add_field(name="Seed" if len(images) == 1 else "Seeds", value=seeds)
    embed.add_field(name="Size", value=size)
    embed.add_field(name="Steps", value=str(request.steps))
    embed.add_field(name="CFG", value=f"{request.cfg:g}")
    embed.add_field(name="Sampler", value=request.sampler)
    embed.add_field(name="Hires", value=_hires_words(request))
    embed.add_field(name="Quality", value=request.quality)
    embed.add_field(name="Style", value=request.style)
    if request.rating or request.year:
        tags = " · ".join(t for t in (request.rating, request.year) if t)
        embed.add_field(name="Rating · year", value=tags)
    image_words = image_prompt_words(request)
    if image_words is not None:
        embed.add_field(name="Image prompt", value=image_words, inline=False)
    if request.negative_prompt.strip():
        embed.add_field(
            name="Negative", value=clip(request.negative_prompt, EMBED_FIELD_MAX), inline=False
        )
    embed.set_footer(text=f"Job #{job.id} · {model}")
    return embed


# ---------------------------------------------------------------------------- refusals


def refusal_text(refusal: Refusal) -> str:
    """Which limit, why, when to retry (``<t:UNIX:R>``) and the daily quota left."""
    title = LIMIT_TITLES.get(refusal.limit, "Limit reached")
    lines = [f"**{title}**: {refusal.message}"]
    when = refusal.retry_at_unix
    if when is not None:
        if refusal.limit is LimitKind.BANNED:
            lines.append(f"The ban ends <t:{when}:R>.")
        else:
            lines.append(f"You can try again <t:{when}:R>.")
    if refusal.daily_remaining is not None:
        lines.append(f"Daily quota left: {plural(refusal.daily_remaining, 'image')}.")
    return "\n".join(lines)


def bad_request_text(reason: str) -> str:
    return f"That request cannot be rendered: {reason}"


def apology_text(reason: str) -> str:
    return f"Sorry, something went wrong on our side: {reason}. Nothing was charged."


# ---------------------------------------------------------------------------- /queue, /limits


def queue_text(status: QueueStatus) -> str:
    lines: list[str] = []
    if not status.mine:
        lines.append("You have no jobs waiting or running.")
    for item in status.mine:
        prompt = clip(" ".join(item.job.request.prompt.split()), 80)
        if item.job.status is JobStatus.RUNNING or item.position == 0:
            where = f"rendering now, done in {eta(item.eta_seconds)}"
        else:
            where = f"position {item.position}, ETA {eta(item.eta_seconds)}"
        lines.append(f"• Job #{item.job.id}: {where}: `{prompt}`")
    waiting = plural(status.length, "job")
    busy = "one rendering, " if status.running else ""
    lines.append(
        f"\nQueue: {busy}{waiting} waiting; empty in {eta(status.eta_empty_seconds)} "
        "(estimated from recent render times)."
    )
    if status.warming_up:
        lines.append("The engine is warming up (compiling for this GPU); jobs start soon.")
    return "\n".join(lines)


def _bucket_lines(bucket: BucketAllowance, who: str) -> list[str]:
    lines = [
        f"{who}: {bucket.available_now}/{bucket.burst} images available now, "
        f"one more every {duration(bucket.refill_seconds)}"
    ]
    if bucket.next_image_at is not None:
        lines.append(f"  next image {timestamp(bucket.next_image_at)}")
    if bucket.daily_quota is not None:
        lines.append(
            f"  today: {bucket.daily_used}/{bucket.daily_quota} used, {bucket.daily_remaining} left"
        )
    lines.append(f"  jobs waiting or running: {bucket.active_jobs}/{bucket.max_concurrent_jobs}")
    return lines


def allowance_text(allowance: Allowance) -> str:
    if allowance.banned:
        until = f" until {timestamp(allowance.banned_until)}" if allowance.banned_until else ""
        reason = f": {allowance.ban_reason}" if allowance.ban_reason else ""
        return f"You are banned from generating images{until}{reason}."
    if allowance.exempt:
        return f"Tier **{allowance.tier}**: you are exempt from every limit."
    lines = [f"Tier **{allowance.tier}**: you can ask for {allowance.images_now} image(s) now."]
    lines += _bucket_lines(allowance.member, "You")
    if allowance.server is not None:
        lines += _bucket_lines(allowance.server, "This server")
    lines.append(f"Daily quotas reset {timestamp(allowance.daily_resets_at)}.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- info, help


def infotext_embed(filename: str, infotext: Infotext, budget: int) -> discord.Embed:
    """One image's full settings (its A1111 infotext) in an embed of at most ``budget``."""
    text = infotext.to_text()
    body = clip(text, max(200, min(budget, EMBED_DESCRIPTION_MAX) - 20))
    return discord.Embed(title=clip(filename, 200), colour=COLOR, description=f"```\n{body}\n```")


def job_fields(embed: discord.Embed, job: JobRecord, request: GenerationRequest) -> None:
    embed.add_field(name="Job", value=f"#{job.id} · {job.status.value}")
    embed.add_field(name="Requested by", value=f"<@{job.user_id}>")
    embed.add_field(name="Queued", value=timestamp(job.queued_at, "f"))
    embed.add_field(name="Quality · style", value=f"{request.quality} · {request.style}")
    embed.add_field(name="Images", value=str(request.count))
    embed.add_field(name="Hires", value=_hires_words(request))


def help_embed(max_steps: int, max_count: int) -> discord.Embed:
    embed = discord.Embed(
        title="How to prompt Animagine XL 3.1",
        colour=COLOR,
        description=(
            "Write **Danbooru tags**, separated by commas, in this order:\n"
            "`1girl/1boy, character name, from what series, everything else`\n"
            "e.g. `1girl, souryuu asuka langley, neon genesis evangelion, solo, "
            "upper body, looking at viewer`"
        ),
    )
    embed.add_field(
        name="Quality tags",
        value="masterpiece > best quality > great quality > good quality > normal quality "
        "> low quality > worst quality",
        inline=False,
    )
    ratings = ", ".join(f"`{', '.join(tags)}`" for tags in RATINGS.values())
    embed.add_field(
        name="Rating tags",
        value=f"{ratings} (`nsfw` and `explicit` only in age-restricted channels)",
        inline=False,
    )
    years = ", ".join(f"`{name}` {span}" for name, span in YEAR_RANGES.items())
    embed.add_field(name="Year tags", value=years, inline=False)
    embed.add_field(
        name="Aesthetic tags",
        value="`very aesthetic`, `aesthetic`, `displeasing`, `very displeasing`",
        inline=False,
    )
    embed.add_field(
        name="Emphasis",
        value="`(tag)` weighs 1.1, `[tag]` 1/1.1, `(a, b:1.2)` both 1.2; write `\\(` for a "
        "literal parenthesis, e.g. `ganyu \\(genshin impact\\)`",
        inline=False,
    )
    embed.add_field(
        name="Settings",
        value=f"Recommended: CFG 5-7, under 30 steps (at most {max_steps} here), sampler "
        f"Euler a; up to {max_count} images per request. Samplers: {', '.join(SAMPLERS)}.",
        inline=False,
    )
    embed.add_field(
        name="Presets",
        value=f"Quality: {', '.join(QUALITY_PRESETS)}\nStyle: {', '.join(STYLE_PRESETS)}",
        inline=False,
    )
    embed.add_field(
        name="Sizes",
        value=", ".join(f"{a.label} {a.size}" for a in ASPECTS),
        inline=False,
    )
    embed.add_field(
        name="Buttons",
        value="🎲 Re-roll (new seed) · 🔍 Upscale (hires pass on that seed) · 🪄 Vary "
        "(subtle) and 🌀 Vary (strong): new takes on that image · ✏️ Edit "
        "(prompt, negative, seed) · 🗑️ Delete · ✖️ Cancel while queued or running. "
        "Right-click a bot image → Apps → **Generation info** for its full settings.",
        inline=False,
    )
    return embed


# ---------------------------------------------------------------------------- /settings


def tier_text(tier: LimitsSettings.Tier) -> str:
    daily = "no daily quota" if tier.daily_quota == 0 else f"{tier.daily_quota} a day"
    return (
        f"{plural(tier.burst, 'image')} at once, then one every "
        f"{duration(tier.refill_seconds)}; {daily}; "
        f"{plural(tier.max_concurrent_jobs, 'job')} at a time"
    )


def server_settings_embed(
    request: GenerationRequest,
    step_limit: int,
    *,
    enabled: bool,
    tier_name: str,
    member: LimitsSettings.Tier,
    server: LimitsSettings.Tier,
) -> discord.Embed:
    """What ``/imagine`` uses in this server when a member leaves an option out."""
    embed = discord.Embed(title="Server settings", colour=COLOR)
    embed.add_field(name="Generation", value="on" if enabled else "**off**")
    embed.add_field(name="Size", value=f"{request.width}x{request.height}")
    embed.add_field(name="Steps", value=f"{request.steps} (at most {step_limit})")
    embed.add_field(name="CFG", value=f"{request.cfg:g}")
    embed.add_field(name="Sampler", value=request.sampler)
    embed.add_field(name="Hires", value=_hires_words(request))
    embed.add_field(name="Quality", value=request.quality)
    embed.add_field(name="Style", value=request.style)
    embed.add_field(name=f"Members (tier {tier_name})", value=tier_text(member), inline=False)
    embed.add_field(name="Whole server", value=tier_text(server), inline=False)
    return embed


def workers_embed(workers: Sequence[WorkerStatus]) -> discord.Embed:
    """The GPU workers reached through Redis, one field each (``/settings show``)."""
    counted = sum(w.counted for w in workers)
    embed = discord.Embed(title="Workers", colour=COLOR)
    if not workers:
        embed.description = (
            "No worker has reported in the last few seconds: jobs wait until one is up "
            "(`python -m bot worker`)."
        )
        return embed
    embed.description = f"{counted} of {plural(len(workers), 'worker')} taking jobs"
    shown = workers if len(workers) <= 24 else workers[:23]
    for w in shown:
        embed.add_field(
            name=clip(w.name, 256),
            value=clip(
                f"host {w.host} · GPU {w.gpu}\nmodel {w.model}\n"
                f"{w.state} · {plural(w.jobs_done, 'job')} done · "
                f"last heartbeat {w.seconds_since_heartbeat:.1f} s ago",
                1024,
            ),
            inline=False,
        )
    if len(shown) < len(workers):
        embed.add_field(
            name="…", value=f"and {len(workers) - len(shown)} more (`python -m bot workers`)"
        )
    return embed


# ---------------------------------------------------------------------------- moderation

SCORE_ORDER: Final = ("explicit", "questionable", "sensitive", "general")
LOG_PROMPT_MAX: Final = 600


def policy_refusal_text(decision: PromptDecision) -> str:
    """Why the channel's policy refused a prompt (shown only to the member)."""
    if decision.decision is Decision.HARD_BLOCK:
        return f"**Refused**: {decision.reason}."
    return f"**Not allowed here**: {decision.reason}."


def message_url(guild_id: int | None, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def channel_kind(job: JobRecord) -> str:
    """How the policy saw the channel of a job (as stored with it)."""
    channel = job.channel
    if channel.is_dm:
        return "direct message"
    kind = "age-restricted" if channel.age_restricted else "not age-restricted"
    return f"thread, {kind}" if channel.is_thread else kind


def scores_text(scores: Mapping[str, float] | None, thresholds: Thresholds | None = None) -> str:
    """``explicit 0.90 ⚠ · questionable 0.01 · ...`` (⚠: above the server's threshold)."""
    if not scores:
        return "not rated"
    parts = []
    for name in SCORE_ORDER:
        if name not in scores:
            continue
        limit = None if thresholds is None else getattr(thresholds, name, None)
        flag = " ⚠" if limit is not None and scores[name] > limit else ""
        parts.append(f"{name} {scores[name]:.2f}{flag}")
    return " · ".join(parts)


def who_made_embed(
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
        title=f"Job #{job.id}",
        colour=COLOR,
        description=f"```\n{clip(request.prompt, EMBED_DESCRIPTION_MAX - 200)}\n```",
    )
    embed.add_field(name="Requested by", value=f"<@{job.user_id}> (`{job.user_id}`)")
    server = "direct message" if job.guild_id is None else f"{guild_name or '?'} (`{job.guild_id}`)"
    embed.add_field(name="Server", value=server)
    if job.channel_id is not None:
        embed.add_field(name="Channel", value=f"<#{job.channel_id}> ({channel_kind(job)})")
    messages = [f"[this message]({target_url})"]
    if job.message_id is not None and job.channel_id is not None:
        url = message_url(job.guild_id, job.channel_id, job.message_id)
        if url != target_url:
            messages.append(f"[job message]({url})")
    embed.add_field(name="Message", value=" · ".join(messages))
    embed.add_field(name="Asked", value=timestamp(job.queued_at, "f"))
    embed.add_field(name="Status", value=job.status.value)
    if request.negative_prompt.strip():
        embed.add_field(
            name="Negative", value=clip(request.negative_prompt, EMBED_FIELD_MAX), inline=False
        )
    if request.rating:
        embed.add_field(name="Rating", value=request.rating)
    for image in images[:10]:
        embed.add_field(
            name=f"Image {image.index + 1} · seed {image.seed}",
            value=scores_text(image.moderation_scores, thresholds),
            inline=False,
        )
    if not images:
        embed.add_field(name="Seed", value=str(request.seed), inline=False)
    embed.set_footer(text="Scores: the image classifier's ratings (⚠: above this server's limit)")
    return embed


def _log_prompt(prompt: str, *, hide: bool) -> str:
    text = clip(" ".join(prompt.split()), LOG_PROMPT_MAX).replace("`", "ˋ")
    return f"||`{text}`||" if hide else f"`{text}`"


def log_refusal_text(
    decision: PromptDecision, *, user_id: int, channel_id: int | None, prompt: str | None
) -> str:
    """A refused prompt, for the moderation log (hard-blocked prompts behind a spoiler)."""
    hard = decision.decision is Decision.HARD_BLOCK
    title = "🛑 **Hard block**" if hard else "⛔ **Prompt refused**"
    where = f" in <#{channel_id}>" if channel_id is not None else ""
    lines = [f"{title} · <@{user_id}>{where}", f"Reason: {decision.reason}"]
    if prompt is not None:
        lines.append(f"Prompt: {_log_prompt(prompt, hide=hard)}")
    return "\n".join(lines)


def log_withheld_text(
    job: JobRecord,
    request: GenerationRequest,
    withheld: Sequence[OutputImage],
    *,
    forwarded: bool,
) -> str:
    """Images that were not posted, for the moderation log (hard blocks: the prompt behind
    a spoiler, and a note that the image is forwarded to nobody)."""
    where = f" in <#{job.channel_id}>" if job.channel_id is not None else ""
    hard = any(i.verdict.hard_block for i in withheld)
    title = "🛑 **Hard block (image)**" if hard else "🙈 **Image withheld**"
    lines = [f"{title} · job #{job.id} · <@{job.user_id}>{where}"]
    lines += [f"Image {i.index + 1} (seed {i.seed}): {i.verdict.reason}" for i in withheld]
    lines.append(f"Prompt: {_log_prompt(request.prompt, hide=hard)}")
    if any(i.verdict.quarantined for i in withheld):
        lines.append("Hard-blocked or unchecked sexual images are not attached: never forwarded.")
    if forwarded:
        lines.append(
            "The other images are attached behind spoilers."
            if hard
            else "The images are attached behind spoilers."
        )
    return "\n".join(lines)


def ban_line(until: datetime | None) -> str:
    if until is None:
        return "until unbanned"
    return f"until {timestamp(until, 'f')} ({timestamp(until)})"


def log_ban_text(
    user_id: int, actor_id: int, reason: str, until: datetime | None, cancelled: int
) -> str:
    lines = [f"🔨 **Ban** · <@{user_id}> by <@{actor_id}> · {ban_line(until)}", f"Reason: {reason}"]
    if cancelled:
        lines.append(f"{plural(cancelled, 'waiting job')} cancelled.")
    return "\n".join(lines)


def log_unban_text(user_id: int, actor_id: int, reason: str | None) -> str:
    line = f"✅ **Unban** · <@{user_id}> by <@{actor_id}>"
    return f"{line}\nReason: {reason}" if reason else line


def log_purge_text(user_id: int, actor_id: int, channel_id: int, deleted: int) -> str:
    return (
        f"🧹 **Purge** · {plural(deleted, 'bot message')} of <@{user_id}> deleted in "
        f"<#{channel_id}> by <@{actor_id}>"
    )


def moderation_embed(
    policy: GuildPolicy,
    overrides: Mapping[str, Any],
    *,
    default_blocked: int,
    classifier: str,
) -> discord.Embed:
    """The moderation policy in force in a server (``/settings show``)."""
    embed = discord.Embed(title="Moderation", colour=COLOR)
    blocked = [f"{len(policy.blocked_tags)} tags (the bot's list has {default_blocked})"]
    if added := overrides.get("blocked_tags_add"):
        blocked.append(f"added here: {clip(', '.join(added), 300)}")
    if removed := overrides.get("blocked_tags_remove"):
        blocked.append(f"allowed here: {clip(', '.join(removed), 300)}")
    blocked.append("the nsfw and explicit ratings and the hard block always apply")
    embed.add_field(name="Blocked tags", value="\n".join(blocked), inline=False)
    negatives = ", ".join(("nsfw", *(t for t in policy.extra_negatives if t != "nsfw")))
    embed.add_field(name="Extra negatives", value=clip(negatives, EMBED_FIELD_MAX), inline=False)
    thresholds = policy.thresholds
    embed.add_field(
        name="Withhold above",
        value=f"questionable {thresholds.questionable:.2f} · explicit {thresholds.explicit:.2f}",
    )
    embed.add_field(name="Spoilers (age-restricted)", value=policy.spoiler)
    embed.add_field(
        name="Classifier down",
        value="withhold (fail_closed)" if policy.fail_closed else "post unchecked",
    )
    log_channel = "none" if policy.log_channel_id is None else f"<#{policy.log_channel_id}>"
    embed.add_field(name="Log channel", value=log_channel)
    embed.add_field(
        name="Forward withheld images",
        value="yes, as spoilers" if policy.forward_withheld else "no",
    )
    embed.add_field(name="Image classifier", value=clip(classifier, EMBED_FIELD_MAX))
    dms = "served (as not age-restricted)" if policy.dm_allowed else "refused"
    embed.add_field(
        name="Direct messages",
        value=f"{dms}: bot-wide config `moderation.dm_allowed`, not a server setting",
        inline=False,
    )
    return embed
