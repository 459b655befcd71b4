"""/history through the real client: own jobs newest first, pages, Images and Re-run."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.discord_app.cogs.history import HistoryCog
from bot.jobspec import JobSpec
from bot.moderation import ChannelContext
from bot.request import GenerationRequest
from bot.storage import JobStore, NewJob
from tests.e2e.conftest import BotEnv, ephemeral_answer, infotext_of, job_id_in, result_of
from tests.e2e.fake_discord import (
    ALICE_ID,
    BOB_ID,
    DEFAULT_GUILD_ID,
    GENERAL_CHANNEL_ID,
    NSFW_CHANNEL_ID,
    CallbackType,
    FakeMessage,
    InteractionHandle,
)


@pytest.fixture
async def env(bot_env: BotEnv) -> BotEnv:
    """The bot, which loads the /history cog (``client.COGS``) like every other."""
    assert bot_env.bot.get_cog(HistoryCog.__cog_name__) is not None
    return bot_env


async def history(
    env: BotEnv, user: int = ALICE_ID, channel: int = GENERAL_CHANNEL_ID
) -> FakeMessage:
    handle = await env.fake.slash_command(DEFAULT_GUILD_ID, channel, user, "history")
    answer = await ephemeral_answer(handle)
    assert answer.ephemeral
    return answer


def button(message: FakeMessage, suffix: str) -> str:
    """The custom id of the /history button ending with ``suffix``."""
    found = [c for c in message.custom_ids if c.endswith(f":{suffix}")]
    assert len(found) == 1, (suffix, message.custom_ids)
    return found[0]


def fields(message: FakeMessage) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = message.embeds[0]["fields"]
    return fields


def listed(message: FakeMessage) -> list[int]:
    """The job ids a page shows, in order."""
    return [int(f["name"].split(" ")[0].lstrip("#")) for f in fields(message)]


async def press(env: BotEnv, message: FakeMessage, suffix: str, user: int) -> InteractionHandle:
    return await env.fake.click_button(message, button(message, suffix), user)


async def test_history_lists_my_jobs_and_fetches_or_reruns_them(env: BotEnv) -> None:
    fake = env.fake
    first = await result_of(await env.imagine("1girl, red hair", seed=11))
    second = await result_of(await env.imagine("1boy, blue hair", seed=22, negative="bad hands"))
    first_id, second_id = job_id_in(first), job_id_in(second)

    page = await history(env)
    assert listed(page) == [second_id, first_id]
    newest, older = (f["value"] for f in fields(page))
    assert "1boy, blue hair" in newest
    assert "Negative: bad hands" in newest
    assert "Seed 22 · 64x64 · 2 steps" in newest
    link = f"https://discord.com/channels/{DEFAULT_GUILD_ID}/{GENERAL_CHANNEL_ID}"
    assert f"[Jump to the result]({link}/{second.id})" in newest
    assert "1girl, red hair" in older
    assert f"[Jump to the result]({link}/{first.id})" in older
    assert fields(page)[0]["name"] == f"#{second_id} · ✅ finished"

    # Only Alice sees her jobs, and only she can press her page's buttons.
    bobs = await history(env, BOB_ID)
    assert "no jobs in this server yet" in bobs.content
    assert "red hair" not in bobs.content
    assert not bobs.embeds
    stranger = await press(env, page, f"rerun:{first_id}", BOB_ID)
    assert "someone else's history" in (await ephemeral_answer(stranger)).content
    assert len(await env.jobs()) == 2

    # Images: the /images path, ephemerally, the same PNG as posted.
    images = await press(env, page, f"images:{first_id}", ALICE_ID)
    again = await ephemeral_answer(images)
    assert again.content.startswith(f"Job #{first_id} (1 image): 1girl, red hair")
    assert [a.data for a in again.attachments] == [first.attachments[0].data]

    # Re-run: the same request and seed, queued like /imagine, rendered and posted publicly.
    rerun = await press(env, page, f"rerun:{second_id}", ALICE_ID)
    assert (await rerun.response()).type == CallbackType.DEFERRED_CHANNEL_MESSAGE
    rendered = await result_of(rerun)
    assert not rendered.ephemeral
    new_id = job_id_in(rendered)
    assert new_id not in (first_id, second_id)
    before, after = infotext_of(second), infotext_of(rendered)
    assert after.params["Seed"] == before.params["Seed"] == "22"
    assert after.prompt == before.prompt
    assert after.negative_prompt == before.negative_prompt
    assert rendered.attachments[0].data == second.attachments[0].data  # same seed, same pixels
    job = await env.job(new_id)
    assert (job.user_id, job.request) == (ALICE_ID, (await env.job(second_id)).request)
    assert listed(await history(env)) == [new_id, second_id, first_id]
    assert fake.message(page.id).ephemeral


def _add(store: JobStore, prompt: str, *, restricted: bool = False) -> int:
    request = GenerationRequest(prompt=prompt, seed=3, width=64, height=64, steps=2)
    spec = JobSpec(request=request, channel=ChannelContext(restricted))
    channel = NSFW_CHANNEL_ID if restricted else GENERAL_CHANNEL_ID
    job = store.add(
        NewJob.of(spec, channel_id=channel), user_id=ALICE_ID, guild_id=DEFAULT_GUILD_ID
    )
    return job.id


async def test_previous_and_next_page_through_seven_jobs(env: BotEnv) -> None:
    store = JobStore(env.bot.db)
    ids = [await env.bot.db.run(_add, store, "1girl, nsfw", restricted=True)]
    ids += [await env.bot.db.run(_add, store, f"1girl, smile, job {n}") for n in range(1, 7)]

    page = await history(env)
    assert listed(page) == ids[:1:-1]  # the five newest, newest first
    assert page.component(button(page, "previous"))["disabled"]
    assert not page.component(button(page, "next")).get("disabled")
    assert "Page 1" in page.embeds[0]["footer"]["text"]
    assert "⏳ queued" in fields(page)[0]["name"]
    assert page.component(button(page, f"images:{ids[6]}"))["disabled"]  # nothing to fetch

    turn = await press(env, page, "next", ALICE_ID)
    assert (await turn.response()).type == CallbackType.UPDATE_MESSAGE
    page = env.fake.message(page.id)
    assert listed(page) == [ids[1], ids[0]]
    assert "Page 2" in page.embeds[0]["footer"]["text"]
    assert page.component(button(page, "next"))["disabled"]
    assert not page.component(button(page, "previous")).get("disabled")
    # The age-restricted job's prompt stays out of a plain channel.
    hidden = fields(page)[1]["value"]
    assert "nsfw" not in hidden
    assert "Prompt hidden here" in hidden
    assert "age-restricted" in page.embeds[0]["description"]

    back = await press(env, page, "previous", ALICE_ID)
    await back.response()
    page = env.fake.message(page.id)
    assert listed(page) == ids[:1:-1]
    assert "Page 1" in page.embeds[0]["footer"]["text"]

    there = await history(env, channel=NSFW_CHANNEL_ID)
    await (await press(env, there, "next", ALICE_ID)).response()
    assert "1girl, nsfw" in fields(env.fake.message(there.id))[1]["value"]

    # In direct messages, the history holds the DM jobs only: none of the server's.
    direct = await env.fake.slash_command(None, None, ALICE_ID, "history")
    answer = await ephemeral_answer(direct)
    assert answer.content == "You have no jobs in direct messages yet: `/imagine` makes one."


async def test_a_result_i_deleted_myself_is_no_longer_listed(env: BotEnv) -> None:
    fake = env.fake
    kept = await result_of(await env.imagine("1girl, kept", seed=1))
    gone = await result_of(await env.imagine("1girl, deleted", seed=2))
    kept_id, gone_id = job_id_in(kept), job_id_in(gone)
    assert listed(await history(env)) == [gone_id, kept_id]

    await fake.click_button(gone, f"animagine:delete:{gone_id}", ALICE_ID)
    await fake.wait_for(lambda: fake.message(gone.id).deleted, what="Alice's delete")
    async with asyncio.timeout(5):  # recorded right after the message is gone
        while (await env.job(gone_id)).deleted_at is None:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert listed(await history(env)) == [kept_id]


async def test_the_buttons_go_when_the_page_times_out(
    env: BotEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After ``VIEW_TIMEOUT_S`` (10 minutes; shortened here) without a press, the page keeps
    its embed and loses its buttons."""
    monkeypatch.setattr("bot.discord_app.cogs.history.VIEW_TIMEOUT_S", 0.3)
    await result_of(await env.imagine("1girl, red hair", seed=11))
    page = await history(env)
    assert page.custom_ids

    def bare() -> bool:
        return not env.fake.message(page.id).custom_ids

    await env.fake.wait_for(bare, 5.0, "the /history buttons removed")
    assert fields(env.fake.message(page.id))  # the jobs are still listed
