"""From command options and a server's defaults to a :class:`GenerationRequest`.

Precedence: what the member typed, then the server's defaults (``/settings defaults``),
then the configuration. A server may lower the step limit (``max_steps``) below the
configured one, never raise it. Server defaults are checked when an admin sets them
(:func:`bot.admin.check_defaults`) and again, leniently, whenever they are used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.admin import check_defaults, max_steps
from bot.config import Settings
from bot.request import GenerationRequest, HiresOptions, RequestError, find_aspect

__all__ = ["ImagineOptions", "build_request", "check_defaults", "hires_options", "max_steps"]


@dataclass(frozen=True)
class ImagineOptions:
    """What a member gave to ``/imagine`` (``None``: not given)."""

    prompt: str
    negative: str | None = None
    aspect: str | None = None
    quality: str | None = None
    style: str | None = None
    rating: str | None = None
    year: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    count: int | None = None
    hires: bool | None = None


def _int(defaults: Mapping[str, Any], key: str, fallback: int) -> int:
    value = defaults.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else fallback


def _float(defaults: Mapping[str, Any], key: str, fallback: float) -> float:
    value = defaults.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return fallback


def _str(defaults: Mapping[str, Any], key: str, fallback: str) -> str:
    value = defaults.get(key)
    return value if isinstance(value, str) and value else fallback


def _bool(defaults: Mapping[str, Any], key: str, fallback: bool) -> bool:
    value = defaults.get(key)
    return value if isinstance(value, bool) else fallback


def hires_options(settings: Settings) -> HiresOptions:
    return HiresOptions(scale=settings.engine.hires_scale, strength=settings.engine.hires_strength)


def build_request(
    options: ImagineOptions,
    defaults: Mapping[str, Any],
    settings: Settings,
) -> GenerationRequest:
    """The request ``options`` ask for in a server with ``defaults``.

    Raises :class:`RequestError` for option mixes the server does not allow; the request's
    own bounds are checked later by :func:`bot.request.validate_request`, and what the
    channel allows (ratings, tags) by the moderation policy when the job is submitted.
    """
    engine = settings.engine
    if options.aspect:
        aspect = find_aspect(options.aspect)
        width, height = aspect.width, aspect.height
    else:
        width = _int(defaults, "width", engine.default_width)
        height = _int(defaults, "height", engine.default_height)
    limit = max_steps(defaults, settings)
    steps = options.steps
    if steps is None:
        steps = min(_int(defaults, "steps", engine.default_steps), limit)
    elif steps > limit:
        raise RequestError(
            "this server allows at most {most} steps (you asked for {steps})",
            most=limit,
            steps=steps,
        )
    hires = options.hires
    if hires is None:
        hires = _bool(defaults, "hires", False)
    return GenerationRequest(
        prompt=options.prompt,
        negative_prompt=options.negative or "",
        width=width,
        height=height,
        steps=steps,
        cfg=_float(defaults, "cfg", engine.default_cfg) if options.cfg is None else options.cfg,
        sampler=options.sampler or _str(defaults, "sampler", engine.default_sampler),
        seed=options.seed,
        count=options.count or 1,
        hires=hires_options(settings) if hires else None,
        quality=options.quality or _str(defaults, "quality", settings.prompts.quality),
        style=options.style or _str(defaults, "style", settings.prompts.style),
        rating=options.rating,
        year=options.year,
    )
