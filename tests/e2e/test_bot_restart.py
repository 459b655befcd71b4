"""Restarts: queued and interrupted jobs resume, old buttons keep working, stopping keeps
an unfinished job for the next start."""

from __future__ import annotations

from bot.engine import Engine
from bot.storage import JobStatus, JobStore
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
from tests.e2e.fake_discord import ALICE_ID, BOB_ID, FakeDiscord

GENEROUS = {
    "ANIMAGINE_LIMITS__TIERS__DEFAULT__BURST": "20",
    "ANIMAGINE_LIMITS__TIERS__DEFAULT__MAX_CONCURRENT_JOBS": "20",
}


async def test_jobs_queued_and_running_at_a_restart_are_delivered_after_it(
    fake: FakeDiscord, make_settings: SettingsFactory, engine: Engine
) -> None:
    settings = make_settings(**GENEROUS)
    async with start_bot(fake, settings, engine, start_worker=False) as first:
        env = BotEnv(fake, first)
        earlier = await env.imagine("1girl, before the restart", seed=1)
        await queued_message(earlier)
        await first.service.run_burst()
        finished = await result_of(earlier)
        handles = [await env.imagine(f"1girl, number {i}") for i in range(3)]
        # Submissions are processed concurrently once acknowledged: queue order is id order.
        ids = sorted([job_id_in(await queued_message(h)) for h in handles])
        # The process dies while the second job renders: its row says "running".
        await first.db.run(JobStore(first.db).mark_started, ids[1])

    async with start_bot(fake, settings, engine) as second:
        env = BotEnv(fake, second)
        assert second.restored_jobs == 3
        for handle in handles:  # answered through the interaction tokens kept in the rows
            assert is_result(await result_of(handle))
        jobs = [await env.job(job_id) for job_id in ids]
        assert all(j.status is JobStatus.FINISHED for j in jobs)
        order = [j.id for j in sorted(jobs, key=lambda j: j.started_at or j.queued_at)]
        assert order == [ids[1], ids[0], ids[2]]  # the interrupted job goes first

        click = await fake.click_button(finished, f"animagine:reroll:{job_id_in(finished)}", BOB_ID)
        assert is_result(await result_of(click))


async def test_stopping_keeps_an_unfinished_job_for_the_next_start(
    fake: FakeDiscord, make_settings: SettingsFactory, engine: Engine
) -> None:
    settings = make_settings()
    async with start_bot(fake, settings, engine, stop_grace=0.05) as bot:
        handle = await BotEnv(fake, bot).imagine("1girl", steps=150)
        job_id = job_id_in(await queued_message(handle))
        await until_running(bot, job_id)
        # Leaving the block closes the bot as SIGTERM does: the render outlives the grace.
    async with start_bot(fake, settings, engine, start_worker=False) as bot:
        assert bot.restored_jobs == 1
        assert (await BotEnv(fake, bot).job(job_id)).status is JobStatus.QUEUED
        assert await bot.service.run_burst() == 1
        final = await result_of(handle)
        assert final.attachments
        assert (await BotEnv(fake, bot).job(job_id)).user_id == ALICE_ID
