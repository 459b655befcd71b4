"""What the moderation verdicts mean for delivery: withheld images are never uploaded,
flagged ones in age-restricted channels go behind a spoiler, and the member is told."""

from __future__ import annotations

from pathlib import Path

from bot.engine import Engine
from bot.moderation.classifier import Tagger
from tests.e2e.conftest import BotEnv, SettingsFactory, infotext_of, job_id_in, result_of, start_bot
from tests.e2e.fake_discord import NSFW_CHANNEL_ID, FakeDiscord
from tests.support.tiny_tagger import save_tiny_tagger


async def test_verdicts_decide_what_is_posted(
    fake: FakeDiscord, make_settings: SettingsFactory, engine: Engine, tmp_path: Path
) -> None:
    tagger = Tagger.load(str(save_tiny_tagger(tmp_path / "tagger", scores={"explicit": 0.9})))
    async with start_bot(fake, make_settings(), engine, classifier=tagger) as bot:
        env = BotEnv(fake, bot)
        plain = await result_of(await env.imagine("1girl", seed=11))
        job_id = job_id_in(plain)
        assert plain.attachments == []
        assert "Image 1 (seed 11) was not posted: withheld: rated explicit" in plain.content
        assert f"animagine:upscale:{job_id}:0" not in plain.custom_ids
        assert f"animagine:reroll:{job_id}" in plain.custom_ids

        restricted = await result_of(await env.imagine("1girl", channel=NSFW_CHANNEL_ID))
        [png] = restricted.attachments
        assert png.filename.startswith("SPOILER_animagine_")
        assert "Image 1 is behind a spoiler: rated explicit" in restricted.content
        assert infotext_of(restricted).params["Size"] == "64x64"
