"""Start-up and connection faults: ``python -m bot run`` against a fake Discord having a bad day.

The runner (``serve``) drives the real discord.py client over real sockets, as in
``test_bot_runner.py``; the REST timeouts and the start-up backoff are made short through
``serve``'s ``rest`` policy. A gateway that drops while a job renders is tested with the
bot of the other end-to-end tests.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import discord
import pytest
from discord.http import Route

from bot.config import Settings
from bot.discord_app.http import Backoff, RestClient, RestPolicy, RestTimeouts, describe_failure
from bot.discord_app.runner import EXIT_OK, serve
from bot.engine import Engine
from bot.storage import JobStatus
from tests.e2e.conftest import (
    BotEnv,
    SettingsFactory,
    is_result,
    job_id_in,
    queued_message,
    result_of,
    start_bot,
    until_running,
)
from tests.e2e.fake_discord import BOB_ID, DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, FakeDiscord

START_ROUTES = r"/users/@me|/oauth2/applications/@me|/applications/\d+(/guilds/\d+)?/commands"
"""What the bot asks at start-up: login, the application, the command sync."""
FAST = RestPolicy(RestTimeouts(connect=2.0, answer=5.0, total=5.0), Backoff(first=0.1, cap=0.4))
HTTP_LOG = "bot.discord_app.http"


def _settings(fake: FakeDiscord, make_settings: SettingsFactory) -> Settings:
    return make_settings(
        DISCORD_TOKEN=fake.token,
        ANIMAGINE_DISCORD__DEV_GUILDS=f"[{DEFAULT_GUILD_ID}]",
        ANIMAGINE_DISCORD__REST_URL=fake.rest_base,
        ANIMAGINE_DISCORD__GATEWAY_URL=fake.gateway_url,
    )


def _retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The start-up retry lines, one per failed attempt."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == HTTP_LOG and r.levelno == logging.WARNING and "trying again" in r.getMessage()
    ]


def _assert_clean(caplog: pytest.LogCaptureFixture, fake: FakeDiscord) -> None:
    """No traceback, no error line, and never the token."""
    assert not [r for r in caplog.records if r.exc_info], "a traceback in the log"
    assert "Traceback" not in caplog.text
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert fake.token not in caplog.text


@pytest.fixture
async def running(
    fake: FakeDiscord, make_settings: SettingsFactory
) -> AsyncIterator[Callable[..., asyncio.Task[int]]]:
    """Starts ``serve`` (at most once); stops it at the end and checks it stopped cleanly."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[int]] = []

    def start(policy: RestPolicy = FAST) -> asyncio.Task[int]:
        settings = _settings(fake, make_settings)
        task = asyncio.create_task(
            serve(settings, stop=stop, rest=policy, guild_ready_timeout=0.05)
        )
        tasks.append(task)
        return task

    yield start
    stop.set()
    for task in tasks:
        assert await asyncio.wait_for(task, 20) == EXIT_OK


async def _up(fake: FakeDiscord, within: float = 15.0) -> None:
    """Wait until the bot has its guild and its commands."""
    await fake.wait_for(
        lambda: (
            any(f.event == "GUILD_CREATE" for f in fake.gateway_log)
            and fake.commands(DEFAULT_GUILD_ID)
        ),
        within,
        "the bot up",
    )


async def test_a_start_during_a_rest_outage_comes_up_when_discord_does(
    fake: FakeDiscord, running: Callable[..., asyncio.Task[int]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake.fail_for("*", START_ROUTES, 2.0, status=502, html=True)
    started = time.monotonic()
    task = running()
    await _up(fake)
    assert not task.done()
    assert time.monotonic() - started >= 2.0

    failed = [r for r in fake.requests if r.status == 502]
    assert failed, "the outage was seen"
    lines = _retries(caplog)
    assert len(lines) == len(failed)  # one line per failed attempt, no hidden retries
    url = re.escape(f"{fake.rest_base}/users/@me")
    for line in lines:
        assert re.match(rf"Discord REST API: GET {url}: answered 502 Bad Gateway: <html>", line)
        body = line.split("answered 502 Bad Gateway: ")[1].split("; trying again")[0]
        assert len(body) <= 100  # the start of the page, whitespace collapsed
        assert "\n" not in line
        assert len(line) < 300
    # The backoff grows, with jitter, and is capped.
    waits = [float(m.group(1)) for line in lines if (m := re.search(r"again in ([\d.]+) s", line))]
    assert waits[0] <= 0.1
    assert max(waits) <= 0.4
    assert "Discord REST API answers again" in caplog.text
    _assert_clean(caplog, fake)


async def test_a_200_with_html_is_one_clear_line_then_the_bot_comes_up(
    fake: FakeDiscord, running: Callable[..., asyncio.Task[int]], caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_next("GET", r"/users/@me", status=200, html=True)
    fake.fail_next("PUT", r"/applications/\d+/guilds/\d+/commands", status=200, html=True)
    running()
    await _up(fake)
    lines = _retries(caplog)
    assert len(lines) == 2
    assert lines[0].startswith(f"Discord REST API: GET {fake.rest_base}/users/@me: answered 200 OK")
    assert "text/html" in lines[0]
    assert "not JSON: <!DOCTYPE html>" in lines[0]
    assert "/guilds/" in lines[1]
    assert "TypeError" not in caplog.text
    _assert_clean(caplog, fake)


async def test_an_unanswered_login_is_a_no_answer_line_and_the_bot_comes_up_after_recovery(
    fake: FakeDiscord, running: Callable[..., asyncio.Task[int]], caplog: pytest.LogCaptureFixture
) -> None:
    fake.hang_for("GET", r"/users/@me", 60)
    policy = RestPolicy(RestTimeouts(connect=2.0, answer=0.5, total=5.0), FAST.backoff)
    task = running(policy)
    first = await fake.wait_for(lambda: fake.held_requests, 15, "the login held")
    held_at = first[0].received_at
    await fake.wait_for(lambda: _retries(caplog), 3, "a retry line")
    assert time.monotonic() - held_at < 2.0  # within the answer timeout, not five minutes
    line = _retries(caplog)[0]
    assert line.startswith(f"Discord REST API: GET {fake.rest_base}/users/@me: no answer in 0.5 s")
    assert not task.done()
    assert not fake.gateway_log  # not connected while the login hangs

    fake.recover()
    await _up(fake)
    statuses = [r.status for r in fake.requests_to("GET", "/users/@me")]
    assert statuses[-1] == 200
    assert 0 in statuses  # the abandoned attempts never ran
    _assert_clean(caplog, fake)


async def test_a_start_during_a_gateway_outage_comes_up_in_one_line_per_attempt(
    fake: FakeDiscord, running: Callable[..., asyncio.Task[int]], caplog: pytest.LogCaptureFixture
) -> None:
    fake.gateway_down_for(1.0)
    running()
    await _up(fake)
    assert fake.refused_gateway_connections >= 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Discord gateway")]
    assert len(lines) == fake.refused_gateway_connections
    for line in lines:
        assert line.startswith(f"Discord gateway {fake.gateway_url}: answered 502 (")
        assert re.search(r"; trying again in [\d.]+ s \(attempt \d+\)$", line)
    _assert_clean(caplog, fake)

    # Later, with a session to resume: discord.py's own retries, one line each.
    caplog.clear()
    refused = fake.refused_gateway_connections
    fake.gateway_down_for(0.5)
    await fake.drop_connection()
    await fake.wait_for(lambda: fake.resumes, 15, "a RESUME after the outage")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Discord gateway")]
    assert len(lines) == fake.refused_gateway_connections - refused
    assert all("answered 502 (" in line and "; reconnecting in " in line for line in lines)
    _assert_clean(caplog, fake)


async def test_a_stop_while_discord_is_down_ends_the_run_cleanly(
    fake: FakeDiscord, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_for("*", START_ROUTES, 60, status=503)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(_settings(fake, make_settings), stop=stop, rest=FAST))
    await fake.wait_for(lambda: len(_retries(caplog)) >= 2, 15, "two attempts")
    stop.set()
    assert await asyncio.wait_for(task, 10) == EXIT_OK
    for line in _retries(caplog):
        assert ': answered 503 Service Unavailable: {"message": "injected 503", "code": 0}' in line
    assert not fake.gateway_log
    _assert_clean(caplog, fake)


async def test_no_connection_at_all_is_one_line_per_attempt(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = make_settings(
        DISCORD_TOKEN="a-token-never-logged",
        ANIMAGINE_DISCORD__REST_URL=f"http://127.0.0.1:{port}/api/v10",
        ANIMAGINE_DISCORD__GATEWAY_URL=f"ws://127.0.0.1:{port}/gateway",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop, rest=FAST))
    async with asyncio.timeout(15):
        while len(_retries(caplog)) < 2:  # noqa: ASYNC110 - polling the log
            await asyncio.sleep(0.02)
    stop.set()
    assert await asyncio.wait_for(task, 10) == EXIT_OK
    for line in _retries(caplog):
        assert line.startswith(f"Discord REST API: GET http://127.0.0.1:{port}/api/v10/users/@me")
        assert ": no connection (" in line
    assert "a-token-never-logged" not in caplog.text
    assert "Traceback" not in caplog.text


async def test_a_refused_command_sync_is_one_line_not_retried(
    fake: FakeDiscord, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_next(
        "PUT",
        r"/applications/\d+/guilds/\d+/commands",
        status=403,
        body={"message": "Missing Access", "code": 50001},
    )
    code = await serve(_settings(fake, make_settings), rest=FAST, guild_ready_timeout=0.05)
    assert code != EXIT_OK
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith("Discord refused PUT ")
    assert "403 Missing Access" in errors[0]
    assert not _retries(caplog)
    assert len(fake.requests_to("PUT", r"/applications/\d+/guilds/\d+/commands")) == 1
    assert "Traceback" not in caplog.text


async def test_every_request_has_timeouts_the_webhook_ones_too(fake: FakeDiscord) -> None:
    client = discord.Client(intents=discord.Intents.none())
    timeouts = RestTimeouts(connect=1.0, answer=0.3, total=3.0)
    rest = RestClient.adopt(client.http, RestPolicy(timeouts, FAST.backoff))
    with fake.patch_discord():
        await client.login(fake.token)
        try:
            rest.started()
            # After start-up a start-up route fails like any other request.
            fake.fail_next("GET", r"/users/@me", status=503, html=True)
            with pytest.raises(discord.DiscordServerError):
                await client.http.request(Route("GET", "/users/@me"))
            # discord.py's own requests: the per-request timeout.
            fake.hang_next("GET", r"/channels/\d+")
            started = time.monotonic()
            with pytest.raises(TimeoutError) as raised:
                await client.fetch_channel(GENERAL_CHANNEL_ID)
            assert time.monotonic() - started < 2.0
            assert describe_failure(raised.value, timeouts.plain()) == "no answer in 0.3 s"
            # Interaction callbacks and webhooks go through the session itself.
            session = client.http._HTTPClient__session  # type: ignore[attr-defined]
            assert session.timeout == timeouts.upload()
            fake.hang_next("POST", r"/webhooks/\d+/.+")
            started = time.monotonic()
            with pytest.raises(aiohttp.ServerTimeoutError):
                async with session.post(f"{fake.rest_base}/webhooks/1/token", json={}):
                    pass
            assert time.monotonic() - started < 2.0
        finally:
            await client.close()
    fake.recover()


# ---- a gateway that drops while a job renders ------------------------------------------------


async def _drop(fake: FakeDiscord, how: str) -> None:
    if how == "invalid session":
        await fake.invalidate_session()
    else:
        await fake.drop_connection(abrupt=how == "abrupt")


@pytest.mark.parametrize("how", ["close frame", "abrupt", "invalid session"])
async def test_a_gateway_drop_mid_job_neither_fails_nor_repeats_it(
    fake: FakeDiscord, make_settings: SettingsFactory, engine: Engine, how: str
) -> None:
    async with start_bot(fake, make_settings(), engine) as bot:
        env = BotEnv(fake, bot)
        handle = await env.imagine("1girl, solo", steps=150)
        job_id = job_id_in(await queued_message(handle))
        await until_running(bot, job_id)
        identifies, resumes = len(fake.identifies), len(fake.resumes)
        await _drop(fake, how)
        assert bot.service.worker.running_job_id == job_id  # dropped while it renders
        if how == "invalid session":  # discord.py waits 5 s before it IDENTIFYs again
            await fake.wait_for(lambda: len(fake.identifies) > identifies, 10, "an IDENTIFY")
        else:
            await fake.wait_for(lambda: len(fake.resumes) > resumes, 10, "a RESUME")
        await fake.wait_connected(10)

        final = await result_of(handle, within=60)
        assert is_result(final)
        assert len(final.attachments) == 1
        job = await env.job(job_id)
        assert job.status is JobStatus.FINISHED
        assert [j.id for j in await env.jobs()] == [job_id]
        # Delivered exactly once: one upload, one visible copy, one result message.
        uploads = [r for r in fake.requests if r.files]
        assert [r.status for r in uploads] == [200]
        assert list(fake.upload_counts().values()) == [1]
        results = fake.count_posts(lambda m: job_id_in(m) if is_result(m) else None)
        assert results == {job_id: 1}
        # The bot still serves after the reconnect.
        again = await env.imagine("1girl, after the reconnect", user=BOB_ID, steps=2)
        assert is_result(await result_of(again))
