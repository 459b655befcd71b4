"""build_prompt: wildcards, hygiene, rating/year, style then quality, negatives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.prompts import (
    BuiltPrompt,
    PromptError,
    UnknownPresetError,
    UnknownTagOptionError,
    WildcardFolder,
    WildcardsNotConfiguredError,
    build_prompt,
)
from tests.prompts.test_presets import QUALITY, SAMPLE, STYLE, expected_prompt

STANDARD_31 = ", masterpiece, best quality, very aesthetic, absurdres"
STANDARD_31_NEGATIVE = QUALITY["Standard v3.1"][1]


def test_defaults_are_standard_v31_and_no_style() -> None:
    built = build_prompt(SAMPLE, seed=1)
    assert built == BuiltPrompt(
        prompt=SAMPLE + STANDARD_31,
        negative_prompt=STANDARD_31_NEGATIVE,
        quality_preset="Standard v3.1",
        style_preset="(None)",
        rating=None,
        year=None,
        user_prompt=SAMPLE,
        user_negative="",
    )


@pytest.mark.parametrize("quality", list(QUALITY))
@pytest.mark.parametrize("style", list(STYLE))
def test_style_first_then_quality(quality: str, style: str) -> None:
    quality_suffix, quality_negative = QUALITY[quality]
    style_suffix, style_negative = STYLE[style]
    built = build_prompt(SAMPLE, "bad hands", quality=quality, style=style, seed=1)
    assert built.prompt == expected_prompt(quality_suffix, expected_prompt(style_suffix, SAMPLE))
    parts = [quality_negative, style_negative, "bad hands"]
    assert built.negative_prompt == ", ".join(part for part in parts if part)
    assert (built.quality_preset, built.style_preset) == (quality, style)


@pytest.mark.parametrize("quality", list(QUALITY))
@pytest.mark.parametrize("style", ["(None)", "Anime"])
def test_empty_prompt_gets_no_preset_tags(quality: str, style: str) -> None:
    built = build_prompt("  , ", "", quality=quality, style=style, seed=1)
    assert built.prompt == ""
    parts = [QUALITY[quality][1], STYLE[style][1]]
    assert built.negative_prompt == ", ".join(part for part in parts if part)


def test_example_from_the_model_card() -> None:
    built = build_prompt(
        "1girl, souryuu_asuka_langley,  neon genesis evangelion, solo,, 1girl",
        "",
        quality="Standard v3.0",
        style="Anime",
        rating="safe",
        year="newest",
        seed=1,
    )
    assert built.prompt == (
        "1girl, souryuu asuka langley, neon genesis evangelion, solo, safe, newest, "
        "anime artwork, anime style, key visual, vibrant, studio anime, highly detailed, "
        "masterpiece, best quality"
    )
    assert built.negative_prompt == QUALITY["Standard v3.0"][1] + ", " + STYLE["Anime"][1]
    assert built.user_prompt == (
        "1girl, souryuu asuka langley, neon genesis evangelion, solo, safe, newest"
    )


@pytest.mark.parametrize(
    ("prompt", "rating", "year", "user_prompt"),
    [
        ("1girl", "general", None, "1girl, safe"),
        ("1girl", "sensitive", "mid", "1girl, sensitive, mid"),
        ("1girl", "explicit", None, "1girl, explicit, nsfw"),
        ("1girl, nsfw", "explicit", None, "1girl, nsfw, explicit"),
        ("1girl, explicit, nsfw", "explicit", None, "1girl, explicit, nsfw"),
        ("1girl, (newest:1.2)", None, "newest", "1girl, (newest:1.2)"),
        ("1girl, Oldest", None, "oldest", "1girl, Oldest"),
        ("", "safe", "recent", "safe, recent"),
    ],
)
def test_rating_and_year_tags(
    prompt: str, rating: str | None, year: str | None, user_prompt: str
) -> None:
    built = build_prompt(prompt, quality="(None)", rating=rating, year=year, seed=1)
    assert built.user_prompt == user_prompt
    assert built.prompt == user_prompt


def test_rating_and_year_come_before_the_presets() -> None:
    built = build_prompt("1girl", rating="safe", year="newest", style="Manga", seed=1)
    assert built.prompt.startswith("1girl, safe, newest, manga style, ")
    assert built.prompt.endswith(STANDARD_31)
    assert (built.rating, built.year) == ("safe", "newest")


def test_canonical_option_names() -> None:
    built = build_prompt("1girl", quality="heavy V3.1", style="none", rating="General", seed=1)
    assert (built.quality_preset, built.style_preset, built.rating) == (
        "Heavy v3.1",
        "(None)",
        "safe",
    )


def test_negative_is_cleaned_and_follows_the_presets() -> None:
    built = build_prompt("1girl", "  bad_hands,, blurry , blurry ", quality="(None)", seed=1)
    assert built.user_negative == "bad hands, blurry"
    assert built.negative_prompt == "nsfw, lowres, bad hands, blurry"


def test_nsfw_negative_is_dropped_only_where_allowed() -> None:
    forced = build_prompt("1girl", "nsfw, blurry", style="Cinematic", seed=1)
    assert forced.negative_prompt.startswith("nsfw, lowres, (bad)")
    allowed = build_prompt("1girl", "nsfw, blurry", style="Cinematic", seed=1, allow_nsfw=True)
    assert allowed.negative_prompt == (
        STANDARD_31_NEGATIVE.removeprefix("nsfw, ")
        + ", "
        + STYLE["Cinematic"][1].removeprefix("nsfw, ")
        + ", nsfw, blurry"  # the user's own negative is theirs
    )
    plain = build_prompt("1girl", quality="(None)", seed=1, allow_nsfw=True)
    assert plain.negative_prompt == "lowres"
    light = build_prompt("1girl", quality="Light v3.1", seed=1, allow_nsfw=True)
    assert light.negative_prompt == (
        "(low quality, worst quality:1.2), very displeasing, 3d, watermark, signature, "
        "ugly, poorly drawn"
    )


def test_wildcards_are_expanded_then_cleaned(tmp_path: Path) -> None:
    (tmp_path / "hair.txt").write_text("long_hair\nshort_hair\n", encoding="utf-8")
    (tmp_path / "bad.txt").write_text("blurry\n", encoding="utf-8")
    folder = WildcardFolder(tmp_path)
    built = build_prompt("1girl, __hair__", "__bad__", quality="(None)", wildcards=folder, seed=5)
    assert built.prompt in {"1girl, long hair", "1girl, short hair"}
    assert built.negative_prompt == "nsfw, lowres, blurry"
    again = build_prompt("1girl, __hair__", "__bad__", quality="(None)", wildcards=folder, seed=5)
    assert again == built


def test_wildcard_without_a_folder_is_an_error() -> None:
    with pytest.raises(WildcardsNotConfiguredError):
        build_prompt("1girl, __hair__", seed=1)
    with pytest.raises(WildcardsNotConfiguredError):
        build_prompt("1girl", "__bad__", seed=1)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"quality": "Ultra"}, UnknownPresetError),
        ({"style": "Watercolor"}, UnknownPresetError),
        ({"rating": "questionable"}, UnknownTagOptionError),
        ({"year": "2024"}, UnknownTagOptionError),
    ],
)
def test_unknown_options(options: dict[str, str], error: type[PromptError]) -> None:
    with pytest.raises(error):
        build_prompt("1girl", seed=1, **options)  # type: ignore[arg-type]


def test_the_package_does_not_import_torch() -> None:
    code = "import sys, bot.prompts; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
