"""The WD14 tagger: preprocessing, loading from a folder or the hub, rating, failures."""

from __future__ import annotations

import concurrent.futures
import importlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from PIL import Image
from pydantic import ValidationError

from bot.moderation import (
    Action,
    ClassifierSettings,
    GuildPolicy,
    ModerationSettings,
    RatingScores,
    channel_context,
    image_verdict,
)
from bot.moderation import classifier as classifier_module
from bot.moderation.classifier import (
    MINOR_TAGS,
    REQUIRED_MINOR_TAGS,
    SEXUAL_TAGS,
    ClassifierUnavailable,
    Tagger,
    prepare,
)
from bot.moderation.settings import ImageHardBlockSettings
from tests.support import tiny_tagger
from tests.support.tiny_tagger import flagged_image, safe_image, save_tiny_tagger

PLAIN = channel_context(False)
POLICY = GuildPolicy.from_settings(ModerationSettings())


@pytest.fixture(scope="module")
def red_tagger_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_tagger(tmp_path_factory.mktemp("tagger"), size=48)


@pytest.fixture(scope="module")
def tagger(red_tagger_dir: Path) -> Tagger:
    return Tagger.load(str(red_tagger_dir), threads=1)


# --- preprocessing ----------------------------------------------------------------------


def test_prepare_pads_to_a_white_square_in_bgr_float32() -> None:
    image = Image.new("RGB", (4, 2), (10, 20, 30))
    image.putpixel((0, 0), (255, 0, 0))
    batch = prepare(image, 4)  # already 4 wide: padded, not resized
    assert batch.shape == (1, 4, 4, 3)
    assert batch.dtype == np.float32
    assert batch.flags["C_CONTIGUOUS"]
    pixels = batch[0]
    assert (pixels[0] == 255).all()  # padding above: (4 - 2) // 2 = 1 row
    assert (pixels[3] == 255).all()  # and below
    assert pixels[1, 0].tolist() == [0.0, 0.0, 255.0]  # red, as B, G, R
    assert pixels[1, 1].tolist() == [30.0, 20.0, 10.0]
    assert pixels[2, 3].tolist() == [30.0, 20.0, 10.0]


def test_prepare_centres_with_the_odd_pixel_after() -> None:
    batch = prepare(Image.new("RGB", (1, 4), (0, 0, 0)), 4)[0]
    # (4 - 1) // 2 = 1 white column on the left, 2 on the right
    assert [float(batch[0, x, 0]) for x in range(4)] == [255.0, 0.0, 255.0, 255.0]


def test_prepare_composites_transparency_on_white() -> None:
    image = Image.new("RGBA", (2, 2), (0, 0, 0, 0))  # fully transparent black
    image.putpixel((1, 0), (255, 0, 0, 255))  # opaque red
    image.putpixel((0, 1), (0, 0, 255, 128))  # half-transparent blue
    pixels = prepare(image, 2)[0]
    assert pixels[0, 0].tolist() == [255.0, 255.0, 255.0]
    assert pixels[0, 1].tolist() == [0.0, 0.0, 255.0]
    blue, green, red = pixels[1, 0].tolist()
    assert blue == 255.0
    assert green == red == pytest.approx(255 * (1 - 128 / 255), abs=1)


@pytest.mark.parametrize("mode", ["L", "P", "LA", "RGB", "RGBA", "CMYK"])
def test_prepare_takes_any_common_mode(mode: str) -> None:
    image = Image.new("RGB", (30, 20), (200, 50, 50)).convert(mode)
    batch = prepare(image, 16)
    assert batch.shape == (1, 16, 16, 3)
    assert batch.dtype == np.float32


def test_prepare_resizes_with_bicubic() -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8), "RGB")
    square = Image.new("RGB", (50, 50), (255, 255, 255))
    square.paste(image, (0, 10))
    expected = np.asarray(square.resize((24, 24), Image.Resampling.BICUBIC), dtype=np.float32)
    nearest = np.asarray(square.resize((24, 24), Image.Resampling.NEAREST), dtype=np.float32)
    batch = prepare(image, 24)[0]
    assert np.array_equal(batch, expected[:, :, ::-1])
    assert not np.array_equal(batch, nearest[:, :, ::-1])


def test_prepare_rejects_a_bad_size() -> None:
    with pytest.raises(ValueError, match="size"):
        prepare(Image.new("RGB", (2, 2)), 0)


# --- rating -----------------------------------------------------------------------------


def test_input_size_comes_from_the_graph(red_tagger_dir: Path, tmp_path: Path) -> None:
    assert Tagger.load(str(red_tagger_dir)).size == 48
    assert Tagger.load(str(save_tiny_tagger(tmp_path / "t", size=20))).size == 20


def test_red_image_is_explicit_and_plain_image_is_general(tagger: Tagger) -> None:
    flagged = tagger.rate(flagged_image())
    assert flagged.explicit > 0.99
    assert flagged.general < 0.01
    assert flagged.rating == "explicit"
    safe = tagger.rate(safe_image())
    assert safe.general > 0.99
    assert safe.explicit < 0.01
    white = tagger.rate(Image.new("RGB", (300, 200), "white"))
    assert white.rating == "general"


def test_ratings_are_found_by_category_not_position(tmp_path: Path) -> None:
    folder = save_tiny_tagger(
        tmp_path / "t", scores={"questionable": 0.7, "sensitive": 0.2}, ratings_last=True
    )
    header, *rows = (folder / "selected_tags.csv").read_text(encoding="utf-8").splitlines()
    assert header == "tag_id,name,category,count"
    assert rows[0].split(",")[1:3] == ["1girl", "0"]
    scores = Tagger.load(str(folder)).rate(safe_image())
    assert scores.questionable == pytest.approx(0.7, abs=1e-4)
    assert scores.sensitive == pytest.approx(0.2, abs=1e-4)
    assert scores.general == pytest.approx(0.01, abs=1e-4)


def test_verdicts_from_the_classifier(tagger: Tagger) -> None:
    withheld = image_verdict(tagger.rate(flagged_image()), PLAIN, POLICY)
    assert withheld.action is Action.WITHHOLD
    assert str(withheld.reason).startswith("withheld: rated explicit")
    assert image_verdict(tagger.rate(safe_image()), PLAIN, POLICY).action is Action.POST


def test_missing_classifier_withholds_outside_age_restricted_channels(tmp_path: Path) -> None:
    source = str(tmp_path / "nowhere")
    with pytest.raises(ClassifierUnavailable) as info:
        Tagger.load(source)
    verdict = image_verdict(None, PLAIN, POLICY, error=str(info.value))
    assert verdict.action is Action.WITHHOLD
    assert source in str(verdict.reason)
    assert image_verdict(None, channel_context(True), POLICY).posted


def test_rate_is_safe_from_several_threads(tagger: Tagger) -> None:
    images = [flagged_image(), safe_image()] * 8
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        ratings = list(pool.map(lambda image: tagger.rate(image).rating, images))
    assert ratings == ["explicit", "general"] * 8


def test_session_uses_the_configured_threads(red_tagger_dir: Path) -> None:
    settings = ClassifierSettings(source=str(red_tagger_dir), threads=3)
    tagger = Tagger.from_settings(settings)
    options = tagger._session.get_session_options()
    assert options.intra_op_num_threads == 3
    assert options.inter_op_num_threads == 1
    assert tagger._session.get_providers() == ["CPUExecutionProvider"]


def test_an_onnx_file_path_works_too(red_tagger_dir: Path) -> None:
    assert Tagger.load(str(red_tagger_dir / "model.onnx")).size == 48


# --- loading from the hub ---------------------------------------------------------------


def test_hub_repo_id_downloads_both_files(
    red_tagger_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str, dict[str, Any]]] = []

    def fake_download(repo_id: str, filename: str, **options: Any) -> Path:
        calls.append((repo_id, filename, options))
        return red_tagger_dir / filename

    monkeypatch.setattr(classifier_module, "_hub_download", fake_download)
    tagger = Tagger.load("SmilingWolf/wd-vit-tagger-v3", revision="v2.0", cache_dir="/c")
    assert tagger.size == 48
    assert tagger.source == "SmilingWolf/wd-vit-tagger-v3"
    options = {"revision": "v2.0", "cache_dir": "/c", "offline": False}
    assert calls == [
        ("SmilingWolf/wd-vit-tagger-v3", "model.onnx", options),
        ("SmilingWolf/wd-vit-tagger-v3", "selected_tags.csv", options),
    ]


def test_hub_repo_missing_from_the_offline_cache(tmp_path: Path) -> None:
    with pytest.raises(ClassifierUnavailable) as info:
        Tagger.load("SmilingWolf/wd-vit-tagger-v3", cache_dir=tmp_path, offline=True)
    message = str(info.value)
    assert message.startswith("image classifier 'SmilingWolf/wd-vit-tagger-v3': ")
    assert "cannot get model.onnx in the local cache (offline)" in message
    assert info.value.source == "SmilingWolf/wd-vit-tagger-v3"


# --- failures name the source -----------------------------------------------------------


def _copy(folder: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("model.onnx", "selected_tags.csv"):
        (target / name).write_bytes((folder / name).read_bytes())
    return target


def _dynamic_size(folder: Path) -> None:
    model = onnx.load(str(folder / "model.onnx"))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[1].dim_param = "height"
    dims[2].dim_param = "width"
    onnx.save(model, str(folder / "model.onnx"))


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda d: (d / "model.onnx").unlink(), "model.onnx not found"),
        (lambda d: (d / "selected_tags.csv").unlink(), "selected_tags.csv not found"),
        (lambda d: (d / "model.onnx").write_bytes(b"not a model"), "cannot load"),
        (lambda d: (d / "selected_tags.csv").write_text("a,b\n1,2\n"), "not a tag list"),
        (
            lambda d: (d / "selected_tags.csv").write_text(
                "tag_id,name,category,count\n1,general,9,1\n2,explicit,9,1\n"
            ),
            "has the rating tags explicit, general (category 9); expected general, "
            "sensitive, questionable, explicit",
        ),
        (
            lambda d: (d / "selected_tags.csv").write_text(
                "tag_id,name,category,count\n1,general,nine,1\n"
            ),
            "category 'nine' is not a number",
        ),
        (
            lambda d: (d / "selected_tags.csv").write_text(
                "tag_id,name,category,count\n"
                "1,general,9,1\n2,sensitive,9,1\n3,questionable,9,1\n4,explicit,9,1\n"
            ),
            "tags but selected_tags.csv lists 4",
        ),
        (_dynamic_size, "expected an input of shape [N, size, size, 3] with a fixed size"),
    ],
)
def test_broken_classifier_is_unavailable(
    red_tagger_dir: Path, tmp_path: Path, damage: Any, problem: str
) -> None:
    folder = _copy(red_tagger_dir, tmp_path / "broken")
    damage(folder)
    with pytest.raises(ClassifierUnavailable) as info:
        Tagger.load(str(folder))
    assert str(info.value).startswith(f"image classifier {str(folder)!r}: ")
    assert problem in str(info.value)


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("", "no classifier is configured"),
        ("./no/such/tagger", "no such folder or file"),
        ("/no/such/tagger", "no such folder or file"),
    ],
)
def test_unusable_sources(source: str, problem: str) -> None:
    with pytest.raises(ClassifierUnavailable, match=problem):
        Tagger.load(source)


def test_a_plain_file_is_not_a_classifier(tmp_path: Path) -> None:
    path = tmp_path / "tagger.txt"
    path.write_text("x")
    with pytest.raises(ClassifierUnavailable, match="expected a folder"):
        Tagger.load(str(path))


def test_cuda_without_onnxruntime_gpu(red_tagger_dir: Path) -> None:
    onnxruntime: Any = importlib.import_module("onnxruntime")
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(ClassifierUnavailable, match="onnxruntime-gpu"):
        Tagger.load(str(red_tagger_dir), device="cuda")
    assert Tagger.load(str(red_tagger_dir), device="auto").size == 48


def test_run_failure_is_unavailable(tagger: Tagger, monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def run(self, *args: object) -> object:
            raise RuntimeError("out of memory")

    monkeypatch.setattr(tagger, "_session", Broken())
    with pytest.raises(ClassifierUnavailable, match="failed on an image: RuntimeError"):
        tagger.rate(safe_image())


# --- the image-side hard block ------------------------------------------------------------

AGE_RESTRICTED = channel_context(True)
THREAD = channel_context(False, parent_nsfw=False)
AGE_RESTRICTED_THREAD = channel_context(False, parent_nsfw=True)
DM = channel_context(False, is_dm=True)
DM_POLICY = GuildPolicy.from_settings(ModerationSettings(dm_allowed=True))
EVERY_CHANNEL = [
    (PLAIN, POLICY),
    (THREAD, POLICY),
    (AGE_RESTRICTED, POLICY),
    (AGE_RESTRICTED_THREAD, POLICY),
    (DM, DM_POLICY),
    (DM, POLICY),
]
LENIENT = GuildPolicy.from_settings(
    ModerationSettings(questionable_threshold=1.0, explicit_threshold=1.0, fail_closed=False)
)


def hard_block_tagger(tmp_path: Path, name: str, **options: Any) -> Tagger:
    return Tagger.load(str(save_tiny_tagger(tmp_path / name, **options)))


def test_the_tiny_tag_list_is_a_subset_of_the_bots_lists() -> None:
    # The tiny tagger stands for the real tag list: every minor and sexual tag it lists is
    # one the bot watches, and the ones it leaves out (petite, ...) are not watched.
    assert set(tiny_tagger.MINOR_TAGS) <= set(MINOR_TAGS)
    assert set(tiny_tagger.SEXUAL_TAGS) <= set(SEXUAL_TAGS)
    assert set(REQUIRED_MINOR_TAGS) <= set(tiny_tagger.MINOR_TAGS)
    assert not set(tiny_tagger.NEIGHBOUR_TAGS) & {*MINOR_TAGS, *SEXUAL_TAGS}


def test_the_tagger_finds_the_hard_block_tags_by_name(tagger: Tagger) -> None:
    assert tagger.missing_tags == ()
    assert tagger.problem is None
    assert set(tagger.minor_tags) == set(tiny_tagger.MINOR_TAGS)
    assert set(tagger.sexual_tags) == set(tiny_tagger.SEXUAL_TAGS)


def test_minor_and_sexual_signals_follow_the_thresholds(tmp_path: Path) -> None:
    tagger = hard_block_tagger(
        tmp_path,
        "t",
        scores={"questionable": 0.32, "explicit": 0.1},
        tags={"loli": 0.9, "child": 0.3, "nude": 0.5, "petite": 0.99, "cum": 0.2},
    )
    scores = tagger.rate(safe_image())
    assert scores.minors_checked
    assert set(scores.minors) == {"loli"}  # child 0.3 is under 0.35; petite is no minor tag
    assert scores.minors["loli"] == pytest.approx(0.9, abs=1e-4)
    assert set(scores.sexual) == {"rating:questionable", "nude"}  # explicit 0.1 < 0.2
    assert scores.hard_block

    stricter = ImageHardBlockSettings(
        minor_threshold=0.25,
        sexual_tag_threshold=0.15,
        questionable_threshold=0.5,
        extra_minor_tags=["Petite"],
    )
    strict = Tagger.load(str(tmp_path / "t"), hard_block=stricter).rate(safe_image())
    assert set(strict.minors) == {"loli", "child", "petite"}
    assert set(strict.sexual) == {"nude", "cum"}


def test_a_minor_alone_or_sexual_content_alone_is_no_hard_block(tmp_path: Path) -> None:
    family = hard_block_tagger(
        tmp_path, "family", scores={"general": 0.95}, tags={"child": 0.95, "baby": 0.8}
    ).rate(safe_image())
    assert family.minors
    assert not family.sexual
    assert image_verdict(family, PLAIN, POLICY).action is Action.POST
    adult = hard_block_tagger(
        tmp_path, "adult", scores={"explicit": 0.95}, tags={"nude": 0.9}
    ).rate(safe_image())
    assert adult.sexual
    assert not adult.minors
    verdict = image_verdict(adult, AGE_RESTRICTED, POLICY)
    assert (verdict.action, verdict.hard_block) == (Action.SPOILER, False)


@pytest.mark.parametrize(("channel", "policy"), EVERY_CHANNEL)
@pytest.mark.parametrize("guild_policy", ["default", "lenient"])
def test_sexual_image_of_a_minor_is_a_hard_block_everywhere(
    tmp_path: Path, channel: Any, policy: GuildPolicy, guild_policy: str
) -> None:
    tagger = hard_block_tagger(tmp_path, "t", scores={"explicit": 0.9}, tags={"shota": 0.8})
    scores = tagger.rate(safe_image())
    if guild_policy == "lenient":  # nothing a server can set lets it through
        policy = LENIENT
    verdict = image_verdict(scores, channel, policy)
    assert verdict.action is Action.WITHHOLD
    assert verdict.hard_block
    assert verdict.quarantined
    assert not verdict.forwardable
    assert verdict.event_kind == "image_hard_blocked"
    assert str(verdict.reason).startswith("hard block: the image check sees sexual content")
    assert "rating:explicit 0.90" in str(verdict.reason)
    assert "shota 0.80" in str(verdict.reason)


def test_ordinary_withheld_images_stay_forwardable(tagger: Tagger) -> None:
    verdict = image_verdict(tagger.rate(flagged_image()), PLAIN, POLICY)
    assert verdict.action is Action.WITHHOLD
    assert verdict.forwardable
    assert not verdict.hard_block
    assert verdict.event_kind == "image_withheld"


def test_a_tagger_without_minor_tags_fails_closed_for_sexual_images(tmp_path: Path) -> None:
    tagger = hard_block_tagger(tmp_path, "old", hard_block_tags=False)
    assert tagger.missing_tags == REQUIRED_MINOR_TAGS
    assert tagger.problem is not None
    assert "lacks the tags loli, shota, child" in tagger.problem
    flagged = tagger.rate(flagged_image())  # red: explicit 0.998
    assert not flagged.minors_checked
    for channel, policy in [*EVERY_CHANNEL, (AGE_RESTRICTED, LENIENT)]:
        verdict = image_verdict(flagged, channel, policy)
        assert verdict.action is Action.WITHHOLD, channel
        assert verdict.quarantined
        assert not verdict.hard_block
        assert verdict.event_kind == "image_withheld"
    assert "cannot check it for minors" in str(
        image_verdict(flagged, AGE_RESTRICTED, POLICY).reason
    )
    # Images without a sexual signal are still posted as usual.
    safe = tagger.rate(safe_image())
    assert image_verdict(safe, AGE_RESTRICTED, POLICY).posted
    assert image_verdict(safe, PLAIN, POLICY).posted


def test_hard_block_settings_cannot_switch_it_off() -> None:
    for key in (
        "minor_threshold",
        "sexual_tag_threshold",
        "questionable_threshold",
        "explicit_threshold",
    ):
        with pytest.raises(ValidationError, match=r"less than or equal to 0\.6"):
            ImageHardBlockSettings.model_validate({key: 0.99})
    with pytest.raises(ValidationError, match="extra"):
        ImageHardBlockSettings.model_validate({"minor_tags": []})
    settings = ClassifierSettings.model_validate(
        {"hard_block": {"extra_minor_tags": ["Aged Down "]}}
    )
    assert settings.hard_block.extra_minor_tags == ["aged_down"]


def test_signals_are_stored_with_the_scores() -> None:
    scores = RatingScores(
        0.1, 0.1, 0.2, 0.9, minors={"loli": 0.8}, sexual={"rating:explicit": 0.9, "nude": 0.7}
    )
    stored = scores.as_dict()
    assert stored["minor:loli"] == 0.8
    assert stored["sexual:nude"] == 0.7
    assert RatingScores.from_dict(stored) == scores
    assert RatingScores.from_dict(stored).hard_block
