"""The Redis backend seen from Discord: ``/settings show`` lists the GPU workers.

A real redis-server, a real ``python -m bot worker`` process with the tiny model, the bot
against the fake Discord.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.discord_app.client import AnimagineBot
from bot.engine.front import PromptFront
from tests.e2e.conftest import (
    BotEnv,
    SettingsFactory,
    ephemeral_answer,
    result_of,
    start_bot,
)
from tests.e2e.fake_discord import BOB_ID, DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, FakeDiscord
from tests.queue.test_redis_backend import Workers
from tests.support.redis_server import RedisServer, free_port


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


async def settings_show(fake: FakeDiscord) -> list[dict[str, Any]]:
    handle = await fake.slash_command(
        DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, BOB_ID, "settings", {}, "show"
    )
    return (await ephemeral_answer(handle)).embeds


async def until(check: Any, what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def counted(bot: AnimagineBot) -> int:
    return sum(w.counted for w in bot.service.workers() or [])


async def test_settings_show_lists_each_worker_with_its_state_and_jobs(
    fake: FakeDiscord,
    make_settings: SettingsFactory,
    tiny_model_dir: Path,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    prefix = f"e{free_port()}"
    settings = make_settings(
        ANIMAGINE_QUEUE__BACKEND="redis",
        ANIMAGINE_QUEUE__REDIS_URL=redis_server.url,
        ANIMAGINE_QUEUE__REDIS_PREFIX=prefix,
        ANIMAGINE_QUEUE__REDIS_PREFETCH="0",
        ANIMAGINE_QUEUE__REDIS_CLAIM_TIMEOUT_S="1.5",
        ANIMAGINE_QUEUE__REDIS_HEARTBEAT_S="0.3",
    )
    workers = Workers(tmp_path, tiny_model_dir, redis_server.url, prefix)
    # The bot holds the model's tokenizer only (as `run` loads it with the Redis backend):
    # no weights, no GPU on its machine.
    front = PromptFront.load(settings)
    try:
        async with start_bot(fake, settings, front) as bot:
            env = BotEnv(fake, bot)
            embeds = await settings_show(fake)
            assert embeds[-1]["title"] == "Workers"
            assert "No worker has reported" in embeds[-1]["description"]

            workers.start("gpu-1")
            await until(lambda: counted(bot) == 1, "the worker to report")
            result = await result_of(await env.imagine("1girl"), within=60)
            assert result.attachments

            def done() -> bool:
                listed = bot.service.workers() or []
                return [w.jobs_done for w in listed] == [1]

            await until(done, "the next heartbeat")
            workers_embed = (await settings_show(fake))[-1]
            assert workers_embed["title"] == "Workers"
            assert workers_embed["description"] == "1 of 1 worker taking jobs"
            [field] = workers_embed["fields"]
            assert field["name"] == "gpu-1"
            assert "GPU cpu" in field["value"]
            assert f"model {tiny_model_dir}" in field["value"]
            assert "idle · 1 job done · last heartbeat" in field["value"]

            process = workers.processes["gpu-1"]
            process.send_signal(signal.SIGTERM)
            await until(lambda: process.poll() is not None, "the worker to stop", 30)
            await until(lambda: not bot.service.workers(), "the worker to leave the list")
            assert "No worker has reported" in (await settings_show(fake))[-1]["description"]
    finally:
        workers.stop()


async def test_settings_show_has_no_workers_when_jobs_render_in_the_bot(
    bot_env: BotEnv,
) -> None:
    embeds = await settings_show(bot_env.fake)
    assert [e["title"] for e in embeds] == ["Server settings", "Moderation"]
