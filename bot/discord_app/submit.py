"""Queue a request for a member: the one path shared by /imagine and the buttons.

The interaction is acknowledged first (a deferred, public "thinking" reply), before any
database or queue work, so it meets Discord's 3 seconds whatever the queue holds. The work
after that (server defaults, policy, limits, the job row) runs for a few interactions at a
time (``AnimagineBot.submit_slots``): in a burst, the event loop keeps acknowledging new
interactions between them instead of taking turns with hundreds of half-done submissions. Checks
that need nothing but the request run before that and answer ephemerally at once. Refusals
found later (limits, a full queue, a ban) remove the thinking reply and answer
ephemerally. The job row is written by the core before the reply says it is queued.

The channel's moderation policy is the core's (:meth:`ImagineService.submit`): the adapter
only tells the member why a prompt was refused, ephemerally, and copies the refusal to the
server's moderation log channel.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.discord_app import formatting
from bot.discord_app.context import bot_of, destination, reply, requester
from bot.discord_app.i18n import locale_of, say
from bot.jobspec import JobSpec
from bot.planning import plan_job
from bot.prompts import PromptError
from bot.prompts.emphasis import check_weights
from bot.request import GenerationRequest, RequestError, validate_request
from bot.service import NotAllowed, SubmitRefused
from bot.storage import DatabaseError

log = logging.getLogger(__name__)

RequestMaker = Callable[[], Awaitable[GenerationRequest]]
"""Builds the request after the interaction is acknowledged (may read the database)."""


def precheck(interaction: discord.Interaction[Any], request: GenerationRequest) -> JobSpec | str:
    """``request`` planned for this channel (:func:`bot.planning.plan_job`, the plan the
    core then stores as it is), or why it cannot be rendered as asked, from the request
    alone (no I/O).

    Bounds, presets, rating and year names, wildcards, emphasis weights. The channel's
    moderation policy needs the server's settings: the core applies it when the job is
    submitted.
    """
    bot = bot_of(interaction)
    channel = destination(interaction).channel
    try:
        spec = plan_job(validate_request(request, bot.settings.engine), bot.settings, channel)
        assert spec.plan is not None
        # Wildcards may expand to weights out of range: refused now, not after queueing.
        check_weights(spec.plan.render.prompt, "prompt")
        check_weights(spec.plan.render.negative_prompt, "negative prompt")
    except (RequestError, PromptError) as exc:
        return formatting.bad_request_text(locale_of(interaction), exc)
    return spec


async def retract(interaction: discord.Interaction[Any], text: str) -> None:
    """Replace the public thinking reply with an ephemeral answer only the member sees."""
    try:
        await interaction.delete_original_response()
    except discord.HTTPException as exc:
        log.debug("could not remove the thinking reply (%s)", exc.status)
    await interaction.followup.send(text, ephemeral=True)


async def submit_request(
    interaction: discord.Interaction[Any],
    make: RequestMaker,
    *,
    draft: GenerationRequest | None = None,
) -> None:
    """Acknowledge, build the request with ``make``, queue it and post its reply.

    ``draft`` (the request as far as known without I/O) is checked before acknowledging,
    so plain mistakes get an immediate ephemeral answer; when ``make`` gives the same
    request (no server default changed it), the draft's plan is the one queued.
    """
    planned: JobSpec | None = None
    if draft is not None:
        checked = precheck(interaction, draft)
        if isinstance(checked, str):
            await reply(interaction, checked)
            return
        planned = checked
    if not interaction.response.is_done():
        await interaction.response.defer(thinking=True)
    bot = bot_of(interaction)
    locale = locale_of(interaction)
    request: GenerationRequest | None = None
    try:
        async with bot.submit_slots:
            request = await make()
            submitted = await bot.service.submit(
                request,
                requester(interaction),
                destination(interaction),
                planned=planned if request == draft else None,
            )
            # Before any await: the worker may start the job as soon as this task yields.
            bot.delivery.track(submitted.job.id, interaction.filesize_limit)
    except SubmitRefused as exc:
        if exc.refusal is not None:
            text = formatting.refusal_text(locale, exc.refusal)
        elif exc.decision is not None:
            text = formatting.policy_refusal_text(locale, exc.decision)
        else:
            text = say(locale, exc)
        await retract(interaction, text)
        if exc.decision is not None:  # the core logged the event; tell the moderators
            await bot.modlog.refusal(
                guild_id=interaction.guild_id,
                user_id=interaction.user.id,
                channel_id=interaction.channel_id,
                decision=exc.decision,
                request=request,
            )
        return
    except (RequestError, PromptError) as exc:
        await retract(interaction, formatting.bad_request_text(locale, exc))
        return
    except NotAllowed as exc:
        await retract(interaction, formatting.not_allowed_text(locale, exc))
        return
    except DatabaseError as exc:
        log.error("submitting a job failed: %s", exc)  # noqa: TRY400
        await retract(interaction, formatting.database_down_text(locale))
        return
    await bot.delivery.announce(interaction, submitted, submitted.job.request)
