"""``serve()`` with the operations server: metrics, readiness, and JSON job event lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.discord_app.runner import EXIT_OK, serve
from bot.logs import JsonFormatter
from tests.e2e.conftest import SettingsFactory, ephemeral_answer, result_of
from tests.e2e.fake_discord import ALICE_ID, DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, FakeDiscord

PROMPT = "1girl, quokka_saxophone_zeppelin"


@pytest.fixture
async def fast_fake() -> AsyncIterator[FakeDiscord]:
    """A fake Discord whose gateway asks for heartbeats every 0.3 s (a latency soon)."""
    async with FakeDiscord(heartbeat_interval=0.3) as server:
        yield server


def settings_for(fake: FakeDiscord, make_settings: SettingsFactory, **env: str) -> Any:
    return make_settings(
        DISCORD_TOKEN=fake.token,
        ANIMAGINE_DISCORD__DEV_GUILDS=f"[{DEFAULT_GUILD_ID}]",
        ANIMAGINE_DISCORD__REST_URL=fake.rest_base,
        ANIMAGINE_DISCORD__GATEWAY_URL=fake.gateway_url,
        **env,
    )


async def ops_url(caplog: pytest.LogCaptureFixture, task: asyncio.Task[int]) -> str:
    """The address the runner says the operations server listens on."""
    async with asyncio.timeout(20):
        while True:
            for record in caplog.records:
                found = re.search(r"/readyz on (http://\S+)", record.getMessage())
                if found:
                    return found.group(1)
            assert not task.done(), "serve() ended before the server listened"
            await asyncio.sleep(0.02)


async def until_ready(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            async with session.get(f"{url}/readyz") as response:
                body: dict[str, Any] = await response.json()
                if response.status == 200:
                    return body
                assert response.status == 503
                assert body["ready"] is False
                assert body["failing"]
            await asyncio.sleep(0.05)


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_serve_exposes_metrics_and_readiness(
    fast_fake: FakeDiscord, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fast_fake
    caplog.set_level(logging.INFO)
    settings = settings_for(
        fake, make_settings, ANIMAGINE_METRICS__ENABLED="true", ANIMAGINE_METRICS__PORT="0"
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop, guild_ready_timeout=0.05))
    url = await ops_url(caplog, task)
    assert url.startswith("http://127.0.0.1:")  # loopback unless told otherwise
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/healthz") as response:
            assert response.status == 200
        ready = await until_ready(session, url)
        assert ready["checks"]["gateway"] == {"ok": True, "detail": "connected"}
        assert ready["checks"]["renderer"]["ok"] is True
        assert ready["checks"]["database"] == {"ok": True, "detail": "writable"}

        fake.rate_limit_next("PATCH", r"/webhooks/.*")  # the job's first edit: one 429
        handle = await fake.slash_command(
            DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "imagine", {"prompt": PROMPT}
        )
        assert (await result_of(handle)).attachments
        refused = await fake.slash_command(
            DEFAULT_GUILD_ID,
            GENERAL_CHANNEL_ID,
            ALICE_ID,
            "imagine",
            {"prompt": PROMPT, "rating": "explicit"},
        )
        assert "Not allowed here" in (await ephemeral_answer(refused)).content
        await fake.wait_for(lambda: fake.heartbeats and fake.heartbeats[-1].acked, 10, "a beat")

        async with asyncio.timeout(10):
            while True:  # the delivery is recorded just after the member has the result
                async with session.get(f"{url}/metrics") as response:
                    assert response.status == 200
                    text = await response.text()
                values = scrape(text)
                if values[("animagine_jobs_total", (("outcome", "finished"),))] == 1:
                    break
                await asyncio.sleep(0.05)

    other = (("size", "other"), ("worker", "local"))  # 64x64: not a model-card size
    assert values[("animagine_render_seconds_count", other)] == 1
    assert values[("animagine_queue_wait_seconds_count", other)] == 1
    assert values[("animagine_prompts_refused_total", (("reason", "rating"),))] == 1
    assert values[("animagine_discord_rate_limit_hits_total", (("scope", "user"),))] == 1
    assert values[("animagine_discord_gateway_latency_seconds", (("shard", "0"),))] >= 0
    assert values[("animagine_workers_up", ())] == 1
    assert values[("animagine_queue_jobs_waiting", ())] == 0
    assert values[("animagine_deliveries_pending", ())] == 0
    routes = {dict(k[1]).get("route") for k in values if k[0].startswith("animagine_discord_rest")}
    assert "/webhooks/{webhook_id}/{webhook_token}/messages/@original" in routes
    assert "/interactions/{interaction_id}/{interaction_token}/callback" in routes
    assert "/applications/{application_id}/guilds/{guild_id}/commands" in routes
    for secret in ("quokka", str(ALICE_ID), str(GENERAL_CHANNEL_ID), handle.token):
        assert secret not in text

    stop.set()
    assert await asyncio.wait_for(task, 20) == EXIT_OK
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz"):
            pass


async def test_a_port_in_use_ends_the_run_with_one_line(
    fake: FakeDiscord, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = settings_for(
            fake,
            make_settings,
            ANIMAGINE_METRICS__ENABLED="true",
            ANIMAGINE_METRICS__PORT=str(port),
        )
        assert await asyncio.wait_for(serve(settings), 20) != EXIT_OK
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        f"metrics: 127.0.0.1:{port} is in use; set metrics.port (or metrics.enabled = false)"
    ]
    assert fake.identifies == []  # it stopped before it connected


async def test_metrics_off_nothing_listens_and_json_job_lines(
    fake: FakeDiscord, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = settings_for(
        fake,
        make_settings,
        ANIMAGINE_METRICS__PORT=str(port),  # but not enabled
        ANIMAGINE_LOGGING__FORMAT="json",
    )
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    caplog.set_level(logging.INFO)
    stop = asyncio.Event()
    try:
        task = asyncio.create_task(serve(settings, stop=stop, guild_ready_timeout=0.05))
        await fake.wait_for(
            lambda: any(f.event == "GUILD_CREATE" for f in fake.gateway_log), 20, "the gateway"
        )
        handle = await fake.slash_command(
            DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "imagine", {"prompt": PROMPT}
        )
        assert (await result_of(handle)).attachments
        await fake.wait_for(lambda: '"job.delivered"' in stream.getvalue(), 10, "the delivery")
        with pytest.raises(OSError):  # noqa: PT011 - refused: whatever errno the OS picks
            await asyncio.open_connection("127.0.0.1", port)
        stop.set()
        assert await asyncio.wait_for(task, 20) == EXIT_OK
    finally:
        root.removeHandler(handler)
    assert not any("/readyz on" in r.getMessage() for r in caplog.records)

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert "quokka" not in stream.getvalue()
    by_event = {line["event"]: line for line in lines if line["event"].startswith("job.")}
    job_id = by_event["job.accepted"]["job_id"]
    for event in ("job.accepted", "job.started", "job.finished", "job.delivered"):
        line = by_event[event]
        assert line["level"] == "INFO"
        assert line["logger"] == "bot.jobs"
        assert (line["job_id"], line["guild_id"], line["channel_id"]) == (
            job_id,
            DEFAULT_GUILD_ID,
            GENERAL_CHANNEL_ID,
        ), line
    assert "rendered in" in by_event["job.finished"]["message"]


async def test_an_auto_sharded_bot_is_ready_when_its_shards_are_connected(
    fast_fake: FakeDiscord, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = settings_for(
        fast_fake,
        make_settings,
        ANIMAGINE_DISCORD__SHARDS='"auto"',
        ANIMAGINE_METRICS__ENABLED="true",
        ANIMAGINE_METRICS__PORT="0",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop, guild_ready_timeout=0.05))
    try:
        url = await ops_url(caplog, task)
        async with aiohttp.ClientSession() as session:
            ready = await until_ready(session, url)
            assert ready["checks"]["gateway"] == {"ok": True, "detail": "1 shard(s) connected"}
            await fast_fake.wait_for(
                lambda: fast_fake.heartbeats and fast_fake.heartbeats[-1].acked, 10, "a beat"
            )
            async with session.get(f"{url}/metrics") as response:
                values = scrape(await response.text())
        assert ("animagine_discord_gateway_latency_seconds", (("shard", "0"),)) in values
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == EXIT_OK
