"""Delivery: progress throttling, heartbeats while rendering, failures, expired tokens and
upload limits."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import itertools
import time

import pytest

from bot.discord_app.client import AnimagineBot
from bot.discord_app.delivery import Delivery, fit_images, recompress
from bot.engine import Engine
from bot.storage import JobStatus
from tests.e2e.conftest import (
    BotEnv,
    SettingsFactory,
    infotext_of,
    is_result,
    job_id_in,
    queued_message,
    result_of,
    start_bot,
)
from tests.e2e.fake_discord import (
    ALICE_ID,
    BOB_ID,
    DEFAULT_GUILD_ID,
    GENERAL_CHANNEL_ID,
    FakeDiscord,
    FakeMessage,
)

INTERVAL = 0.3
"""The tests' progress interval (the bot's default is 2 s): several edits in a short render."""


def test_progress_edits_default_to_two_seconds_apart() -> None:
    assert inspect.signature(Delivery).parameters["progress_interval"].default == 2.0
    assert inspect.signature(AnimagineBot).parameters["progress_interval"].default == 2.0


async def test_progress_is_throttled_and_heartbeats_flow_during_a_long_render(
    make_settings: SettingsFactory, engine: Engine
) -> None:
    settings = make_settings(
        ANIMAGINE_ENGINE__DEFAULT_WIDTH="128", ANIMAGINE_ENGINE__DEFAULT_HEIGHT="128"
    )
    async with (
        FakeDiscord(heartbeat_interval=0.2) as fake,
        start_bot(fake, settings, engine, progress_interval=INTERVAL) as bot,
    ):
        stalls: list[float] = []

        async def watch_loop() -> None:
            while True:
                before = time.monotonic()
                await asyncio.sleep(0.01)
                stalls.append(time.monotonic() - before - 0.01)

        watcher = asyncio.create_task(watch_loop())
        handle = await BotEnv(fake, bot).imagine("1girl", steps=150)
        final = await result_of(handle, within=60)
        watcher.cancel()
        assert is_result(final)
        render = bot.service.worker.last_job_seconds[job_id_in(final)]["render"]

        edits = [
            r
            for r in fake.requests_to("PATCH", rf"/webhooks/\d+/{handle.token}/messages/.+")
            if r.status == 200
        ]
        progress = [r for r in edits if "step" in (r.json or {}).get("content", "")]
        assert len(progress) >= 2, "progress edits during a render of seconds"
        assert "/150" in progress[0].json["content"]
        times = [r.received_at for r in edits[:-1]]  # every edit but the result
        assert all(b - a >= INTERVAL * 0.95 for a, b in itertools.pairwise(times)), times

        # The render runs on the engine's thread: the loop, and with it the gateway, go on.
        # (The engine's gc.collect() after a render holds the GIL for ~0.2-0.4 s.)
        started, ended = progress[0].received_at, progress[-1].received_at
        beats = [h for h in fake.heartbeats if started <= h.received_at <= ended]
        assert len(beats) >= (ended - started) / 0.2 / 2
        assert all(h.acked for h in beats)
        gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(beats)]
        assert max(gaps) < max(1.0, render / 3), (gaps, render)
        assert max(stalls) < max(1.0, render / 3), (max(stalls), render)


async def test_a_failed_job_gets_an_apology_and_its_cost_back(
    fake: FakeDiscord, make_settings: SettingsFactory, engine: Engine
) -> None:
    settings = make_settings(ANIMAGINE_QUEUE__JOB_TIMEOUT_S="0.2")
    async with start_bot(fake, settings, engine) as bot:
        env = BotEnv(fake, bot)
        handle = await env.imagine("1girl", steps=150)
        message = await handle.original(lambda m: "failed" in m.content, timeout=15)
        job_id = int(message.content.split("job #")[1].split(" ")[0])
        assert message.content.startswith(f"Sorry, job #{job_id} failed on our side")
        assert "longer than 0.2 s" in message.content
        assert "Its cost (5 images) was refunded" in message.content  # 150 steps: 5 images
        assert message.custom_ids == []
        job = await env.job(job_id)
        assert job.status is JobStatus.FAILED
        assert job.refunded_at is not None


def _channel_posts(fake: FakeDiscord) -> list[FakeMessage]:
    return [m for m in fake.messages(GENERAL_CHANNEL_ID) if m.interaction_id is None]


@pytest.mark.parametrize("status", [401, 404])
async def test_a_result_after_the_token_expired_goes_to_the_channel(
    burst_env: BotEnv, status: int
) -> None:
    fake, bot = burst_env.fake, burst_env.bot
    fake.expired_token_status = status
    handle = await burst_env.imagine("1girl", seed=3)
    queued = await queued_message(handle)
    job_id = job_id_in(queued)
    fake.expire_token(handle.token)
    assert await bot.service.run_burst() == 1

    [posted] = _channel_posts(fake)
    assert posted.content.startswith(f"<@{ALICE_ID}> your job #{job_id} is ready.")
    assert [int(u) for u in posted.extra["allowed_mentions"]["users"]] == [ALICE_ID]
    assert infotext_of(posted).params["Seed"] == "3"
    assert f"animagine:reroll:{job_id}" in posted.custom_ids
    request = fake.requests_to("POST", rf"/channels/{GENERAL_CHANNEL_ID}/messages")[0]
    assert request.auth == "bot"
    edits = fake.requests_to("PATCH", rf"/webhooks/\d+/{handle.token}/messages/\d+")
    assert edits[-1].status == status
    assert "posted below" in fake.message(queued.id).content
    assert (await burst_env.job(job_id)).message_id == posted.id


async def test_a_result_that_went_to_the_members_dms_leaves_the_job_message_pointing_there(
    burst_env: BotEnv,
) -> None:
    """Token expired, the channel refuses the bot (403): the answer goes to a DM. The job's
    message stays the one in the channel (links from /history and "Who made this?" lead
    there), and it says where the answer went."""
    fake, bot = burst_env.fake, burst_env.bot
    handle = await burst_env.imagine("1girl", seed=5)
    queued = await queued_message(handle)
    job_id = job_id_in(queued)
    fake.expire_token(handle.token)
    fake.fail_next("POST", rf"/channels/{GENERAL_CHANNEL_ID}/messages", status=403, times=5)
    assert await bot.service.run_burst() == 1

    [dm] = fake.messages(fake.dm_channel(ALICE_ID).id)
    assert infotext_of(dm).params["Seed"] == "5"
    assert fake.message(queued.id).content == (
        f"Job #{job_id}: the answer was sent to you in a direct message."
    )
    job = await burst_env.job(job_id)
    assert job.message_id == queued.id
    assert job.channel_id == GENERAL_CHANNEL_ID


async def test_a_token_about_to_expire_is_not_used(burst_env: BotEnv) -> None:
    fake, bot = burst_env.fake, burst_env.bot
    almost = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=14, seconds=45)
    handle = await fake.slash_command(
        DEFAULT_GUILD_ID,
        GENERAL_CHANNEL_ID,
        ALICE_ID,
        "imagine",
        {"prompt": "1girl"},
        created_at=almost,
    )
    queued = await queued_message(handle)
    await bot.service.run_burst()
    [posted] = _channel_posts(fake)
    assert posted.attachments
    after_queue = [r for r in handle.requests if r.received_at > fake.requests[0].received_at]
    assert [r.method for r in after_queue if "webhooks" in r.route] == ["PATCH"]  # the queue line
    assert queued.content.startswith("Job #")  # retired through the channel


async def test_images_over_the_upload_limit_are_recompressed_then_split(
    burst_env: BotEnv,
) -> None:
    fake, bot = burst_env.fake, burst_env.bot
    plain = await burst_env.imagine("1girl", seed=9, count=2)
    await queued_message(plain)
    await bot.service.run_burst()
    reference = await result_of(plain)
    smallest = [recompress(a.data) for a in reference.attachments]
    limit = max(len(data) for data in smallest) + 1

    handle = await fake.slash_command(
        DEFAULT_GUILD_ID,
        GENERAL_CHANNEL_ID,
        ALICE_ID,
        "imagine",
        {"prompt": "1girl", "seed": 9, "count": 2},
        attachment_size_limit=limit,
    )
    await queued_message(handle)
    await bot.service.run_burst()
    first = await result_of(handle)
    second = await handle.followup(0)
    assert [a.data for a in first.attachments + second.attachments] == smallest
    assert all(len(a.data) <= limit for a in first.attachments + second.attachments)
    assert "Re-compressed to fit" in first.content
    assert "one image per message" in first.content
    assert first.embeds
    assert first.custom_ids
    assert "image 2 of 2" in second.content
    assert infotext_of(second).params["Seed"] == "10"  # text chunks survive re-encoding

    tiny = await fake.slash_command(  # Bob: exempt from limits (Alice spent her burst)
        DEFAULT_GUILD_ID,
        GENERAL_CHANNEL_ID,
        BOB_ID,
        "imagine",
        {"prompt": "1girl"},
        attachment_size_limit=100,
    )
    await queued_message(tiny)
    await bot.service.run_burst()
    told = await result_of(tiny)
    assert told.attachments == []
    assert "over the upload limit even re-compressed" in told.content


def test_fit_images_keeps_what_fits_together() -> None:
    files = [("a.png", b"x" * 10), ("b.png", b"y" * 10)]
    fitted = fit_images("en-US", files, 25)
    assert (fitted.groups, fitted.notes) == ([[0, 1]], [])
