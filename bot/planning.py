"""From a validated request to the job the engine renders: prompts built, checked, seeds fixed.

This is the one place where the prompt language (:mod:`bot.prompts`), the channel policy
(:mod:`bot.moderation`) and the request (:mod:`bot.request`) meet; the Discord layer, the
CLI and the worker all go through it, so ``/imagine``, Re-roll, Edit and a resumed job are
checked the same way, after wildcards are expanded.

A queued job is planned once, when it is accepted (:func:`plan_job`, stored with the job);
when it starts, :func:`decide` re-checks the stored final prompt under the server's policy
of that moment, without building it again. :func:`plan_render` does both at once (the CLI).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.engine.job import RenderJob
from bot.jobspec import JobSpec, StoredPlan
from bot.moderation import ChannelContext, GuildPolicy, PromptDecision, check_prompt
from bot.prompts import BuiltPrompt, PromptError, WildcardFolder, build_prompt
from bot.request import GenerationRequest
from bot.storage.members import GuildStore

# The CLI renders for its owner, outside any channel: the demo's prompts (``nsfw`` stays in
# the presets' negatives) and only the hard block, which applies everywhere.
_NO_CHANNEL = ChannelContext(age_restricted=True)


class PromptRefused(PromptError):
    """The channel's policy refuses the prompt; ``decision`` says why and what matched."""

    def __init__(self, decision: PromptDecision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


@dataclass(frozen=True)
class Plan:
    """A job ready for the engine, with the policy decision that allowed it."""

    job: RenderJob
    decision: PromptDecision
    channel: ChannelContext
    policy: GuildPolicy


def wildcard_source(settings: Settings) -> WildcardFolder | None:
    folder = settings.prompts.wildcards_dir
    return WildcardFolder(Path(folder).expanduser()) if folder else None


def build_for(
    request: GenerationRequest, settings: Settings, *, allow_nsfw: bool = False
) -> BuiltPrompt:
    """The final prompt pair for ``request`` (which must have a seed)."""
    if request.seed is None:
        raise ValueError("a request needs its seed before its prompt is built")
    return build_prompt(
        request.prompt,
        request.negative_prompt,
        quality=request.quality,
        style=request.style,
        rating=request.rating,
        year=request.year,
        wildcards=wildcard_source(settings),
        seed=request.seed,
        allow_nsfw=allow_nsfw,
    )


def _stored_plan(request: GenerationRequest, settings: Settings, *, allow_nsfw: bool) -> StoredPlan:
    """Build ``request``'s prompts (wildcards, presets, emphasis) and fix one seed per image."""
    built = build_for(request, settings, allow_nsfw=allow_nsfw)
    extra = [("Quality preset", built.quality_preset), ("Style preset", built.style_preset)]
    if built.rating:
        extra.append(("Rating", built.rating))
    if built.year:
        extra.append(("Year", built.year))
    render = RenderJob(
        prompt=built.prompt,
        negative_prompt=built.negative_prompt,
        width=request.width,
        height=request.height,
        steps=request.steps,
        cfg=request.cfg,
        sampler=request.sampler,
        seeds=tuple(request.seeds()),
        hires=request.hires,
        extra_params=tuple(extra),
        image=request.image,
    )
    return StoredPlan(render=render, rating=built.rating)


def plan_job(request: GenerationRequest, settings: Settings, channel: ChannelContext) -> JobSpec:
    """Plan a validated request for ``channel``, once, when the job is accepted: what the
    job stores (see :mod:`bot.jobspec`). The policy is not applied here: see :func:`decide`."""
    request = request.with_seed()
    plan = _stored_plan(request, settings, allow_nsfw=channel.age_restricted)
    return JobSpec(request=request, channel=channel, plan=plan)


# Recent decisions: a job's prompt is checked when it is accepted and again when it starts;
# under the same policy (policies are immutable and cached) the second check is a lookup.
# The key holds the policy itself, so an edited policy is a new key; the tokenizer is the
# loaded model's (held by the key, so never mistaken for another).
_DECISIONS: OrderedDict[tuple[object, ...], PromptDecision] = OrderedDict()
_DECISIONS_KEPT = 1024


def decide(
    plan: StoredPlan,
    channel: ChannelContext,
    policy: GuildPolicy,
    *,
    tokenizer: object | None = None,
    local: bool = False,
) -> Plan:
    """The engine job for a stored plan under ``policy``: its final prompt checked (raises
    :class:`PromptRefused`), the channel's negatives added. No prompt is built again: this
    is the cheap check a queued job passes when it starts, under the policy of that moment.

    ``local`` (the CLI): the demo's negatives, untouched.
    """
    render = plan.render
    key = (render.prompt, render.negative_prompt, plan.rating, channel, policy, tokenizer)
    decision = _DECISIONS.get(key)
    if decision is None:
        decision = check_prompt(
            render.prompt, render.negative_prompt, plan.rating, channel, policy, tokenizer=tokenizer
        )
        if len(_DECISIONS) >= _DECISIONS_KEPT:
            _DECISIONS.popitem(last=False)
        _DECISIONS[key] = decision
    else:
        _DECISIONS.move_to_end(key)
    if not decision.allowed:
        raise PromptRefused(decision)
    if not local:
        render = dataclasses.replace(render, negative_prompt=decision.negative_prompt)
    return Plan(render, decision, channel, policy)


def plan_render(
    request: GenerationRequest,
    settings: Settings,
    *,
    channel: ChannelContext | None = None,
    policy: GuildPolicy | None = None,
    tokenizer: object | None = None,
) -> Plan:
    """The engine job for ``request`` in ``channel``: presets applied, prompt checked
    against the policy (raises :class:`PromptRefused`), one seed per image.

    Without a channel (the CLI) the prompts are the demo's and only the hard block applies.
    ``tokenizer`` is the loaded model's CLIP tokenizer, in whose pieces the final prompt is
    read as well (None: the CLIP tokenizer shipped with the bot).
    """
    request = request.with_seed()
    policy = policy or GuildPolicy.from_settings(settings.moderation, {})
    local = channel is None
    channel = channel or _NO_CHANNEL
    plan = _stored_plan(request, settings, allow_nsfw=channel.age_restricted and not local)
    return decide(plan, channel, policy, tokenizer=tokenizer, local=local)


def current_policy(guilds: GuildStore, settings: Settings, guild_id: int | None) -> GuildPolicy:
    """The moderation policy in force in a server now (configured defaults + its overrides);
    synchronous: ``await db.run(current_policy, guilds, settings, guild_id)``."""
    overrides = {} if guild_id is None else guilds.get_moderation(guild_id)
    return GuildPolicy.from_settings(settings.moderation, overrides)


def prompt_summary(job: RenderJob, settings: Settings) -> dict[str, Any]:
    """What ``generate --dry-run`` shows: final prompts and their 75-token chunk counts.

    Reads the model's tokenizer files only, never its weights.
    """
    from bot.engine.loading import load_tokenizer
    from bot.prompts.encoder import count_chunks

    tokenizer = load_tokenizer(settings.model)
    params = dict(job.extra_params)
    return {
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "chunks": count_chunks(tokenizer, job.prompt),
        "negative_chunks": count_chunks(tokenizer, job.negative_prompt),
        "max_chunks": settings.prompts.max_chunks,
        "quality_preset": params.get("Quality preset"),
        "style_preset": params.get("Style preset"),
        "rating": params.get("Rating"),
        "year": params.get("Year"),
        "width": job.width,
        "height": job.height,
        "steps": job.steps,
        "cfg": job.cfg,
        "sampler": job.sampler,
        "seeds": list(job.seeds),
        "hires": None if job.hires is None else job.hires.model_dump(),
    }
