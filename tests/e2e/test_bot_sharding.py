"""``discord.shards``: the bot as an auto-sharded client, end to end over the fake Discord."""

from __future__ import annotations

import asyncio

from bot.discord_app.runner import EXIT_OK, serve
from tests.e2e.conftest import SettingsFactory, result_of
from tests.e2e.fake_discord import ALICE_ID, DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, FakeDiscord


async def test_auto_sharding_identifies_as_a_shard_and_serves_imagine(
    fake: FakeDiscord, make_settings: SettingsFactory
) -> None:
    settings = make_settings(
        DISCORD_TOKEN=fake.token,
        ANIMAGINE_DISCORD__REST_URL=fake.rest_base,
        ANIMAGINE_DISCORD__GATEWAY_URL=fake.gateway_url,
        ANIMAGINE_DISCORD__DEV_GUILDS=f"[{DEFAULT_GUILD_ID}]",
        ANIMAGINE_DISCORD__SHARDS='"auto"',
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop, guild_ready_timeout=0.05))
    try:
        await fake.wait_for(
            lambda: any(f.event == "GUILD_CREATE" for f in fake.gateway_log), 20, "the gateway"
        )
        # The shard count Discord recommends (GET /gateway/bot) is the one identified with.
        assert fake.identifies[0]["shard"] == [0, 1]
        handle = await fake.slash_command(
            DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "imagine", {"prompt": "1girl"}
        )
        assert (await result_of(handle)).attachments
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == EXIT_OK


async def test_one_shard_by_default_sends_no_shard_in_identify(
    fake: FakeDiscord, make_settings: SettingsFactory
) -> None:
    settings = make_settings(
        DISCORD_TOKEN=fake.token,
        ANIMAGINE_DISCORD__REST_URL=fake.rest_base,
        ANIMAGINE_DISCORD__GATEWAY_URL=fake.gateway_url,
        ANIMAGINE_DISCORD__DEV_GUILDS=f"[{DEFAULT_GUILD_ID}]",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop, guild_ready_timeout=0.05))
    try:
        await fake.wait_for(lambda: bool(fake.identifies), 20, "an IDENTIFY")
        assert "shard" not in fake.identifies[0]
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == EXIT_OK
