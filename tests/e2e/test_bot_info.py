"""/queue, /limits, /help, "Generation info" and /settings."""

from __future__ import annotations

from bot.storage import GuildStore
from tests.e2e.conftest import (
    BotEnv,
    ephemeral_answer,
    infotext_of,
    job_id_in,
    queued_message,
    result_of,
)
from tests.e2e.fake_discord import (
    ALICE_ID,
    BOB_ID,
    DEFAULT_GUILD_ID,
    GENERAL_CHANNEL_ID,
    CallbackType,
)


async def test_queue_lists_my_jobs_with_positions_and_etas(burst_env: BotEnv) -> None:
    fake = burst_env.fake
    ids = [job_id_in(await queued_message(await burst_env.imagine("1girl"))) for _ in range(2)]
    await queued_message(await burst_env.imagine("1boy", user=BOB_ID))
    handle = await fake.slash_command(DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "queue")
    text = (await ephemeral_answer(handle)).content
    assert f"Job #{ids[0]}: position 1, ETA ~" in text
    assert f"Job #{ids[1]}: position 3, ETA ~" in text  # Bob's job goes between (fairness)
    assert "Queue: 3 jobs waiting; empty in ~" in text


async def test_limits_and_help_answer_ephemerally(bot_env: BotEnv) -> None:
    fake = bot_env.fake
    limits = await fake.slash_command(DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "limits")
    text = (await ephemeral_answer(limits)).content
    assert "Tier **default**: you can ask for 4 image(s) now." in text
    assert "today: 0/100 used, 100 left" in text
    admin = await fake.slash_command(DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, BOB_ID, "limits")
    assert "exempt from every limit" in (await ephemeral_answer(admin)).content

    help_ = await fake.slash_command(DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "help")
    response = await help_.response()
    assert response.type == CallbackType.CHANNEL_MESSAGE
    assert response.ephemeral
    embed = response.data["embeds"][0]
    assert "Danbooru tags" in embed["description"]
    names = [f["name"] for f in embed["fields"]]
    assert {"Quality tags", "Rating tags", "Year tags", "Aesthetic tags"} <= set(names)


async def test_generation_info_shows_the_infotext_and_the_job(bot_env: BotEnv) -> None:
    fake = bot_env.fake
    result = await result_of(await bot_env.imagine("1girl, silver hair", seed=77))
    menu = await fake.message_context_menu("Generation info", result, BOB_ID)
    answer = await ephemeral_answer(menu)
    infotext, job = answer.embeds
    assert infotext["title"] == result.attachments[0].filename
    assert "Seed: 77" in infotext["description"]
    assert infotext_of(result).prompt in infotext["description"]
    assert job["title"] == f"Job #{job_id_in(result)}"
    assert {"name": "Requested by", "value": f"<@{ALICE_ID}>", "inline": True} in job["fields"]

    other = fake.seed_message(GENERAL_CHANNEL_ID, "just words", author=ALICE_ID)
    empty = await fake.message_context_menu("Generation info", other, BOB_ID)
    assert "no image with generation settings" in (await ephemeral_answer(empty)).content


async def test_settings_are_for_server_admins_and_shape_imagine(bot_env: BotEnv) -> None:
    fake, bot = bot_env.fake, bot_env.bot
    command = fake.command("settings")
    assert int(command["default_member_permissions"]) == 1 << 5  # Manage Server
    denied = await fake.slash_command(
        DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "settings", {}, "show"
    )
    assert "Manage Server" in (await ephemeral_answer(denied)).content

    saved = await fake.slash_command(
        DEFAULT_GUILD_ID,
        GENERAL_CHANNEL_ID,
        BOB_ID,
        "settings",
        {"steps": 3, "max_steps": 6, "style": "Anime", "sampler": "DDIM"},
        "defaults",
    )
    answer = await ephemeral_answer(saved)
    assert answer.content == "Saved."
    fields = {f["name"]: f["value"] for f in answer.embeds[0]["fields"]}
    assert fields["Steps"] == "3 (at most 6)"
    assert fields["Style"] == "Anime"
    assert await bot.db.run(GuildStore(bot.db).get_defaults, DEFAULT_GUILD_ID) == {
        "steps": 3,
        "max_steps": 6,
        "style": "Anime",
        "sampler": "DDIM",
    }

    result = await result_of(await bot_env.imagine("1girl"))
    info = infotext_of(result)
    assert (info.params["Steps"], info.params["Sampler"]) == ("3", "DDIM")
    assert info.params["Style preset"] == "Anime"

    too_many = await bot_env.imagine("1girl", steps=10)
    text = (await ephemeral_answer(too_many)).content
    assert "this server allows at most 6 steps" in text

    bad = await fake.slash_command(
        DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, BOB_ID, "settings", {"steps": 9}, "defaults"
    )
    assert (
        "Not saved: the default steps must be between 1 and 6"
        in (await ephemeral_answer(bad)).content
    )

    limits = await fake.slash_command(
        DEFAULT_GUILD_ID,
        GENERAL_CHANNEL_ID,
        BOB_ID,
        "settings",
        {"member_burst": 1, "member_refill_seconds": 600.0, "server_daily_quota": 50},
        "limits",
    )
    fields = {f["name"]: f["value"] for f in (await ephemeral_answer(limits)).embeds[0]["fields"]}
    assert fields["Members (tier default)"].startswith("1 image at once, then one every 10 min")
    assert "50 a day" in fields["Whole server"]
    record = await bot.db.run(GuildStore(bot.db).get, DEFAULT_GUILD_ID)
    assert record is not None
    assert record.tier_overrides == {"default": {"burst": 1, "refill_seconds": 600.0}}
    assert record.server_limits == {"daily_quota": 50}

    reset = await fake.slash_command(
        DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, BOB_ID, "settings", {"reset": True}, "defaults"
    )
    await ephemeral_answer(reset)
    assert await bot.db.run(GuildStore(bot.db).get_defaults, DEFAULT_GUILD_ID) == {}
