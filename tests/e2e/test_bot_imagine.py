"""/imagine end to end: acknowledgement, queue message, progress, the PNG and its buttons."""

from __future__ import annotations

import pytest

from bot.discord_app.requests import ImagineOptions, build_request, check_defaults
from bot.engine import Engine
from bot.request import RequestError
from bot.storage import JobStatus
from tests.e2e.conftest import (
    BotEnv,
    SettingsFactory,
    ephemeral_answer,
    infotext_of,
    job_id_in,
    result_of,
    start_bot,
)
from tests.e2e.fake_discord import ALICE_ID, EPHEMERAL, CallbackType, FakeDiscord


async def test_imagine_to_final_png_with_infotext(bot_env: BotEnv) -> None:
    fake = bot_env.fake
    handle = await bot_env.imagine(
        "1girl, solo, smile",
        negative="lowres",
        seed=1234,
        steps=2,
        cfg=5.0,
        sampler="Euler",
        quality="(None)",
        style="Anime",
        rating="safe",
        year="newest",
    )
    response = await handle.response()
    assert response.type == CallbackType.DEFERRED_CHANNEL_MESSAGE
    assert not response.ephemeral

    message = await result_of(handle)
    job_id = job_id_in(message)
    queued = message.edits[0]
    assert f"job #{job_id}" in queued["content"]
    assert "ETA" in queued["content"]
    assert [c["custom_id"] for row in queued["components"] for c in row["components"]] == [
        f"animagine:cancel:{job_id}"
    ]

    assert len(message.attachments) == 1
    png = message.attachments[0]
    assert png.filename.endswith(".png")
    assert png.data.startswith(b"\x89PNG")
    info = infotext_of(message)
    assert info.params["Seed"] == "1234"
    assert info.params["Steps"] == "2"
    assert info.params["Sampler"] == "Euler"
    assert info.params["CFG scale"] == "5"
    assert info.params["Size"] == "64x64"
    assert info.params["Style preset"] == "Anime"
    assert info.prompt.startswith("1girl, solo, smile, safe, newest")
    assert info.negative_prompt.endswith("lowres")

    embed = message.embeds[0]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Seed"] == "1234"
    assert fields["Sampler"] == "Euler"
    assert "1girl, solo, smile" in embed["description"]
    assert set(message.custom_ids) == {
        f"animagine:reroll:{job_id}",
        f"animagine:edit:{job_id}",
        f"animagine:delete:{job_id}",
        f"animagine:upscale:{job_id}:0",
        f"animagine:vary:{job_id}:0:subtle",
        f"animagine:vary:{job_id}:0:strong",
    }

    job = await bot_env.job(job_id)
    assert job.status is JobStatus.FINISHED
    assert job.user_id == ALICE_ID
    assert job.message_id == message.id
    assert fake.unknown_requests == []


async def test_a_bad_request_gets_an_immediate_ephemeral_answer(bot_env: BotEnv) -> None:
    handle = await bot_env.imagine("   ", style="Anime")
    response = await handle.response()
    assert response.type == CallbackType.CHANNEL_MESSAGE
    assert response.data["flags"] & EPHEMERAL
    assert response.data["content"] == (
        "That request cannot be rendered: the prompt is empty: describe the image with "
        "Danbooru tags"
    )
    assert await bot_env.jobs() == []


async def test_the_channel_policy_refuses_ephemerally(bot_env: BotEnv) -> None:
    handle = await bot_env.imagine("1girl", rating="explicit")  # #general: not age-restricted
    assert (await handle.response()).type == CallbackType.DEFERRED_CHANNEL_MESSAGE
    answer = await ephemeral_answer(handle)
    assert answer.content
    assert handle.original_message is not None
    assert handle.original_message.deleted  # the thinking reply is gone
    assert await bot_env.jobs() == []


async def test_imagine_works_in_direct_messages(
    fake: FakeDiscord, make_settings: SettingsFactory, engine: Engine
) -> None:
    settings = make_settings(ANIMAGINE_MODERATION__DM_ALLOWED="true")
    async with start_bot(fake, settings, engine) as bot:
        handle = await BotEnv(fake, bot).imagine("1girl", guild=None, channel=None)
        message = await result_of(handle)
        assert message.channel_id == fake.dm_channel(ALICE_ID).id
        assert infotext_of(message).params["Size"] == "64x64"


async def test_imagine_registers_every_option_with_the_cards_sizes(bot_env: BotEnv) -> None:
    command = bot_env.fake.command("imagine")
    options = {o["name"]: o for o in command["options"]}
    assert list(options) == [
        "prompt", "negative", "aspect", "quality", "style", "rating", "year", "seed",
        "steps", "cfg", "sampler", "count", "hires", "image", "strength",
    ]  # fmt: skip
    assert options["prompt"]["required"]
    assert options["image"]["type"] == 11  # ATTACHMENT
    assert (options["strength"]["min_value"], options["strength"]["max_value"]) == (0.05, 1.0)
    aspects = {c["name"]: c["value"] for c in options["aspect"]["choices"]}
    assert len(aspects) == 9
    assert aspects["Portrait 13:19 (832x1216)"] == "832x1216"
    assert (options["count"]["min_value"], options["count"]["max_value"]) == (1, 4)
    assert [c["value"] for c in options["rating"]["choices"]] == [
        "safe", "sensitive", "nsfw", "explicit",
    ]  # fmt: skip
    assert "Euler a" in [c["value"] for c in options["sampler"]["choices"]]
    assert "Standard v3.1" in [c["value"] for c in options["quality"]["choices"]]


def test_options_beat_server_defaults_which_beat_the_configuration(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    defaults = {"steps": 5, "max_steps": 8, "cfg": 6, "width": 96, "hires": True, "style": "Anime"}
    built = build_request(ImagineOptions(prompt="1girl"), defaults, settings)
    assert (built.steps, built.cfg, built.width, built.height) == (5, 6.0, 96, 64)
    assert built.hires is not None
    assert built.style == "Anime"
    assert built.quality == settings.prompts.quality
    chosen = ImagineOptions(prompt="1girl", aspect="832x1216", steps=7, hires=False, cfg=4.5)
    built = build_request(chosen, defaults, settings)
    assert (built.width, built.height, built.steps, built.cfg, built.hires) == (
        832, 1216, 7, 4.5, None,
    )  # fmt: skip
    with pytest.raises(RequestError, match="at most 8 steps"):
        build_request(ImagineOptions(prompt="1girl", steps=9), defaults, settings)
    with pytest.raises(RequestError, match="default steps must be between 1 and 8"):
        check_defaults({"max_steps": 8, "steps": 9}, settings)
    assert check_defaults({"sampler": "euler A"}, settings) == {"sampler": "Euler a"}
