"""/imagine with an image attachment (img2img), through the real client: the render, and
each refusal (too large, a decompression bomb, an input a plain channel would withhold,
the hard block in an age-restricted channel) as a clear ephemeral answer."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.engine import Engine
from bot.moderation.classifier import Tagger
from bot.storage import MemberStore
from tests.e2e.conftest import (
    BotEnv,
    SettingsFactory,
    ephemeral_answer,
    infotext_of,
    job_id_in,
    result_of,
    start_bot,
)
from tests.e2e.fake_discord import (
    ALICE_ID,
    DEFAULT_GUILD_ID,
    NSFW_CHANNEL_ID,
    AttachmentUpload,
    FakeDiscord,
)
from tests.support.tiny_tagger import flagged_image, safe_image, save_tiny_tagger
from tests.test_attachments import png_header_only


def upload(image: Image.Image, name: str = "input.png", fmt: str = "PNG") -> AttachmentUpload:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return AttachmentUpload(name, buffer.getvalue(), f"image/{fmt.lower()}")


@pytest.fixture
async def env(
    make_settings: SettingsFactory, engine: Engine, tmp_path: Path
) -> AsyncIterator[BotEnv]:
    """Red-mode tiny tagger (red inputs are explicit), fail closed, cards scaled down to
    96x96 pixels, inputs of at most 64 KiB."""
    folder = save_tiny_tagger(tmp_path / "tagger")
    settings = make_settings(
        ANIMAGINE_ENGINE__MAX_PIXELS="9216",
        ANIMAGINE_ENGINE__INPUT_MAX_BYTES="65536",
        ANIMAGINE_MODERATION__FAIL_CLOSED="true",
        ANIMAGINE_MODERATION__EXPLICIT_THRESHOLD="0.5",
    )
    async with (
        FakeDiscord() as fake,
        start_bot(fake, settings, engine, classifier=Tagger.load(str(folder))) as bot,
    ):
        yield BotEnv(fake, bot)


async def refusal(handle: object) -> str:
    answer = await ephemeral_answer(handle)  # type: ignore[arg-type]
    return answer.content


async def test_imagine_with_an_attachment_renders_img2img(env: BotEnv) -> None:
    photo = safe_image(300, 200)  # 3:2: the nearest card is 1216x832, scaled to 112x72
    handle = await env.imagine("1girl, sky", image=upload(photo, "sky.jpg", "JPEG"), strength=0.5)
    message = await result_of(handle)
    info = infotext_of(message)
    assert info.params["Denoising strength"] == "0.5"
    assert info.params["Image prompt"] == "attachment"
    assert info.params["Size"] == "112x72"
    fields = {f["name"]: f["value"] for f in message.embeds[0]["fields"]}
    assert fields["Image prompt"] == "img2img · from the attached image · strength 0.5"
    job = await env.job(job_id_in(message))
    assert job.request.image is not None
    stored = env.bot.service.outbox.vault.input_path(job.request.image.source)
    with Image.open(stored) as kept:
        assert kept.size == (112, 72)


async def test_an_oversized_or_bomb_attachment_is_refused(env: BotEnv) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    big = await refusal(await env.imagine("1girl", image=upload(Image.fromarray(noise))))
    assert "too large (0.2 MiB): at most 0.1 MiB" in big
    bomb = AttachmentUpload("cute.png", png_header_only(100_000, 100_000), "image/png")
    answer = await refusal(await env.imagine("1girl", image=bomb))
    assert "decompression bomb" in answer
    fake_png = AttachmentUpload("cat.png", b"MZ\x90\x00 not an image", "image/png")
    assert "attach a PNG, JPEG or WebP image" in await refusal(
        await env.imagine("1girl", image=fake_png)
    )
    assert "strength needs an image" in await refusal(await env.imagine("1girl", strength=0.3))
    assert env.bot.service.queue.order() == []


async def test_an_explicit_input_is_refused_in_a_plain_channel_only(env: BotEnv) -> None:
    red = upload(flagged_image(96, 96))
    answer = await refusal(await env.imagine("1girl", image=red))
    assert "the attached image cannot be used here: withheld: rated explicit" in answer
    # In the age-restricted channel it may be used...
    ok = await result_of(await env.imagine("1girl", image=red, channel=NSFW_CHANNEL_ID))
    assert infotext_of(ok).params["Image prompt"] == "attachment"


async def test_the_hard_block_refuses_an_input_in_every_channel(
    make_settings: SettingsFactory, engine: Engine, tmp_path: Path
) -> None:
    folder = save_tiny_tagger(tmp_path / "t", tags={"loli": 0.9}, red_tags=("nude",))
    async with (
        FakeDiscord() as fake,
        start_bot(fake, make_settings(), engine, classifier=Tagger.load(str(folder))) as bot,
    ):
        env = BotEnv(fake, bot)
        handle = await env.imagine("1girl", image=upload(flagged_image()), channel=NSFW_CHANNEL_ID)
        answer = await refusal(handle)
        assert "hard block" in answer
        assert env.bot.service.queue.order() == []
        # Moderators see who tried; the image itself is kept nowhere.
        events = await bot.db.run(MemberStore(bot.db).events, guild_id=DEFAULT_GUILD_ID)
        assert [(e.kind, e.user_id) for e in events] == [("image_hard_blocked", ALICE_ID)]
        assert events[0].details == {"source": "image prompt", "channel": "age-restricted"}
        assert list(bot.service.outbox.vault.input_names()) == []
