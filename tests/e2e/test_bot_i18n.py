"""Localization against the fake Discord: the synced commands carry their translations, and
a member whose Discord speaks Japanese reads the replies in Japanese."""

from __future__ import annotations

from tests.e2e.conftest import BotEnv, ephemeral_answer
from tests.e2e.fake_discord import (
    ALICE_ID,
    BOB_ID,
    DEFAULT_GUILD_ID,
    GENERAL_CHANNEL_ID,
    CommandType,
)

LOCALES = {"ja", "zh-CN", "ko"}


async def test_synced_commands_carry_ja_zh_and_ko_localizations(bot_env: BotEnv) -> None:
    fake = bot_env.fake
    imagine = fake.command("imagine")
    assert imagine["name_localizations"]["ja"] == "画像生成"
    assert imagine["description_localizations"]["ja"] == "Animagine XL 3.1 で画像を生成します"
    assert set(imagine["name_localizations"]) == LOCALES
    prompt = next(o for o in imagine["options"] if o["name"] == "prompt")
    assert prompt["name_localizations"]["ko"] == "프롬프트"
    for command in fake.commands():
        assert set(command.get("name_localizations") or {}) == LOCALES, command["name"]
        if int(command.get("type", 1)) == CommandType.CHAT_INPUT:
            assert set(command.get("description_localizations") or {}) == LOCALES
    menu = fake.command("Generation info", type=CommandType.MESSAGE)
    assert menu["name_localizations"]["zh-CN"] == "生成信息"
    settings = fake.command("settings")
    moderation = next(o for o in settings["options"] if o["name"] == "moderation")
    assert moderation["name_localizations"]["ja"] == "モデレーション"


async def test_a_japanese_member_reads_japanese_and_an_english_one_english(
    bot_env: BotEnv,
) -> None:
    fake = bot_env.fake
    ja = await fake.slash_command(
        DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "limits", locale="ja"
    )
    text = (await ephemeral_answer(ja)).content
    assert "ティア **default**: 今 4 枚生成できます。" in text
    assert "今日: 0/100 枚使用、残り 100 枚" in text
    en = await fake.slash_command(
        DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "limits", locale="en-US"
    )
    text = (await ephemeral_answer(en)).content
    assert "Tier **default**: you can ask for 4 image(s) now." in text

    help_ = await fake.slash_command(
        DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "help", locale="ja"
    )
    embed = (await help_.response()).data["embeds"][0]
    assert embed["title"] == "Animagine XL 3.1 のプロンプトの書き方"
    assert {"品質タグ", "レーティングタグ", "年代タグ"} <= {f["name"] for f in embed["fields"]}

    # a refused check: Alice lacks Manage Server, and is told so in her language
    refused = await fake.slash_command(
        DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "settings", subcommand="show", locale="ko"
    )
    assert (await ephemeral_answer(refused)).content == (
        "/settings는 '서버 관리' 권한이 있는 멤버만 사용할 수 있습니다."
    )
    mod = await fake.slash_command(
        DEFAULT_GUILD_ID,
        GENERAL_CHANNEL_ID,
        BOB_ID,
        "mod",
        {"member": BOB_ID, "reason": "test"},
        subcommand="ban",
        locale="zh-CN",
    )
    assert (await ephemeral_answer(mod)).content == "不能封禁自己或机器人。"
