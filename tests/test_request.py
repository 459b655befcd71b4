"""Request validation: every refusal says what to change."""

from __future__ import annotations

import pytest

from bot.config import EngineSettings
from bot.request import (
    ASPECTS,
    MAX_SEED,
    GenerationRequest,
    HiresOptions,
    RequestError,
    find_aspect,
    validate_request,
)

BOUNDS = EngineSettings()


def test_defaults_are_valid_and_sampler_names_are_made_canonical() -> None:
    request = validate_request(GenerationRequest(prompt="1girl", sampler="euler A"), BOUNDS)
    assert request.sampler == "Euler a"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prompt": "  "}, "the prompt is empty"),
        ({"width": 830}, "width must be a multiple of 8 (got 830)"),
        ({"height": 256}, "height must be between 512 and 2048 (got 256)"),
        ({"width": 2048, "height": 2048}, "2048x2048 is too large"),
        ({"steps": 0}, "steps must be between 1 and 50 (got 0)"),
        ({"steps": 51}, "steps must be between 1 and 50"),
        ({"cfg": 0.5}, "CFG scale must be between 1 and 30"),
        ({"count": 5}, "count must be between 1 and 4 (got 5)"),
        ({"seed": MAX_SEED + 1}, "seed must be between 0 and 2147483647"),
        ({"sampler": "LMS"}, "unknown sampler 'LMS'"),
        ({"hires": HiresOptions(scale=2.0)}, "hires scale must be between 1.0 and 1.5"),
    ],
)
def test_invalid_requests_say_what_is_wrong(changes: dict[str, object], message: str) -> None:
    with pytest.raises(RequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_request(GenerationRequest(**{"prompt": "1girl", **changes}), BOUNDS)  # type: ignore[arg-type]


def test_random_seed_and_per_image_seeds() -> None:
    request = GenerationRequest(prompt="1girl", count=3).with_seed()
    assert request.seed is not None
    assert 0 <= request.seed <= MAX_SEED
    assert request.seeds() == [(request.seed + i) % (MAX_SEED + 1) for i in range(3)]
    fixed = GenerationRequest(prompt="1girl", seed=MAX_SEED, count=2)
    assert fixed.with_seed().seeds() == [MAX_SEED, 0]


def test_the_nine_card_resolutions() -> None:
    assert [a.size for a in ASPECTS] == [
        "1024x1024",
        "1152x896",
        "896x1152",
        "1216x832",
        "832x1216",
        "1344x768",
        "768x1344",
        "1536x640",
        "640x1536",
    ]
    assert find_aspect("832x1216").label == "Portrait 13:19"
    assert find_aspect("13:19").size == "832x1216"
    assert find_aspect("Portrait 13:19 (832x1216)").size == "832x1216"
    with pytest.raises(RequestError, match="unknown aspect '800x800'"):
        find_aspect("800x800")


def test_hires_output_is_bounded_by_max_pixels() -> None:
    bounds = EngineSettings(max_pixels=1536 * 1536)
    for aspect in ASPECTS:  # every card size with the demo's 1.5 hires fits the default
        validate_request(
            GenerationRequest(
                prompt="x", width=aspect.width, height=aspect.height, hires=HiresOptions(scale=1.5)
            ),
            bounds,
        )
    small = EngineSettings(max_pixels=1024 * 1024)
    with pytest.raises(RequestError, match="the hires pass would make 1536x1536"):
        validate_request(
            GenerationRequest(prompt="x", width=1024, height=1024, hires=HiresOptions()), small
        )
