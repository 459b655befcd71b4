"""``bot.discord_app.runner``: the composition that ``python -m bot run`` calls."""

from __future__ import annotations

import asyncio
import logging
import signal

import pytest
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.discord_app.runner import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, run, serve
from tests.e2e.conftest import SettingsFactory, result_of
from tests.e2e.fake_discord import ALICE_ID, DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, FakeDiscord


def _endpoints(fake: FakeDiscord) -> dict[str, str]:
    return {
        "ANIMAGINE_DISCORD__REST_URL": fake.rest_base,
        "ANIMAGINE_DISCORD__GATEWAY_URL": fake.gateway_url,
    }


async def test_serve_runs_the_bot_through_configured_endpoints_until_sigterm(
    fake: FakeDiscord, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = make_settings(
        DISCORD_TOKEN=fake.token,
        ANIMAGINE_DISCORD__DEV_GUILDS=f"[{DEFAULT_GUILD_ID}]",
        **_endpoints(fake),
    )
    defaults = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
    task = asyncio.create_task(serve(settings, guild_ready_timeout=0.05))
    await fake.wait_for(
        lambda: any(f.event == "GUILD_CREATE" for f in fake.gateway_log), 20, "the gateway"
    )
    assert fake.rest_base == Route.BASE
    assert yarl.URL(fake.gateway_url) == DiscordWebSocket.DEFAULT_GATEWAY
    assert fake.commands() == []  # development guilds only
    assert {c["name"] for c in fake.commands(DEFAULT_GUILD_ID)} >= {"imagine", "settings"}
    assert fake.identifies[0]["intents"] == 1  # guilds, nothing privileged

    handle = await fake.slash_command(
        DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "imagine", {"prompt": "1girl"}
    )
    assert (await result_of(handle)).attachments
    signal.raise_signal(signal.SIGTERM)
    assert await asyncio.wait_for(task, 20) == EXIT_OK
    assert defaults == (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
    assert "SIGTERM received" in caplog.text
    assert "token from the settings" in caplog.text
    assert fake.token not in caplog.text


async def test_a_rejected_token_fails_cleanly(
    fake: FakeDiscord, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(DISCORD_TOKEN="not-the-token", **_endpoints(fake))
    assert await serve(settings) == EXIT_FAILURE
    assert "Discord rejected the token" in caplog.text
    assert "not-the-token" not in caplog.text
    assert [r.status for r in fake.requests_to("GET", "/users/@me")] == [401]  # not retried
    assert "Traceback" not in caplog.text


async def test_no_token_is_a_configuration_error(make_settings: SettingsFactory) -> None:
    assert await asyncio.to_thread(run, make_settings()) == EXIT_CONFIG
