"""The quality and style presets of the official Animagine XL 3.1 demo, as data.

A preset's ``template`` holds the user's prompt at ``{prompt}``. As in the demo, a preset
wraps a prompt only when the prompt is not blank, and its negative comes first with the
user's negative after ``", "``. The demo applies the style to the user's prompt first and
the quality preset to the result, so the final negative reads quality, style, user.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from bot.prompts.tags import PromptError

__all__ = [
    "DEFAULT_QUALITY",
    "DEFAULT_STYLE",
    "NO_PRESET",
    "QUALITY_PRESETS",
    "STYLE_PRESETS",
    "Preset",
    "UnknownPresetError",
    "get_quality_preset",
    "get_style_preset",
]

NO_PRESET: Final = "(None)"
DEFAULT_QUALITY: Final = "Standard v3.1"
DEFAULT_STYLE: Final = NO_PRESET


class UnknownPresetError(PromptError):
    """A quality or style preset name that does not exist."""


@dataclass(frozen=True, slots=True)
class Preset:
    """A named prompt template (``{prompt}`` marks the user's prompt) and its negative."""

    name: str
    template: str
    negative: str

    def apply(self, prompt: str) -> str:
        """Wrap ``prompt`` in the template; a blank prompt is returned unchanged."""
        return self.template.replace("{prompt}", prompt) if prompt.strip() else prompt

    def apply_negative(self, negative: str) -> str:
        """The preset's negative, then ``negative`` after ``", "`` when it is not blank."""
        if not negative.strip():
            return self.negative
        return f"{self.negative}, {negative}" if self.negative else negative


def _by_name(*presets: Preset) -> Mapping[str, Preset]:
    return MappingProxyType({preset.name: preset for preset in presets})


QUALITY_PRESETS: Final = _by_name(
    Preset(NO_PRESET, "{prompt}", "nsfw, lowres"),
    Preset(
        "Standard v3.0",
        "{prompt}, masterpiece, best quality",
        "nsfw, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, "
        "fewer digits, cropped, worst quality, low quality, normal quality, jpeg artifacts, "
        "signature, watermark, username, blurry, artist name",
    ),
    Preset(
        "Standard v3.1",
        "{prompt}, masterpiece, best quality, very aesthetic, absurdres",
        "nsfw, lowres, (bad), text, error, fewer, extra, missing, worst quality, "
        "jpeg artifacts, low quality, watermark, unfinished, displeasing, oldest, early, "
        "chromatic aberration, signature, extra digits, artistic error, username, scan, "
        "[abstract]",
    ),
    Preset(
        "Light v3.1",
        "{prompt}, (masterpiece), best quality, very aesthetic, perfect face",
        "nsfw, (low quality, worst quality:1.2), very displeasing, 3d, watermark, signature, "
        "ugly, poorly drawn",
    ),
    Preset(
        "Heavy v3.1",
        "{prompt}, (masterpiece), (best quality), (ultra-detailed), very aesthetic, "
        "illustration, disheveled hair, perfect composition, moist skin, intricate details",
        "nsfw, longbody, lowres, bad anatomy, bad hands, missing fingers, pubic hair, "
        "extra digit, fewer digits, cropped, worst quality, low quality, very displeasing",
    ),
)

STYLE_PRESETS: Final = _by_name(
    Preset(NO_PRESET, "{prompt}", ""),
    Preset(
        "Cinematic",
        "{prompt}, cinematic still, emotional, harmonious, vignette, highly detailed, "
        "high budget, bokeh, cinemascope, moody, epic, gorgeous, film grain, grainy",
        "nsfw, cartoon, graphic, text, painting, crayon, graphite, abstract, glitch, "
        "deformed, mutated, ugly, disfigured",
    ),
    Preset(
        "Photographic",
        "{prompt}, cinematic photo, 35mm photograph, film, bokeh, professional, 4k, "
        "highly detailed",
        "nsfw, drawing, painting, crayon, sketch, graphite, impressionist, noisy, blurry, "
        "soft, deformed, ugly",
    ),
    Preset(
        "Anime",
        "{prompt}, anime artwork, anime style, key visual, vibrant, studio anime, highly detailed",
        "nsfw, photo, deformed, black and white, realism, disfigured, low contrast",
    ),
    Preset(
        "Manga",
        "{prompt}, manga style, vibrant, high-energy, detailed, iconic, Japanese comic style",
        "nsfw, ugly, deformed, noisy, blurry, low contrast, realism, photorealistic, "
        "Western comic style",
    ),
    Preset(
        "Digital Art",
        "{prompt}, concept art, digital artwork, illustrative, painterly, matte painting, "
        "highly detailed",
        "nsfw, photo, photorealistic, realism, ugly",
    ),
    Preset(
        "Pixel art",
        "{prompt}, pixel-art, low-res, blocky, pixel art style, 8-bit graphics",
        "nsfw, sloppy, messy, blurry, noisy, highly detailed, ultra textured, photo, realistic",
    ),
    Preset(
        "Fantasy art",
        "{prompt}, ethereal fantasy concept art, magnificent, celestial, ethereal, painterly, "
        "epic, majestic, magical, fantasy art, cover art, dreamy",
        "nsfw, photographic, realistic, realism, 35mm film, dslr, cropped, frame, text, "
        "deformed, glitch, noise, noisy, off-center, deformed, cross-eyed, closed eyes, "
        "bad anatomy, ugly, disfigured, sloppy, duplicate, mutated, black and white",
    ),
    Preset(
        "Neonpunk",
        "{prompt}, neonpunk style, cyberpunk, vaporwave, neon, vibes, vibrant, "
        "stunningly beautiful, crisp, detailed, sleek, ultramodern, magenta highlights, "
        "dark purple shadows, high contrast, cinematic, ultra detailed, intricate, "
        "professional",
        "nsfw, painting, drawing, illustration, glitch, deformed, mutated, cross-eyed, ugly, "
        "disfigured",
    ),
    Preset(
        "3D Model",
        "{prompt}, professional 3d model, octane render, highly detailed, volumetric, "
        "dramatic lighting",
        "nsfw, ugly, deformed, noisy, low poly, blurry, painting",
    ),
)


def _lookup(kind: str, presets: Mapping[str, Preset], name: str) -> Preset:
    key = " ".join(name.split()).casefold()
    if key == "none":
        key = NO_PRESET.casefold()
    for preset in presets.values():
        if preset.name.casefold() == key:
            return preset
    valid = ", ".join(f'"{known}"' for known in presets)
    raise UnknownPresetError(
        "unknown {kind} preset {name}; choose one of: {choices}",
        kind=kind,
        name=repr(name),
        choices=valid,
    )


def get_quality_preset(name: str) -> Preset:
    """The quality preset called ``name`` (any case; ``None`` means ``(None)``)."""
    return _lookup("quality", QUALITY_PRESETS, name)


def get_style_preset(name: str) -> Preset:
    """The style preset called ``name`` (any case; ``None`` means ``(None)``)."""
    return _lookup("style", STYLE_PRESETS, name)
