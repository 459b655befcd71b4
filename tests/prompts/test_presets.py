"""The demo's presets, tag for tag, and their lookup."""

from __future__ import annotations

import dataclasses

import pytest

from bot.prompts import (
    DEFAULT_QUALITY,
    DEFAULT_STYLE,
    QUALITY_PRESETS,
    STYLE_PRESETS,
    Preset,
    PromptError,
    UnknownPresetError,
    get_quality_preset,
    get_style_preset,
)

SAMPLE = "1girl, souryuu asuka langley, neon genesis evangelion, solo, upper body, v, smile"

# (prompt suffix after "{prompt}, " or None for none, negative), from the demo's tables.
QUALITY: dict[str, tuple[str | None, str]] = {
    "(None)": (None, "nsfw, lowres"),
    "Standard v3.0": (
        "masterpiece, best quality",
        "nsfw, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, "
        "fewer digits, cropped, worst quality, low quality, normal quality, jpeg artifacts, "
        "signature, watermark, username, blurry, artist name",
    ),
    "Standard v3.1": (
        "masterpiece, best quality, very aesthetic, absurdres",
        "nsfw, lowres, (bad), text, error, fewer, extra, missing, worst quality, jpeg "
        "artifacts, low quality, watermark, unfinished, displeasing, oldest, early, chromatic "
        "aberration, signature, extra digits, artistic error, username, scan, [abstract]",
    ),
    "Light v3.1": (
        "(masterpiece), best quality, very aesthetic, perfect face",
        "nsfw, (low quality, worst quality:1.2), very displeasing, 3d, watermark, signature, "
        "ugly, poorly drawn",
    ),
    "Heavy v3.1": (
        "(masterpiece), (best quality), (ultra-detailed), very aesthetic, illustration, "
        "disheveled hair, perfect composition, moist skin, intricate details",
        "nsfw, longbody, lowres, bad anatomy, bad hands, missing fingers, pubic hair, extra "
        "digit, fewer digits, cropped, worst quality, low quality, very displeasing",
    ),
}

STYLE: dict[str, tuple[str | None, str]] = {
    "(None)": (None, ""),
    "Cinematic": (
        "cinematic still, emotional, harmonious, vignette, highly detailed, high budget, "
        "bokeh, cinemascope, moody, epic, gorgeous, film grain, grainy",
        "nsfw, cartoon, graphic, text, painting, crayon, graphite, abstract, glitch, "
        "deformed, mutated, ugly, disfigured",
    ),
    "Photographic": (
        "cinematic photo, 35mm photograph, film, bokeh, professional, 4k, highly detailed",
        "nsfw, drawing, painting, crayon, sketch, graphite, impressionist, noisy, blurry, "
        "soft, deformed, ugly",
    ),
    "Anime": (
        "anime artwork, anime style, key visual, vibrant, studio anime, highly detailed",
        "nsfw, photo, deformed, black and white, realism, disfigured, low contrast",
    ),
    "Manga": (
        "manga style, vibrant, high-energy, detailed, iconic, Japanese comic style",
        "nsfw, ugly, deformed, noisy, blurry, low contrast, realism, photorealistic, "
        "Western comic style",
    ),
    "Digital Art": (
        "concept art, digital artwork, illustrative, painterly, matte painting, highly detailed",
        "nsfw, photo, photorealistic, realism, ugly",
    ),
    "Pixel art": (
        "pixel-art, low-res, blocky, pixel art style, 8-bit graphics",
        "nsfw, sloppy, messy, blurry, noisy, highly detailed, ultra textured, photo, realistic",
    ),
    "Fantasy art": (
        "ethereal fantasy concept art, magnificent, celestial, ethereal, painterly, epic, "
        "majestic, magical, fantasy art, cover art, dreamy",
        "nsfw, photographic, realistic, realism, 35mm film, dslr, cropped, frame, text, "
        "deformed, glitch, noise, noisy, off-center, deformed, cross-eyed, closed eyes, "
        "bad anatomy, ugly, disfigured, sloppy, duplicate, mutated, black and white",
    ),
    "Neonpunk": (
        "neonpunk style, cyberpunk, vaporwave, neon, vibes, vibrant, stunningly beautiful, "
        "crisp, detailed, sleek, ultramodern, magenta highlights, dark purple shadows, "
        "high contrast, cinematic, ultra detailed, intricate, professional",
        "nsfw, painting, drawing, illustration, glitch, deformed, mutated, cross-eyed, ugly, "
        "disfigured",
    ),
    "3D Model": (
        "professional 3d model, octane render, highly detailed, volumetric, dramatic lighting",
        "nsfw, ugly, deformed, noisy, low poly, blurry, painting",
    ),
}


def expected_prompt(suffix: str | None, prompt: str) -> str:
    return prompt if suffix is None else f"{prompt}, {suffix}"


def test_names_and_order() -> None:
    assert list(QUALITY_PRESETS) == list(QUALITY)
    assert list(STYLE_PRESETS) == list(STYLE)
    assert all(name == preset.name for name, preset in QUALITY_PRESETS.items())
    assert all(name == preset.name for name, preset in STYLE_PRESETS.items())


def test_defaults() -> None:
    assert DEFAULT_QUALITY == "Standard v3.1"
    assert DEFAULT_STYLE == "(None)"


@pytest.mark.parametrize("name", list(QUALITY))
def test_quality_preset_output(name: str) -> None:
    suffix, negative = QUALITY[name]
    preset = QUALITY_PRESETS[name]
    assert preset.apply(SAMPLE) == expected_prompt(suffix, SAMPLE)
    assert preset.negative == negative
    assert preset.apply_negative("") == negative
    assert preset.apply_negative("bad hands, blurry") == f"{negative}, bad hands, blurry"


@pytest.mark.parametrize("name", list(STYLE))
def test_style_preset_output(name: str) -> None:
    suffix, negative = STYLE[name]
    preset = STYLE_PRESETS[name]
    assert preset.apply(SAMPLE) == expected_prompt(suffix, SAMPLE)
    assert preset.negative == negative
    assert preset.apply_negative("") == negative
    expected_negative = f"{negative}, bad hands" if negative else "bad hands"
    assert preset.apply_negative("bad hands") == expected_negative


@pytest.mark.parametrize("preset", [*QUALITY_PRESETS.values(), *STYLE_PRESETS.values()])
@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_prompt_is_not_wrapped(preset: Preset, blank: str) -> None:
    assert preset.apply(blank) == blank
    assert preset.apply_negative(blank) == preset.negative


def test_braces_in_the_prompt_are_text() -> None:
    preset = QUALITY_PRESETS["Standard v3.0"]
    assert preset.apply("{prompt} {0} {x}") == "{prompt} {0} {x}, masterpiece, best quality"


def test_presets_are_frozen() -> None:
    preset = QUALITY_PRESETS["Standard v3.1"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("Standard v3.1", "Standard v3.1"),
        ("standard V3.1", "Standard v3.1"),
        ("  heavy   v3.1 ", "Heavy v3.1"),
        ("None", "(None)"),
        ("none", "(None)"),
        ("(none)", "(None)"),
    ],
)
def test_quality_lookup(given: str, name: str) -> None:
    assert get_quality_preset(given) is QUALITY_PRESETS[name]


@pytest.mark.parametrize(
    ("given", "name"),
    [("anime", "Anime"), ("PIXEL ART", "Pixel art"), ("3d model", "3D Model"), ("None", "(None)")],
)
def test_style_lookup(given: str, name: str) -> None:
    assert get_style_preset(given) is STYLE_PRESETS[name]


def test_unknown_preset_lists_the_names() -> None:
    with pytest.raises(UnknownPresetError) as caught:
        get_quality_preset("Ultra v9")
    message = str(caught.value)
    assert "'Ultra v9'" in message
    assert all(f'"{name}"' in message for name in QUALITY)
    assert isinstance(caught.value, PromptError)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("name", ["", "Standard", "Anime"])
def test_unknown_quality_names(name: str) -> None:
    with pytest.raises(UnknownPresetError):
        get_quality_preset(name)


def test_unknown_style_lists_the_names() -> None:
    with pytest.raises(UnknownPresetError, match='"Neonpunk"'):
        get_style_preset("Vaporwave")
