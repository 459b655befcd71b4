"""What members can cause: limits, bans, a full queue, bad option mixes; and fairness."""

from __future__ import annotations

import re

from bot.engine import Engine
from bot.storage import MemberStore
from tests.e2e.conftest import (
    BotEnv,
    SettingsFactory,
    ephemeral_answer,
    queued_message,
    start_bot,
)
from tests.e2e.fake_discord import (
    ALICE_ID,
    BOB_ID,
    DEFAULT_GUILD_ID,
    NSFW_CHANNEL_ID,
    CallbackType,
    FakeDiscord,
    InteractionHandle,
)


async def refused(handle: InteractionHandle) -> str:
    """The ephemeral refusal after the thinking reply, which must be gone."""
    assert (await handle.response()).type == CallbackType.DEFERRED_CHANNEL_MESSAGE
    answer = await ephemeral_answer(handle)
    assert handle.original_message is not None
    assert handle.original_message.deleted
    return answer.content


async def test_a_rate_limit_says_which_limit_when_to_retry_and_the_quota_left(
    fake: FakeDiscord, make_settings: SettingsFactory, engine: Engine
) -> None:
    settings = make_settings(
        ANIMAGINE_LIMITS__TIERS__DEFAULT__BURST="1",
        ANIMAGINE_LIMITS__TIERS__DEFAULT__REFILL_SECONDS="3600",
    )
    async with start_bot(fake, settings, engine, start_worker=False) as bot:
        env = BotEnv(fake, bot)
        await queued_message(await env.imagine("1girl"))
        text = await refused(await env.imagine("1girl"))
        assert text.startswith("**Rate limit**: Slow down")
        assert re.search(r"try again <t:\d+:R>", text)
        assert "Daily quota left: 99 images." in text
        assert len(await env.jobs()) == 1  # nothing written for the refused one


async def test_concurrency_ban_and_full_queue_are_explained(
    fake: FakeDiscord, make_settings: SettingsFactory, engine: Engine
) -> None:
    settings = make_settings(ANIMAGINE_QUEUE__MAX_LENGTH="3")
    async with start_bot(fake, settings, engine, start_worker=False) as bot:
        env = BotEnv(fake, bot)
        for _ in range(2):
            await queued_message(await env.imagine("1girl"))
        text = await refused(await env.imagine("1girl"))
        assert text.startswith("**Too many jobs at once**: You already have 2 jobs")

        members = MemberStore(bot.db)
        await bot.db.run(members.ban, DEFAULT_GUILD_ID, ALICE_ID, reason="spamming")
        text = await refused(await env.imagine("1girl"))
        assert text == "**Banned**: You are banned from generating images: spamming"

        await queued_message(await env.imagine("1girl", user=BOB_ID))  # exempt: an admin
        assert "queue is full (3 jobs waiting)" in await refused(
            await env.imagine("1girl", user=BOB_ID)
        )


async def test_the_queue_is_fair_between_members(
    fake: FakeDiscord, make_settings: SettingsFactory, engine: Engine
) -> None:
    settings = make_settings(ANIMAGINE_LIMITS__TIERS__DEFAULT__MAX_CONCURRENT_JOBS="5")
    async with start_bot(fake, settings, engine, start_worker=False) as bot:
        env = BotEnv(fake, bot)
        for prompt, user in [("a1", ALICE_ID), ("a2", ALICE_ID), ("a3", ALICE_ID), ("b1", BOB_ID)]:
            await queued_message(await env.imagine(prompt, user=user))
        assert await bot.service.run_burst() == 4
        jobs = sorted(await env.jobs(), key=lambda j: j.started_at or j.queued_at)
        assert [j.request.prompt for j in jobs] == ["a1", "b1", "a2", "a3"]


async def test_age_restricted_ratings_work_in_age_restricted_channels(burst_env: BotEnv) -> None:
    handle = await burst_env.imagine("1girl", rating="explicit", channel=NSFW_CHANNEL_ID)
    await queued_message(handle)
    [job] = await burst_env.jobs()
    assert job.channel.age_restricted is True
