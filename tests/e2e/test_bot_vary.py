"""Vary (subtle) and Vary (strong): img2img from a result, through the real client."""

from __future__ import annotations

from bot.request import INPUT_NAME
from tests.e2e.conftest import BotEnv, ephemeral_answer, infotext_of, job_id_in, result_of
from tests.e2e.fake_discord import ALICE_ID, BOB_ID


def button_rows(message: object) -> list[list[str]]:
    rows = getattr(message, "components")  # noqa: B009
    return [[c["custom_id"] for c in row["components"]] for row in rows]


async def test_vary_subtle_makes_a_new_job_from_that_image(bot_env: BotEnv) -> None:
    first = await result_of(await bot_env.imagine("1girl, red hair", seed=7, cfg=6.0))
    job_id = job_id_in(first)
    assert f"animagine:vary:{job_id}:0:subtle" in first.custom_ids
    assert f"animagine:vary:{job_id}:0:strong" in first.custom_ids
    click = await bot_env.fake.click_button(first, f"animagine:vary:{job_id}:0:subtle", BOB_ID)
    varied = await result_of(click)
    new_id = job_id_in(varied)
    assert new_id != job_id
    before, after = infotext_of(first), infotext_of(varied)
    assert after.prompt == before.prompt
    assert after.params["CFG scale"] == "6"
    assert after.params["Seed"] != before.params["Seed"]
    assert after.params["Denoising strength"] == "0.35"
    assert after.params["Image prompt"] == "vary"
    fields = {f["name"]: f["value"] for f in varied.embeds[0]["fields"]}
    expected = f"img2img · a variation of job #{job_id} image 1 · strength 0.35"
    assert fields["Image prompt"] == expected
    # The input image is stored beside the kept images, named by its content.
    job = await bot_env.job(new_id)
    assert job.user_id == BOB_ID
    image = job.request.image
    assert image is not None
    assert INPUT_NAME.fullmatch(image.source)
    vault = bot_env.bot.service.outbox.vault
    assert vault.input_path(image.source).read_bytes() == vault.read(job_id, 0)
    # Re-roll of the varied job: the same input, a new seed.
    again = await result_of(
        await bot_env.fake.click_button(varied, f"animagine:reroll:{new_id}", ALICE_ID)
    )
    third = await bot_env.job(job_id_in(again))
    assert third.request.image == image
    assert infotext_of(again).params["Seed"] != after.params["Seed"]
    assert infotext_of(again).params["Denoising strength"] == "0.35"


async def test_four_images_get_a_vary_pair_each_within_discords_limits(bot_env: BotEnv) -> None:
    first = await result_of(await bot_env.imagine("1girl", seed=3, count=4))
    job_id = job_id_in(first)
    rows = button_rows(first)
    assert len(rows) <= 5
    assert all(len(row) <= 5 for row in rows)
    for index in range(4):
        assert f"animagine:vary:{job_id}:{index}:subtle" in rows[2]
        assert f"animagine:vary:{job_id}:{index}:strong" in rows[3]
    click = await bot_env.fake.click_button(first, f"animagine:vary:{job_id}:2:strong", BOB_ID)
    varied = await result_of(click)
    info = infotext_of(varied)
    assert info.params["Denoising strength"] == "0.65"
    image = (await bot_env.job(job_id_in(varied))).request.image
    assert image is not None
    assert image.from_index == 2


async def test_vary_of_an_image_no_longer_kept_is_refused_clearly(bot_env: BotEnv) -> None:
    first = await result_of(await bot_env.imagine("1girl", seed=5))
    job_id = job_id_in(first)
    bot_env.bot.service.outbox.vault.remove(job_id, 0)
    click = await bot_env.fake.click_button(first, f"animagine:vary:{job_id}:0:subtle", ALICE_ID)
    answer = await ephemeral_answer(click)
    assert "no longer kept" in answer.content
