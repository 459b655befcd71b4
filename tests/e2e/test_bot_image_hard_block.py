"""The image side of the hard block through Discord: an image the tagger sees as sexual and
as showing a minor is never uploaded, in any kind of channel, and never forwarded, not even
to the moderation log channel; a tagger that cannot judge minors is reported loudly and
sexual images are withheld in age-restricted channels too.

The tagger is the tiny ONNX tagger of ``tests/support/tiny_tagger.py`` built to score every
image explicit (0.9) with the minor tag ``loli`` (0.9); the images come from the tiny SDXL
pipeline through the real discord.py client and the local fake Discord.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.discord_app.runner import load_classifier
from bot.engine import Engine
from bot.moderation.classifier import Tagger
from bot.storage import JobStatus, MemberStore
from tests.e2e.conftest import (
    LOG_CHANNEL_ID,
    BotEnv,
    SettingsFactory,
    ephemeral_answer,
    moderated_guild,
    result_of,
    start_bot,
    uploads,
)
from tests.e2e.fake_discord import (
    ALICE_ID,
    BOB_ID,
    DEFAULT_GUILD_ID,
    GENERAL_CHANNEL_ID,
    NSFW_CHANNEL_ID,
    NSFW_THREAD_ID,
    THREAD_ID,
    FakeDiscord,
    InteractionHandle,
)
from tests.support.tiny_tagger import save_tiny_tagger

CHANNELS = {
    "plain": (DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID),
    "thread": (DEFAULT_GUILD_ID, THREAD_ID),
    "age-restricted": (DEFAULT_GUILD_ID, NSFW_CHANNEL_ID),
    "age-restricted thread": (DEFAULT_GUILD_ID, NSFW_THREAD_ID),
    "dm": (None, None),
}


async def settings_command(env: BotEnv, sub: str, options: dict[str, object]) -> str:
    handle = await env.fake.slash_command(
        DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, BOB_ID, "settings", options, sub
    )
    return (await ephemeral_answer(handle)).content


async def test_a_sexual_image_of_a_minor_is_uploaded_nowhere(
    make_settings: SettingsFactory, engine: Engine, tmp_path: Path
) -> None:
    tagger = Tagger.load(
        str(save_tiny_tagger(tmp_path / "tagger", scores={"explicit": 0.9}, tags={"loli": 0.9}))
    )
    settings = make_settings(ANIMAGINE_MODERATION__DM_ALLOWED="true")
    async with (
        FakeDiscord(guilds=[moderated_guild()]) as fake,
        start_bot(fake, settings, engine, classifier=tagger) as bot,
    ):
        env = BotEnv(fake, bot)
        # The server forwards withheld images to its log channel: not these.
        saved = await settings_command(
            env, "moderation set", {"log_channel": LOG_CHANNEL_ID, "forward_withheld": True}
        )
        assert saved == "Saved."
        handles: dict[str, InteractionHandle] = {}
        for kind, (guild, channel) in CHANNELS.items():  # one at a time: the member's limit
            handle = await env.imagine("1girl, smile", guild=guild, channel=channel, seed=7)
            handles[kind] = handle
            shown = await result_of(handle)
            assert shown.attachments == [], kind
            assert "Image 1 (seed 7) was not posted: hard block: the image check sees" in (
                shown.content
            ), kind
            assert "loli 0.90" in shown.content
            assert not [c for c in shown.custom_ids if ":upscale:" in c], kind

        # Not one file went anywhere: no channel, no webhook, no DM, no log channel.
        assert [(r.route, f.filename) for r in fake.requests for f in r.files] == []
        for guild_channel in (GENERAL_CHANNEL_ID, THREAD_ID, NSFW_CHANNEL_ID, NSFW_THREAD_ID):
            assert uploads(fake, channel_id=guild_channel, handles=handles.values()) == []

        logged = await fake.wait_for_message(
            lambda m: "Hard block (image)" in m.content and f"<#{NSFW_THREAD_ID}>" in m.content,
            channel_id=LOG_CHANNEL_ID,
        )
        assert logged.attachments == []
        assert "||`1girl, smile" in logged.content  # the prompt behind a spoiler
        assert "never forwarded" in logged.content
        log_messages = fake.messages(LOG_CHANNEL_ID)
        assert sum("Hard block (image)" in m.content for m in log_messages) == 4  # not the DM
        assert all(m.attachments == [] for m in log_messages)

        events = await bot.db.run(MemberStore(bot.db).events)
        assert sorted(e.kind for e in events) == ["image_hard_blocked"] * 5
        assert {e.user_id for e in events} == {ALICE_ID}
        assert all(e.details and e.details["scores"]["minor:loli"] > 0.85 for e in events)
        assert {j.status for j in await env.jobs()} == {JobStatus.FINISHED}


async def test_a_tagger_without_minor_tags_is_reported_and_fails_closed(
    make_settings: SettingsFactory,
    engine: Engine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = save_tiny_tagger(tmp_path / "old", scores={"explicit": 0.9}, hard_block_tags=False)
    settings = make_settings(ANIMAGINE_MODERATION__CLASSIFIER__SOURCE=str(folder))
    with caplog.at_level(logging.ERROR, logger="bot.discord_app.runner"):
        tagger, error = await load_classifier(settings)
    assert tagger is not None
    assert error is None
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "the hard block is incomplete" in record.getMessage()
    assert "lacks the tags loli, shota, child" in record.getMessage()

    async with (
        FakeDiscord(guilds=[moderated_guild()]) as fake,
        start_bot(fake, settings, engine, classifier=tagger) as bot,
    ):
        env = BotEnv(fake, bot)
        await settings_command(
            env, "moderation set", {"log_channel": LOG_CHANNEL_ID, "forward_withheld": True}
        )
        for channel in (NSFW_CHANNEL_ID, NSFW_THREAD_ID):
            handle = await env.imagine("1girl", channel=channel, seed=3)
            shown = await result_of(handle)
            assert shown.attachments == []
            assert "cannot check it for minors" in shown.content
        assert [f.filename for r in fake.requests for f in r.files] == []
        logged = await fake.wait_for_message(
            lambda m: "Image withheld" in m.content, channel_id=LOG_CHANNEL_ID
        )
        assert logged.attachments == []

        shown_settings = await env.fake.slash_command(
            DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, BOB_ID, "settings", {}, "show"
        )
        moderation = (await ephemeral_answer(shown_settings)).embeds[1]
        fields = {f["name"]: f["value"] for f in moderation["fields"]}
        assert fields["Image classifier"].startswith("⚠ loaded")
        assert "hard block incomplete" in fields["Image classifier"]
        assert "lacks the tags loli, shota, child" in fields["Image classifier"]


async def test_settings_show_says_the_image_hard_block_is_on(
    make_settings: SettingsFactory, engine: Engine, tmp_path: Path
) -> None:
    tagger = Tagger.load(str(save_tiny_tagger(tmp_path / "tagger", scores={"general": 0.9})))
    async with (
        FakeDiscord(guilds=[moderated_guild()]) as fake,
        start_bot(fake, make_settings(), engine, classifier=tagger) as bot,
    ):
        handle = await fake.slash_command(
            DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, BOB_ID, "settings", {}, "show"
        )
        moderation = (await ephemeral_answer(handle)).embeds[1]
        fields = {f["name"]: f["value"] for f in moderation["fields"]}
        assert "image hard block (sexual content with a minor) is on" in fields["Image classifier"]
        # An image the tagger sees as harmless is posted as usual, also with minor tags low.
        env = BotEnv(fake, bot)
        shown = await result_of(await env.imagine("1girl", seed=1))
        assert len(shown.attachments) == 1
