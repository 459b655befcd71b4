"""``discord.shards``: the bot as an auto-sharded client, end to end over the fake Discord."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from bot.discord_app.runner import EXIT_OK, serve
from tests.e2e.conftest import SettingsFactory, result_of
from tests.e2e.fake_discord import (
    ALICE_ID,
    DEFAULT_GUILD_ID,
    GENERAL_CHANNEL_ID,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeMember,
    FakeUser,
    default_guild,
    shard_for,
)

# Discord puts a guild on shard (id >> 22) % count: with 2 shards, this one is on shard 0 and
# the default guild on shard 1.
SECOND_GUILD_ID = 800_000_000_004_194_305
SECOND_CHANNEL_ID = 800_000_000_004_194_400


def _second_guild() -> FakeGuild:
    return FakeGuild(
        SECOND_GUILD_ID,
        "Second Server",
        channels=[FakeChannel(SECOND_CHANNEL_ID, "art", position=0)],
        members=[FakeMember(FakeUser(ALICE_ID, "alice", "Alice"))],
    )


@contextlib.asynccontextmanager
async def serving(
    fake: FakeDiscord, make_settings: SettingsFactory, **environ: str
) -> AsyncIterator[None]:
    """``python -m bot run``'s ``serve()`` against ``fake``; stopped cleanly on exit."""
    settings = make_settings(
        DISCORD_TOKEN=fake.token,
        ANIMAGINE_DISCORD__REST_URL=fake.rest_base,
        ANIMAGINE_DISCORD__GATEWAY_URL=fake.gateway_url,
        **environ,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop, guild_ready_timeout=0.05))
    try:
        yield
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == EXIT_OK


async def test_auto_sharding_identifies_as_a_shard_and_serves_imagine(
    fake: FakeDiscord, make_settings: SettingsFactory
) -> None:
    async with serving(
        fake,
        make_settings,
        ANIMAGINE_DISCORD__DEV_GUILDS=f"[{DEFAULT_GUILD_ID}]",
        ANIMAGINE_DISCORD__SHARDS='"auto"',
    ):
        await fake.wait_for(
            lambda: any(f.event == "GUILD_CREATE" for f in fake.gateway_log), 20, "the gateway"
        )
        # The shard count Discord recommends (GET /gateway/bot) is the one identified with.
        assert fake.identifies[0]["shard"] == [0, 1]
        handle = await fake.slash_command(
            DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "imagine", {"prompt": "1girl"}
        )
        assert (await result_of(handle)).attachments


async def test_one_shard_by_default_sends_no_shard_in_identify(
    fake: FakeDiscord, make_settings: SettingsFactory
) -> None:
    async with serving(fake, make_settings, ANIMAGINE_DISCORD__DEV_GUILDS=f"[{DEFAULT_GUILD_ID}]"):
        await fake.wait_for(lambda: bool(fake.identifies), 20, "an IDENTIFY")
        assert "shard" not in fake.identifies[0]


async def test_two_shards_each_serve_their_own_servers(make_settings: SettingsFactory) -> None:
    """Discord recommends 2 shards: the bot opens both, and a server on each is served."""
    assert shard_for(SECOND_GUILD_ID, 2) != shard_for(DEFAULT_GUILD_ID, 2)
    async with FakeDiscord(guilds=[default_guild(), _second_guild()]) as fake:
        fake.recommended_shards = 2
        async with serving(fake, make_settings, ANIMAGINE_DISCORD__SHARDS='"auto"'):
            await fake.wait_for(
                lambda: sum(f.event == "GUILD_CREATE" for f in fake.gateway_log) >= 2,
                20,
                "both servers",
            )
            assert sorted(i["shard"] for i in fake.identifies) == [[0, 2], [1, 2]]
            created = {
                int(f.payload["d"]["id"]): f.connection
                for f in fake.gateway_log
                if f.event == "GUILD_CREATE"
            }
            assert created[DEFAULT_GUILD_ID] != created[SECOND_GUILD_ID]  # one per shard
            for guild, channel in (
                (DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID),
                (SECOND_GUILD_ID, SECOND_CHANNEL_ID),
            ):
                handle = await fake.slash_command(
                    guild, channel, ALICE_ID, "imagine", {"prompt": "1girl"}
                )
                assert (await result_of(handle)).attachments
