"""Prompts the bot cannot render well are refused at once through Discord, with the same
words as the CLI: emphasis weights out of 0..3 (non-finite ones included, from the member's
text or from a wildcard) and prompts of only control characters; nothing is queued."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.engine import Engine
from tests.e2e.conftest import BotEnv, SettingsFactory, ephemeral_answer, start_bot
from tests.e2e.fake_discord import FakeDiscord


@pytest.mark.parametrize(
    ("prompt", "reason"),
    [
        ("(1girl:" + "9" * 400 + ")", "the prompt weights '1girl' by a number too large to use"),
        ("1girl, (smile:70000)", "the prompt weights 'smile' by 7e+04 (after nesting)"),
        ("(((((((((((((1girl)))))))))))))", "the prompt weights '1girl' by 3.452"),
        ("\x00\x00\x00", "the prompt is empty"),
        ("\x01\x1b\u200b", "the prompt is empty"),
    ],
)
async def test_bad_prompts_are_refused_before_queueing(
    bot_env: BotEnv, prompt: str, reason: str
) -> None:
    answer = await ephemeral_answer(await bot_env.imagine(prompt))
    assert answer.content.startswith(f"That request cannot be rendered: {reason}")
    assert await bot_env.jobs() == []


async def test_a_wildcard_with_a_huge_weight_is_refused(
    fake: FakeDiscord, make_settings: SettingsFactory, engine: Engine, tmp_path: Path
) -> None:
    folder = tmp_path / "wildcards"
    folder.mkdir()
    (folder / "boost.txt").write_text("(1girl:999)\n", encoding="utf-8")
    settings = make_settings(ANIMAGINE_PROMPTS__WILDCARDS_DIR=str(folder))
    async with start_bot(fake, settings, engine) as bot:
        env = BotEnv(fake, bot)
        answer = await ephemeral_answer(await env.imagine("__boost__, smile"))
        assert answer.content.startswith(
            "That request cannot be rendered: the prompt weights '1girl' by 999"
        )
        assert await env.jobs() == []
