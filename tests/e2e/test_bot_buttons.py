"""Every button of a job message, and the Edit modal, through the real client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.engine import Engine
from bot.storage import JobStatus, MemberStore
from tests.e2e.conftest import (
    BotEnv,
    SettingsFactory,
    ephemeral_answer,
    infotext_of,
    job_id_in,
    queued_message,
    result_of,
    start_bot,
    until_running,
)
from tests.e2e.fake_discord import (
    ALICE_ID,
    BOB_ID,
    DEFAULT_GUILD_ID,
    CallbackType,
    FakeDiscord,
    FakeMember,
    FakeUser,
    default_guild,
)

CAROL_ID = 700_000_000_000_000_003


@pytest.fixture
async def env3(make_settings: SettingsFactory, engine: Engine) -> AsyncIterator[BotEnv]:
    """The default server plus Carol, a plain member like Alice."""
    guild = default_guild()
    guild.members.append(FakeMember(FakeUser(CAROL_ID, "carol", "Carol")))
    async with FakeDiscord(guilds=[guild]) as fake, start_bot(fake, make_settings(), engine) as bot:
        yield BotEnv(fake, bot)


async def test_reroll_keeps_the_settings_with_a_new_seed(bot_env: BotEnv) -> None:
    first = await result_of(await bot_env.imagine("1girl, red hair", seed=7, cfg=6.0))
    job_id = job_id_in(first)
    click = await bot_env.fake.click_button(first, f"animagine:reroll:{job_id}", BOB_ID)
    assert (await click.response()).type == CallbackType.DEFERRED_CHANNEL_MESSAGE
    second = await result_of(click)
    new_id = job_id_in(second)
    assert new_id != job_id
    before, after = infotext_of(first), infotext_of(second)
    assert after.prompt == before.prompt
    assert after.params["CFG scale"] == "6"
    assert after.params["Seed"] != before.params["Seed"]
    assert (await bot_env.job(new_id)).user_id == BOB_ID  # charged to who pressed it


async def test_upscale_runs_the_hires_pass_on_that_images_seed(bot_env: BotEnv) -> None:
    first = await result_of(await bot_env.imagine("1girl", seed=100, count=2))
    job_id = job_id_in(first)
    assert len(first.attachments) == 2
    assert f"animagine:upscale:{job_id}:1" in first.custom_ids
    click = await bot_env.fake.click_button(first, f"animagine:upscale:{job_id}:1", ALICE_ID)
    upscaled = await result_of(click)
    info = infotext_of(upscaled)
    assert info.params["Seed"] == "101"
    assert info.params["Hires upscale"] == "1.5"
    assert len(upscaled.attachments) == 1
    assert upscaled.embeds[0]["fields"][1] == {"name": "Size", "value": "96x96", "inline": True}
    assert not any("upscale" in c for c in upscaled.custom_ids)  # no second hires pass


async def test_edit_opens_a_prefilled_modal_and_queues_the_edit(bot_env: BotEnv) -> None:
    fake = bot_env.fake
    first = await result_of(await bot_env.imagine("1girl, blue hair", negative="bad", seed=5))
    job_id = job_id_in(first)
    click = await fake.click_button(first, f"animagine:edit:{job_id}", ALICE_ID)
    modal = await click.modal()
    inputs = {
        c["custom_id"]: c.get("value")
        for row in modal.data["components"]
        for c in row.get("components", [row.get("component", {})])
    }
    assert inputs == {"prompt": "1girl, blue hair", "negative": "bad", "seed": "5"}
    submit = await fake.submit_modal(
        modal.custom_id or "", {"prompt": "1boy, green hair", "seed": "42"}, ALICE_ID
    )
    edited = await result_of(submit)
    info = infotext_of(edited)
    assert info.params["Seed"] == "42"
    assert "1boy, green hair" in info.prompt
    assert info.negative_prompt.endswith("bad")

    again = await fake.click_button(first, f"animagine:edit:{job_id}", ALICE_ID)
    modal = await again.modal()
    wrong = await fake.submit_modal(modal.custom_id or "", {"seed": "tomorrow"}, ALICE_ID)
    answer = await ephemeral_answer(wrong)
    assert "seed must be a whole number" in answer.content


async def test_delete_is_for_the_requester_or_a_moderator(env3: BotEnv) -> None:
    fake = env3.fake
    mine = await result_of(await env3.imagine("1girl", user=ALICE_ID))
    job_id = job_id_in(mine)
    refused = await fake.click_button(mine, f"animagine:delete:{job_id}", CAROL_ID)
    assert "Only the member who asked" in (await ephemeral_answer(refused)).content
    assert not fake.message(mine.id).deleted

    own = await fake.click_button(mine, f"animagine:delete:{job_id}", ALICE_ID)
    await own.response()
    await fake.wait_for(lambda: fake.message(mine.id).deleted, what="Alice's delete")

    theirs = await result_of(await env3.imagine("1girl", user=CAROL_ID))
    other_id = job_id_in(theirs)
    moderated = await fake.click_button(theirs, f"animagine:delete:{other_id}", BOB_ID)
    await moderated.response()
    await fake.wait_for(lambda: fake.message(theirs.id).deleted, what="the moderator's delete")
    store = MemberStore(env3.bot.db)
    async with asyncio.timeout(5):  # recorded right after the delete
        while not (events := await env3.bot.db.run(store.events, guild_id=DEFAULT_GUILD_ID)):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert [(e.kind, e.user_id, e.actor_id, e.job_id) for e in events] == [
        ("image_deleted", CAROL_ID, BOB_ID, other_id)
    ]


async def test_cancel_while_queued_refunds(make_settings: SettingsFactory, engine: Engine) -> None:
    guild = default_guild()
    guild.members.append(FakeMember(FakeUser(CAROL_ID, "carol", "Carol")))
    async with (
        FakeDiscord(guilds=[guild]) as fake,
        start_bot(fake, make_settings(), engine, start_worker=False) as bot,
    ):
        env = BotEnv(fake, bot)
        handle = await env.imagine("1girl")
        message = await queued_message(handle)
        job_id = job_id_in(message)
        refused = await fake.click_button(message, f"animagine:cancel:{job_id}", CAROL_ID)
        assert "only the member who asked" in (await ephemeral_answer(refused)).content
        assert (await env.job(job_id)).status is JobStatus.QUEUED

        click = await fake.click_button(message, f"animagine:cancel:{job_id}", ALICE_ID)
        answer = await ephemeral_answer(click)
        assert f"Job #{job_id} was cancelled" in answer.content
        assert "refunded" in answer.content
        cancelled = await handle.original(lambda m: "cancelled" in m.content)
        assert cancelled.custom_ids == []
        job = await env.job(job_id)
        assert job.status is JobStatus.CANCELLED
        assert job.refunded_at is not None
        assert await bot.service.run_burst() == 0


async def test_cancel_while_running_stops_at_the_next_step(bot_env: BotEnv) -> None:
    bot, fake = bot_env.bot, bot_env.fake
    handle = await bot_env.imagine("1girl", steps=150)
    message = await queued_message(handle)
    job_id = job_id_in(message)
    await until_running(bot, job_id)
    click = await fake.click_button(message, f"animagine:cancel:{job_id}", ALICE_ID)
    answer = await ephemeral_answer(click)
    assert f"Stopping job #{job_id}" in answer.content
    final = await handle.original(lambda m: "was cancelled" in m.content, timeout=10)
    assert "stays charged" in final.content
    assert final.attachments == []
    assert (await bot_env.job(job_id)).status is JobStatus.CANCELLED
