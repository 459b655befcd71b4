"""/describe and Apps -> Describe, through the real client against the fake Discord.

The tagger is the tiny one: its ratings follow the image's redness (a light blue picture is
general, a red one explicit), ``nude`` follows the redness too, and it always sees
``1girl`` (0.88), ``solo`` (0.73), ``long hair`` (0.8) and the character ``ganyu (genshin
impact)`` (0.95): a blue picture reads
``1girl, ganyu \\(genshin impact\\), genshin impact, long hair, solo, safe``.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

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
    queued_message,
    result_of,
    start_bot,
)
from tests.e2e.fake_discord import (
    ALICE_ID,
    BOB_ID,
    DEFAULT_GUILD_ID,
    GENERAL_CHANNEL_ID,
    NSFW_CHANNEL_ID,
    AttachmentUpload,
    CallbackType,
    FakeDiscord,
    FakeMessage,
    InteractionHandle,
)
from tests.support.tiny_tagger import flagged_image, safe_image, save_tiny_tagger

BLUE_TAGS = r"1girl, ganyu \(genshin impact\), genshin impact, long hair, solo, safe"


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
async def env(
    fake: FakeDiscord, make_settings: SettingsFactory, engine: Engine, tmp_path: Path
) -> AsyncIterator[BotEnv]:
    folder = save_tiny_tagger(
        tmp_path / "tagger",
        tags={"nude": 0.01},
        red_tags=("nude",),
        extra_tags={"long_hair": (0, 0.8), "ganyu_(genshin_impact)": (4, 0.95)},
    )
    settings = make_settings(ANIMAGINE_DESCRIBE__MAX_BYTES="20000")
    async with start_bot(fake, settings, engine, classifier=Tagger.load(str(folder))) as bot:
        yield BotEnv(fake, bot)


async def describe(
    env: BotEnv, data: bytes, filename: str = "picture.png", channel: int = GENERAL_CHANNEL_ID
) -> InteractionHandle:
    upload = AttachmentUpload(filename, data, "image/png")
    return await env.fake.slash_command(
        DEFAULT_GUILD_ID, channel, ALICE_ID, "describe", {"image": upload}
    )


def button(message: FakeMessage, action: str) -> str:
    ids = [c for c in message.custom_ids if c.startswith(f"animagine-describe:{action}:")]
    assert len(ids) == 1, message.custom_ids
    return ids[0]


async def test_describe_answers_the_ordered_tags_and_imagine_renders_them(env: BotEnv) -> None:
    fake = env.fake
    handle = await describe(env, png(safe_image()))
    assert (await handle.response()).ephemeral  # deferred privately, at once
    answer = await ephemeral_answer(handle)
    assert f"```\n{BLUE_TAGS}\n```" in answer.content
    assert "`picture.png`" in answer.content

    others = await fake.click_button(answer, button(answer, "imagine"), BOB_ID)
    assert "belong to the member who asked" in (await ephemeral_answer(others)).content
    assert not await env.jobs()

    pressed = await fake.click_button(answer, button(answer, "imagine"), ALICE_ID)
    result = await result_of(pressed)  # public, like /imagine: queued, rendered, posted
    assert not result.ephemeral
    assert result.attachments
    info = infotext_of(result)
    assert info.prompt.startswith(BLUE_TAGS + ", masterpiece")  # the server's quality preset
    (job,) = await env.jobs()
    assert job.user_id == ALICE_ID
    assert job.request.prompt == BLUE_TAGS

    # Apps -> Describe on the bot's result, by another member.
    menu = await fake.message_context_menu("Describe", result, BOB_ID)
    described = await ephemeral_answer(menu)
    assert f"```\n{BLUE_TAGS.removesuffix(', safe')}" in described.content  # tags fixed
    assert button(described, "edit")

    words = fake.seed_message(GENERAL_CHANNEL_ID, "no picture here", author=ALICE_ID)
    empty = await fake.message_context_menu("Describe", words, BOB_ID)
    assert "no image to describe" in (await ephemeral_answer(empty)).content


async def test_edit_and_imagine_opens_the_tags_in_a_modal(env: BotEnv) -> None:
    fake = env.fake
    answer = await ephemeral_answer(await describe(env, png(safe_image())))
    click = await fake.click_button(answer, button(answer, "edit"), ALICE_ID)
    modal = await click.modal()
    inputs = {
        c["custom_id"]: c.get("value")
        for row in modal.data["components"]
        for c in row.get("components", [row.get("component", {})])
    }
    assert inputs["prompt"] == BLUE_TAGS
    submitted = await fake.submit_modal(
        modal.custom_id or "", {"prompt": "1boy, short hair, safe", "seed": "9"}, ALICE_ID
    )
    await queued_message(submitted)
    (job,) = await env.jobs()
    assert (job.request.prompt, job.request.seed) == ("1boy, short hair, safe", 9)
    # The edited prompt goes through the same policy as /imagine.
    again = await fake.click_button(answer, button(answer, "edit"), ALICE_ID)
    modal = await again.modal()
    refused = await fake.submit_modal(
        modal.custom_id or "", {"prompt": "1girl, explicit, nsfw"}, ALICE_ID
    )
    assert "age-restricted" in (await ephemeral_answer(refused)).content
    assert len(await env.jobs()) == 1


async def test_oversized_and_non_image_attachments_are_refused(env: BotEnv) -> None:
    big = png(Image.effect_noise((200, 200), 64).convert("RGB"))
    assert len(big) > 20000
    answer = await ephemeral_answer(await describe(env, big, "big.png"))
    assert "Cannot describe `big.png`: the file is" in answer.content
    assert "at most 0.0 MiB" in answer.content
    assert not answer.custom_ids

    text = await ephemeral_answer(await describe(env, b"just some words", "notes.png"))
    assert text.content.startswith(
        "Cannot describe `notes.png`: the attached file is not an image the bot reads"
    )


async def test_a_plain_channel_never_sees_the_tags_of_an_explicit_image(env: BotEnv) -> None:
    red = png(flagged_image())
    plain = await ephemeral_answer(await describe(env, red))
    assert plain.content.startswith("Not described here: the image is rated explicit")
    assert "age-restricted" in plain.content
    assert "nude" not in plain.content
    assert not plain.custom_ids
    handle = await describe(env, red, channel=NSFW_CHANNEL_ID)
    restricted = await ephemeral_answer(handle)
    assert "nude" in restricted.content
    assert "explicit, nsfw\n```" in restricted.content
    assert (await handle.response()).type == CallbackType.DEFERRED_CHANNEL_MESSAGE


async def test_a_hard_blocked_image_is_described_nowhere_and_recorded_for_moderators(
    make_settings: SettingsFactory, engine: Engine, tmp_path: Path
) -> None:
    folder = save_tiny_tagger(tmp_path / "t", tags={"loli": 0.9}, red_tags=("nude",))
    async with (
        FakeDiscord() as fake,
        start_bot(fake, make_settings(), engine, classifier=Tagger.load(str(folder))) as bot,
    ):
        env = BotEnv(fake, bot)
        handle = await describe(env, png(flagged_image()), channel=NSFW_CHANNEL_ID)
        answer = (await ephemeral_answer(handle)).content
        assert answer.startswith("Not described here:")
        assert "loli" not in answer
        assert "nude" not in answer
        events = await bot.db.run(MemberStore(bot.db).events, guild_id=DEFAULT_GUILD_ID)
        assert [(e.kind, e.user_id) for e in events] == [("image_hard_blocked", ALICE_ID)]
        assert events[0].details == {"source": "describe", "channel": "age-restricted"}


async def test_the_buttons_are_disabled_when_the_answer_times_out(
    env: BotEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the view's timeout (14 minutes; shortened here) the buttons show as disabled:
    the answer's token would expire soon after, and a press would go nowhere."""
    monkeypatch.setattr("bot.discord_app.describe_views.VIEW_TIMEOUT", 0.3)
    answer = await ephemeral_answer(await describe(env, png(safe_image())))
    buttons = [c for c in answer.iter_components() if c.get("type") == 2]
    assert buttons
    assert not any(c.get("disabled") for c in buttons)

    def disabled() -> bool:
        now = [c for c in env.fake.message(answer.id).iter_components() if c.get("type") == 2]
        return len(now) == len(buttons) and all(c.get("disabled") for c in now)

    await env.fake.wait_for(disabled, 5.0, "the describe buttons disabled")
    assert f"```\n{BLUE_TAGS}\n```" in env.fake.message(answer.id).content  # the tags stay
