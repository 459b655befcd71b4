"""The generation request: what a member or the CLI asks for, validated and typed.

A :class:`GenerationRequest` holds the user's words and options exactly as given (so it can be
stored, re-rolled and edited); :func:`validate_request` checks it against the configured
bounds and raises :class:`RequestError` with a message meant for the person who asked.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.config import EngineSettings
from bot.errors import RequestError as RequestError  # noqa: PLC0414 (re-exported)
from bot.prompts.emphasis import WeightOutOfRange, check_weights
from bot.samplers import SAMPLERS as SAMPLERS  # noqa: PLC0414 (re-exported)
from bot.samplers import find_sampler as find_sampler  # noqa: PLC0414 (re-exported)

MAX_SEED = 2_147_483_647
"""Seeds are drawn from 0..MAX_SEED, as in the official Animagine demo."""


@dataclass(frozen=True)
class Aspect:
    """One of the resolutions Animagine XL 3.1 was trained on."""

    label: str
    width: int
    height: int

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


ASPECTS: tuple[Aspect, ...] = (
    Aspect("Square 1:1", 1024, 1024),
    Aspect("Landscape 9:7", 1152, 896),
    Aspect("Portrait 7:9", 896, 1152),
    Aspect("Landscape 19:13", 1216, 832),
    Aspect("Portrait 13:19", 832, 1216),
    Aspect("Widescreen 7:4", 1344, 768),
    Aspect("Tall 4:7", 768, 1344),
    Aspect("Panorama 12:5", 1536, 640),
    Aspect("Tall panorama 5:12", 640, 1536),
)


def nearest_aspect(width: int, height: int) -> Aspect:
    """The card resolution whose shape is closest to ``width`` x ``height`` (by the log of
    the aspect ratios: 2:1 is as far from 1:1 as 1:2)."""
    import math

    ratio = math.log(width / height)
    return min(ASPECTS, key=lambda a: abs(math.log(a.width / a.height) - ratio))


def find_aspect(text: str) -> Aspect:
    """Look an aspect up by its size (``832x1216``), ratio (``13:19``) or full label."""
    key = text.strip().lower().replace(" ", "")
    for aspect in ASPECTS:
        ratio = aspect.label.split()[-1]
        names = {
            aspect.size,
            ratio,
            aspect.label.lower().replace(" ", ""),
            f"{aspect.label} ({aspect.size})".lower().replace(" ", ""),
        }
        if key in names:
            return aspect
    valid = ", ".join(a.size for a in ASPECTS)
    raise RequestError(
        "unknown aspect {name}: choose one of {choices}", name=repr(text), choices=valid
    )


class HiresOptions(BaseModel):
    """The demo's "upscaler": latent upscale, then img2img on the same components."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scale: float = 1.5
    strength: float = 0.55


INPUT_NAME = re.compile(r"[0-9a-f]{64}\.png")
"""A stored input image's name: the SHA-256 of its PNG bytes (see :class:`bot.outbox.
ImageVault`); nothing else can name a file, so a stored request never reaches outside."""


class ImagePrompt(BaseModel):
    """img2img: start from a stored input image (already the request's size) instead of
    noise. ``source`` names the PNG in the image vault's ``inputs`` folder; ``origin``
    says where it came from (``attachment``: the member's, ``vary``: a result of job
    ``from_job``, image ``from_index``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    strength: float = 0.65
    origin: Literal["attachment", "vary"] = "attachment"
    from_job: int | None = None
    from_index: int | None = None


class GenerationRequest(BaseModel):
    """Everything needed to reproduce an image, as the user gave it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    negative_prompt: str = ""
    width: int = 896
    height: int = 1152
    steps: int = 28
    cfg: float = 7.0
    sampler: str = "Euler a"
    seed: int | None = None
    count: int = 1
    hires: HiresOptions | None = None
    quality: str = "Standard v3.1"
    style: str = "(None)"
    rating: str | None = None
    year: str | None = None
    extra: dict[str, str] = Field(default_factory=dict)
    image: ImagePrompt | None = None

    def with_seed(self) -> GenerationRequest:
        """This request with a concrete seed (a random one when none was given)."""
        if self.seed is not None:
            return self
        return self.model_copy(update={"seed": random_seed()})

    def seeds(self) -> list[int]:
        """One seed per image: ``seed, seed+1, ...`` as A1111 numbers a batch."""
        if self.seed is None:
            raise RequestError("the request has no seed yet; call with_seed() first")
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.count)]


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The size the hires pass makes: each side scaled, floored to a multiple of 8."""
    return int(width * scale) // 8 * 8, int(height * scale) // 8 * 8


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def is_blank(text: str) -> bool:
    """Nothing a model could read: only whitespace, NUL, control or format characters
    (``"\\x00\\x01"``, zero-width spaces) or no character at all."""
    return all(c.isspace() or unicodedata.category(c)[0] in "CZ" for c in text)


def _out_of_range(name: str, low: object, high: object, value: object) -> RequestError:
    return RequestError(
        "{name} must be between {low} and {high} (got {value})",
        name=name,
        low=low,
        high=high,
        value=value,
    )


def validate_request(request: GenerationRequest, bounds: EngineSettings) -> GenerationRequest:
    """Check ``request`` against ``bounds``; return it with its sampler name made canonical.

    A prompt of only control characters counts as empty; emphasis weights must lie within
    :data:`~bot.prompts.emphasis.MIN_WEIGHT`..:data:`~bot.prompts.emphasis.MAX_WEIGHT`.
    """
    if is_blank(request.prompt):
        raise RequestError("the prompt is empty: describe the image with Danbooru tags")
    try:
        check_weights(request.prompt, "prompt")
        check_weights(request.negative_prompt, "negative prompt")
    except WeightOutOfRange as exc:
        raise RequestError(exc.text) from None
    for name, side in (("width", request.width), ("height", request.height)):
        if side % 8:
            raise RequestError(
                "{name} must be a multiple of 8 (got {value})", name=name, value=side
            )
        if not bounds.min_side <= side <= bounds.max_side:
            raise _out_of_range(name, bounds.min_side, bounds.max_side, side)
    if request.width * request.height > bounds.max_pixels:
        raise RequestError(
            "{size} is too large: at most {most} pixels",
            size=f"{request.width}x{request.height}",
            most=bounds.max_pixels,
        )
    if not 1 <= request.steps <= bounds.max_steps:
        raise _out_of_range("steps", 1, bounds.max_steps, request.steps)
    if not 1.0 <= request.cfg <= 30.0:
        raise _out_of_range("CFG scale", 1, 30, f"{request.cfg:g}")
    if not 1 <= request.count <= bounds.max_count:
        raise _out_of_range("count", 1, bounds.max_count, request.count)
    if request.seed is not None and not 0 <= request.seed <= MAX_SEED:
        raise _out_of_range("seed", 0, MAX_SEED, request.seed)
    if request.hires is not None:
        if not 1.0 <= request.hires.scale <= 1.5:
            raise _out_of_range("hires scale", "1.0", "1.5", f"{request.hires.scale:g}")
        if not 0.0 < request.hires.strength <= 1.0:
            raise RequestError(
                "hires strength must be above 0 and at most 1 (got {value})",
                value=f"{request.hires.strength:g}",
            )
        out_w, out_h = hires_size(request.width, request.height, request.hires.scale)
        if out_w * out_h > bounds.max_pixels:
            raise RequestError(
                "the hires pass would make {size}, more than {most} pixels: choose a smaller "
                "size or a smaller hires scale",
                size=f"{out_w}x{out_h}",
                most=bounds.max_pixels,
            )
    if request.image is not None:
        if not 0.0 < request.image.strength <= 1.0:
            raise RequestError(
                "image strength must be above 0 and at most 1 (got {value})",
                value=f"{request.image.strength:g}",
            )
        if not INPUT_NAME.fullmatch(request.image.source):
            raise RequestError("the input image is not one the bot stored")
    sampler = find_sampler(request.sampler)
    return request.model_copy(update={"sampler": sampler})
