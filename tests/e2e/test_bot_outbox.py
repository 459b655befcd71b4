"""Durable delivery through Discord's bad days (issue 13), against the fake Discord.

An upload outage (every request with files refused with 503, as Discord's attachment
service does in an incident) while a job renders: the image arrives exactly once after it.
The bot killed (SIGKILL) with a delivery pending delivers it after a restart. A delivery
refused for longer than ``delivery.retry_hours`` is given up once, with the member told,
and ``/images`` fetches the kept image afterwards.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.engine import Engine
from bot.storage import Database, JobStore, prepare_database
from bot.storage.models import Job
from tests.e2e.conftest import (
    BotEnv,
    SettingsFactory,
    ephemeral_answer,
    job_id_in,
    queued_message,
    result_of,
    start_bot,
)
from tests.e2e.fake_discord import (
    ALICE_ID,
    DEFAULT_GUILD_ID,
    GENERAL_CHANNEL_ID,
    FakeDiscord,
    FakeMessage,
)

ROOT = Path(__file__).resolve().parents[2]
FAST_RETRIES = {
    "ANIMAGINE_DELIVERY__RETRY_FIRST_S": "0.5",
    "ANIMAGINE_DELIVERY__RETRY_MAX_S": "1.5",
}
EVERY_ROUTE = r"/.*"


def shows_result(message: FakeMessage) -> bool:
    """A finished job's message: the edited reply, or a channel post under a mention."""
    return "**Done**" in message.content


def results_of_job(fake: FakeDiscord, job_id: int) -> int:
    """Messages showing job ``job_id``'s finished images (anywhere)."""
    return fake.count_posts(
        lambda m: job_id if shows_result(m) and f"#{job_id}" in m.content + str(m.embeds) else None
    )[job_id]


def no_file_twice(fake: FakeDiscord) -> None:
    doubled = {digest: n for digest, n in fake.upload_counts().items() if n > 1}
    assert not doubled, f"files posted more than once: {doubled}"


async def test_an_image_finished_during_an_upload_outage_arrives_once_after_it(
    fake: FakeDiscord, make_settings: SettingsFactory, engine: Engine
) -> None:
    settings = make_settings(**FAST_RETRIES)
    async with start_bot(fake, settings, engine) as bot:
        env = BotEnv(fake, bot)
        handle = await env.imagine("1girl, during the outage", seed=4, steps=6)
        job_id = job_id_in(await queued_message(handle))
        outage = 6.0
        fake.fail_for("*", EVERY_ROUTE, outage, status=503, uploads_only=True)
        began = time.monotonic()
        message = await result_of(handle, within=outage + 40)
        assert time.monotonic() - began >= outage - 0.5
        assert message.attachments
        await asyncio.sleep(2.0)  # no late duplicate
        assert results_of_job(fake, job_id) == 1
        no_file_twice(fake)
        assert (await env.job(job_id)).delivery == "delivered"


@pytest.mark.parametrize("html", [False, True], ids=["json", "html-error-page"])
async def test_after_the_interaction_expired_the_outbox_retries_in_the_channel(
    fake: FakeDiscord, make_settings: SettingsFactory, engine: Engine, html: bool
) -> None:
    """Without the interaction's webhook (a job that finished 15 minutes after it was
    asked), each attempt is the channel then a DM, refused at once during the outage; the
    outbox tries again with its backoff and posts once when Discord takes uploads again."""
    settings = make_settings(**FAST_RETRIES)
    async with start_bot(fake, settings, engine) as bot:
        env = BotEnv(fake, bot)
        handle = await env.imagine("1girl, late", seed=6, steps=6)
        job_id = job_id_in(await queued_message(handle))
        fake.expire_token(handle.token)
        past = datetime.now(UTC) - timedelta(minutes=1)
        await bot.db.run(_expire_in_row, bot.db, job_id, past)
        outage = 6.0
        fake.fail_for("*", EVERY_ROUTE, outage, status=503, uploads_only=True, html=html)
        store = JobStore(bot.db)
        await fake.wait_for(
            lambda: store.get(job_id).delivery_attempts >= 2 or None, 20, "refused attempts"
        )
        assert store.get(job_id).delivery == "pending"

        def posted() -> list[FakeMessage]:
            return [
                m for m in fake.messages(GENERAL_CHANNEL_ID) if shows_result(m) and m.attachments
            ]

        found = await fake.wait_for(lambda: posted() or None, outage + 20, "the channel post")
        await asyncio.sleep(2.0)
        assert len(posted()) == 1
        assert f"<@{ALICE_ID}>" in found[0].content
        assert results_of_job(fake, job_id) == 1
        no_file_twice(fake)
        row = store.get(job_id)
        assert row.delivery == "delivered"
        assert row.delivery_attempts >= 3


async def test_a_delivery_refused_past_its_time_is_given_up_once_and_fetchable(
    fake: FakeDiscord, make_settings: SettingsFactory, engine: Engine
) -> None:
    settings = make_settings(**FAST_RETRIES, ANIMAGINE_DELIVERY__RETRY_HOURS="0.001")  # 3.6 s
    async with start_bot(fake, settings, engine) as bot:
        env = BotEnv(fake, bot)
        handle = await env.imagine("1girl, never posted", seed=7, steps=3)
        job_id = job_id_in(await queued_message(handle))
        # Past the interaction's 15 minutes: each attempt is refused at once (no webhook
        # retries inside discord.py), so the 3.6 s go by in a few attempts.
        fake.expire_token(handle.token)
        await bot.db.run(_expire_in_row, bot.db, job_id, datetime.now(UTC) - timedelta(minutes=1))
        fake.fail_for("*", EVERY_ROUTE, 120, status=503, uploads_only=True)

        def told() -> list[FakeMessage]:
            return [
                m
                for m in fake.messages(GENERAL_CHANNEL_ID)
                if "Discord would not take its images" in m.content and f"#{job_id}" in m.content
            ]

        await fake.wait_for(lambda: told() or None, 30, "the member to be told")
        await asyncio.sleep(3.0)
        assert len(told()) == 1  # once
        assert f"<@{ALICE_ID}>" in told()[0].content
        assert f"/images job:{job_id}" in told()[0].content
        assert (await env.job(job_id)).delivery == "expired"
        assert results_of_job(fake, job_id) == 0

        fake.recover()
        again = await fake.slash_command(
            DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "images", {"job": job_id}
        )
        answer = await ephemeral_answer(again, within=10)
        assert answer.ephemeral
        assert len(answer.attachments) == 1
        assert answer.attachments[0].data.startswith(b"\x89PNG")
        assert f"Job #{job_id}" in answer.content
        # Someone else's job is not theirs to fetch.
        other = await fake.slash_command(
            DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID + 1, "images", {"job": job_id}
        )
        refusal = await ephemeral_answer(other, within=10)
        assert "not one of yours" in refusal.content
        assert not refusal.attachments


def _expire_in_row(db: Database, job_id: int, when: datetime) -> None:
    """The job's interaction token ran out (as for a job that finished 15 min later)."""
    with db.transaction() as session:
        session.get(Job, job_id).interaction_expires_at = when  # type: ignore[union-attr]


def _bot_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bot", "run"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_a_bot_killed_with_a_delivery_pending_delivers_it_after_a_restart(
    fake: FakeDiscord, make_settings: SettingsFactory, tiny_model_dir: Path, tmp_path: Path
) -> None:
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ANIMAGINE_")},
        "DISCORD_TOKEN": fake.token,
        "ANIMAGINE_DISCORD__REST_URL": fake.rest_base,
        "ANIMAGINE_DISCORD__GATEWAY_URL": fake.gateway_url,
        "ANIMAGINE_DISCORD__DEV_GUILDS": f"[{DEFAULT_GUILD_ID}]",
        "ANIMAGINE_MODEL__SOURCE": str(tiny_model_dir),
        "ANIMAGINE_ENGINE__DEVICE": "cpu",
        "ANIMAGINE_ENGINE__MIN_SIDE": "64",
        "ANIMAGINE_ENGINE__DEFAULT_WIDTH": "64",
        "ANIMAGINE_ENGINE__DEFAULT_HEIGHT": "64",
        "ANIMAGINE_ENGINE__DEFAULT_STEPS": "2",
        "ANIMAGINE_DATABASE__URL": f"sqlite:///{tmp_path / 'bot.db'}",
        "ANIMAGINE_MODERATION__CLASSIFIER__SOURCE": "",
        "ANIMAGINE_MODERATION__FAIL_CLOSED": "false",
        "OMP_NUM_THREADS": "1",
        **FAST_RETRIES,
    }
    settings = make_settings()  # the same database, read from here
    log = tmp_path / "bot.log"
    first = _bot_process(environ, log)
    try:
        await fake.wait_for(
            lambda: any(f.event == "GUILD_CREATE" for f in fake.gateway_log) or None,
            90,
            "the first bot on the gateway",
        )
        fake.fail_for("*", EVERY_ROUTE, 600, status=503, uploads_only=True)
        handle = await fake.slash_command(
            DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "imagine", {"prompt": "1girl, kill"}
        )
        job_id = job_id_in(await queued_message(handle, within=30))
        db = prepare_database(settings)
        store = JobStore(db)
        try:
            # Killed while its first delivery attempt is refused (discord.py retries the
            # webhook's 503s inside the attempt): the row says "pending", the files are kept.
            await fake.wait_for(
                lambda: (store.get(job_id).delivery == "pending") or None, 60, "the job to finish"
            )
            await asyncio.sleep(1.0)
            assert not any(shows_result(m) for m in handle.messages())
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            fake.recover()
            second = _bot_process(environ, log)
            try:
                message = await result_of(handle, within=90)
                assert message.attachments
                await fake.wait_for(
                    lambda: store.get(job_id).delivery == "delivered" or None, 30, "delivered"
                )
                await asyncio.sleep(2.0)
                assert results_of_job(fake, job_id) == 1
                no_file_twice(fake)
            finally:
                second.send_signal(signal.SIGTERM)
                try:
                    second.wait(30)
                except subprocess.TimeoutExpired:
                    second.kill()
        finally:
            db.close()
    finally:
        if first.poll() is None:
            first.kill()
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        print(tail)


@pytest.mark.parametrize("is_global", [False, True], ids=["per-route", "global"])
async def test_uploads_rate_limited_with_retry_after_arrive_once(
    fake: FakeDiscord, make_settings: SettingsFactory, engine: Engine, is_global: bool
) -> None:
    settings = make_settings(**FAST_RETRIES)
    async with start_bot(fake, settings, engine) as bot:
        env = BotEnv(fake, bot)
        handle = await env.imagine("1girl, rate limited", seed=2, steps=4)
        job_id = job_id_in(await queued_message(handle))
        fake.rate_limit_for("*", r"/webhooks/.*", 2.0, retry_after=0.7, is_global=is_global)
        began = time.monotonic()
        message = await result_of(handle, within=30)
        assert message.attachments
        assert time.monotonic() - began >= 0.5  # it waited as Discord asked
        await asyncio.sleep(1.5)
        assert results_of_job(fake, job_id) == 1
        no_file_twice(fake)
        assert (await env.job(job_id)).delivery == "delivered"
