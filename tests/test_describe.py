"""/describe's core: tag order, thresholds, hygiene, the rating last, who sees what, bounds."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from bot.attachments import sniff
from bot.describe import (
    Description,
    ImageRejected,
    describe_bytes,
    describe_image,
    load_image,
    order_tags,
    visibility,
)
from bot.moderation.channels import ChannelContext
from bot.moderation.classifier import Tagger, TagScores
from bot.moderation.guild_policy import GuildPolicy
from bot.moderation.image_check import RatingScores
from tests.support.tiny_tagger import flagged_image, safe_image, save_tiny_tagger

SAFE = RatingScores(0.9, 0.05, 0.02, 0.01)
PLAIN = ChannelContext(False)
RESTRICTED = ChannelContext(True)


def found(
    general: dict[str, float],
    character: dict[str, float] | None = None,
    ratings: RatingScores = SAFE,
    copyright: dict[str, float] | None = None,
) -> TagScores:
    def ordered(tags: dict[str, float] | None) -> tuple[tuple[str, float], ...]:
        return tuple(sorted((tags or {}).items(), key=lambda item: -item[1]))

    return TagScores(ratings, ordered(general), ordered(character), ordered(copyright))


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_people_then_characters_then_series_then_general_by_score_then_the_rating() -> None:
    description = order_tags(
        found(
            {
                "smile": 0.6,
                "solo": 0.9,
                "1boy": 0.5,
                "long_hair": 0.8,
                "multiple_girls": 0.55,
                "2girls": 0.7,
                "^_^": 0.4,
            },
            {"ganyu_(genshin_impact)": 0.95, "artoria_pendragon_(lancer)_(fate)": 0.9},
        ),
        max_tags=40,
    )
    assert description.prompt == (
        "2girls, multiple girls, 1boy, "
        r"ganyu \(genshin impact\), artoria pendragon \(lancer\) \(fate\), "
        "genshin impact, fate, "
        "solo, long hair, smile, ^_^, "
        "safe"
    )
    assert description.people == ("2girls", "multiple girls", "1boy")
    assert description.series == ("genshin impact", "fate")


@pytest.mark.parametrize(
    ("ratings", "last"),
    [
        (RatingScores(0.9, 0.1, 0.0, 0.0), "safe"),
        (RatingScores(0.1, 0.8, 0.1, 0.0), "sensitive"),
        (RatingScores(0.1, 0.2, 0.7, 0.1), "nsfw"),
        (RatingScores(0.0, 0.0, 0.3, 0.9), "explicit, nsfw"),
    ],
)
def test_the_rating_is_last_in_animagines_words(ratings: RatingScores, last: str) -> None:
    description = order_tags(found({"1girl": 0.9, "nsfw": 0.5}, ratings=ratings), max_tags=5)
    assert description.prompt.endswith(f", {last}")
    assert description.prompt.startswith("1girl, ")
    assert description.prompt.count("nsfw") == last.count("nsfw")  # never twice


def test_a_character_without_a_qualifier_gives_no_series_and_copyright_tags_count() -> None:
    description = order_tags(
        found(
            {"1girl": 0.9, "vocaloid": 0.5, "twintails": 0.7},
            {"hatsune_miku": 0.97, "kafuu_chino_(cosplay)": 0.9},
            copyright={"vocaloid": 0.8},
        ),
        max_tags=10,
    )
    assert description.characters == ("hatsune miku", r"kafuu chino \(cosplay\)")
    assert description.series == ("vocaloid",)
    assert description.general == ("twintails",)  # the series is not repeated


def test_max_tags_keeps_the_highest_general_tags() -> None:
    tags = {f"tag_{n}": 0.4 + n / 100 for n in range(10)}
    assert order_tags(found(tags), max_tags=3).general == ("tag 9", "tag 8", "tag 7")


def test_the_tiny_tagger_thresholds_and_order(tmp_path: Path) -> None:
    folder = save_tiny_tagger(
        tmp_path / "tagger",
        scores={"general": 0.9},
        extra_tags={
            "long_hair": (0, 0.8),
            "looking_at_viewer": (0, 0.5),
            "faint_tag": (0, 0.3),
            "ganyu_(genshin_impact)": (4, 0.95),
            "weak_character_(series)": (4, 0.6),
        },
    )
    tagger = Tagger.load(str(folder))
    description = describe_image(
        tagger, safe_image(), general_threshold=0.35, character_threshold=0.85, max_tags=40
    )
    # 1girl scores 0.88 and solo 0.73 in the tiny tagger; hatsune_miku (character) 0.05.
    assert description.prompt == (
        r"1girl, ganyu \(genshin impact\), genshin impact, long hair, solo, "
        "looking at viewer, safe"
    )
    looser = describe_image(
        tagger, safe_image(), general_threshold=0.2, character_threshold=0.5, max_tags=40
    )
    assert "faint tag" in looser.general
    assert r"weak character \(series\)" in looser.characters
    assert "series" in looser.series


def test_sexual_tags_follow_the_image_and_the_rating_scores_come_along(tmp_path: Path) -> None:
    tagger = Tagger.load(
        str(save_tiny_tagger(tmp_path / "tagger", tags={"nude": 0.01}, red_tags=("nude",)))
    )
    red = describe_image(
        tagger, flagged_image(), general_threshold=0.35, character_threshold=0.85, max_tags=40
    )
    assert red.rating == "explicit"
    assert "nude" in red.general
    assert red.prompt.endswith(", explicit, nsfw")
    assert red.scores == tagger.rate(flagged_image())
    blue = describe_image(
        tagger, safe_image(), general_threshold=0.35, character_threshold=0.85, max_tags=40
    )
    assert "nude" not in blue.tags
    assert blue.rating == "general"


def describe(ratings: RatingScores, *tags: str) -> Description:
    return order_tags(found(dict.fromkeys(("1girl", *tags), 0.9), ratings=ratings), max_tags=40)


def test_plain_channels_get_no_tags_of_a_questionable_or_explicit_image() -> None:
    policy = GuildPolicy()
    explicit = describe(RatingScores(0.0, 0.0, 0.1, 0.95, sexual={"nude": 0.9}), "nude")
    answer = visibility(explicit, PLAIN, policy, sexual_tags=("nude",))
    assert not answer.shown
    assert "rated explicit (0.95)" in str(answer.reason)
    assert "age-restricted" in str(answer.reason)
    assert visibility(explicit, ChannelContext(False, is_dm=True), policy).code == "dm"
    shown = visibility(explicit, RESTRICTED, policy, sexual_tags=("nude",))
    assert shown.description == explicit
    # Questionable as the highest rating, though under the server's threshold.
    nsfw = describe(RatingScores(0.2, 0.2, 0.4, 0.1))
    assert not visibility(nsfw, PLAIN, policy).shown


def test_plain_channels_leave_sexual_tags_out_of_a_safe_image() -> None:
    description = describe(SAFE, "pantyshot", "smile")
    answer = visibility(description, PLAIN, GuildPolicy(), sexual_tags=("pantyshot",))
    assert answer.description is not None
    assert answer.description.prompt == "1girl, smile, safe"
    assert answer.left_out == ("pantyshot",)
    # A sexual signal the tagger reported is enough to show nothing.
    flagged = describe(RatingScores(0.9, 0.1, 0.0, 0.0, sexual={"nude": 0.7}), "nude")
    assert visibility(flagged, PLAIN, GuildPolicy()).code == "sexual"


def test_the_hard_block_shows_nothing_anywhere() -> None:
    scores = RatingScores(0.0, 0.1, 0.2, 0.9, minors={"loli": 0.8}, sexual={"nude": 0.9})
    description = describe(scores, "loli", "nude")
    for channel in (PLAIN, RESTRICTED):
        answer = visibility(description, channel, GuildPolicy())
        assert answer.code == "hard_block"
        assert answer.description is None
        assert "nude" not in str(answer.reason)
        assert "loli" not in str(answer.reason)
    unchecked = RatingScores(0.0, 0.1, 0.2, 0.9, sexual={"nude": 0.9}, minors_checked=False)
    answer = visibility(describe(unchecked, "nude"), RESTRICTED, GuildPolicy())
    assert answer.code == "sexual_unchecked"


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (its data is a few bytes)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))


def test_load_image_bounds() -> None:
    bounds = {"max_bytes": 1_000_000, "max_pixels": 1_000_000}
    image = load_image(png(safe_image(40, 30)), **bounds)
    assert image.size == (40, 30)
    for kind in ("JPEG", "WEBP"):
        out = io.BytesIO()
        safe_image(20, 20).save(out, format=kind)
        assert sniff(out.getvalue()) == kind
        assert load_image(out.getvalue(), **bounds).size == (20, 20)
    with pytest.raises(ImageRejected, match=r"too large \(0\.0 MiB\): at most 0\.0 MiB"):
        load_image(png(safe_image()), max_bytes=100, max_pixels=1_000_000)
    with pytest.raises(ImageRejected, match="is a GIF: attach a PNG, JPEG or WebP"):
        load_image(b"GIF89a" + b"\0" * 100, **bounds)
    with pytest.raises(ImageRejected, match="not an image the bot reads"):
        load_image(b"%PDF-1.4 hello", **bounds)
    with pytest.raises(ImageRejected, match=r"2000x3000 pixels: at most 1\.0 megapixels"):
        load_image(_png_header(2000, 3000), **bounds)
    huge = {"max_bytes": 1_000_000, "max_pixels": 10**12}  # PIL's bomb check still holds
    with pytest.raises(ImageRejected, match="decompression bomb"):
        load_image(_png_header(100_000, 100_000), **huge)
    with pytest.raises(ImageRejected, match="damaged or truncated"):
        load_image(png(safe_image())[:60], **bounds)


async def test_describe_bytes_runs_off_the_event_loop(tmp_path: Path) -> None:
    import threading

    tagger = Tagger.load(str(save_tiny_tagger(tmp_path / "tagger", scores={"general": 0.9})))
    threads: list[str] = []

    class Spy:
        sexual_tags = tagger.sexual_tags

        def tag_scores(self, image: Image.Image, **kwargs: float) -> TagScores:
            threads.append(threading.current_thread().name)
            return tagger.tag_scores(image, **kwargs)

    description = await describe_bytes(
        Spy(),
        png(safe_image()),
        general_threshold=0.35,
        character_threshold=0.85,
        max_tags=40,
        max_bytes=1_000_000,
        max_pixels=1_000_000,
    )
    assert description.prompt == "1girl, solo, safe"
    assert threads
    assert threads[0] != threading.main_thread().name
