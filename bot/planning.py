"""From a validated request to the job the engine renders: prompts built, seeds fixed.

This is the one place where the prompt language (:mod:`bot.prompts`) meets the request
(:mod:`bot.request`); the Discord layer, the CLI and the worker all go through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.engine.engine import RenderJob
from bot.prompts import BuiltPrompt, WildcardFolder, build_prompt
from bot.request import GenerationRequest


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


def plan_render(
    request: GenerationRequest, settings: Settings, *, allow_nsfw: bool = False
) -> RenderJob:
    """The engine job for ``request``: presets applied, one seed per image."""
    request = request.with_seed()
    built = build_for(request, settings, allow_nsfw=allow_nsfw)
    extra = [("Quality preset", built.quality_preset), ("Style preset", built.style_preset)]
    if built.rating:
        extra.append(("Rating", built.rating))
    if built.year:
        extra.append(("Year", built.year))
    return RenderJob(
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
    )


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
