"""Localization against the fake Discord: the synced commands carry their translations, and
a member whose Discord speaks Japanese reads the replies in Japanese."""

from __future__ import annotations

from bot.discord_app.i18n import tr
from tests.e2e.conftest import BotEnv, ephemeral_answer, job_id_in
from tests.e2e.fake_discord import (
    ALICE_ID,
    BOB_ID,
    DEFAULT_GUILD_ID,
    GENERAL_CHANNEL_ID,
    CommandType,
    FakeMessage,
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


def _labels(message: FakeMessage) -> dict[str, str]:
    return {
        c["custom_id"]: c.get("label", "") for c in message.iter_components() if "custom_id" in c
    }


async def test_a_japanese_members_job_speaks_japanese_until_its_result(burst_env: BotEnv) -> None:
    """Queue line, Cancel, the result's text, embed and buttons: in the member's language,
    also when the result is posted after the interaction's token expired (the job keeps
    the locale it was asked in)."""
    fake, bot = burst_env.fake, burst_env.bot
    handle = await fake.slash_command(
        DEFAULT_GUILD_ID,
        GENERAL_CHANNEL_ID,
        ALICE_ID,
        "imagine",
        {"prompt": "1girl, solo", "seed": 3},
        locale="ja",
    )
    queued = await handle.original(lambda m: not m.loading and bool(m.custom_ids), 5.0)
    job_id = job_id_in(queued)
    head = tr(
        "ja",
        "**Queued** job #{job} · position {position} · ETA {eta}",
        job=job_id,
        position=1,
        eta="\0",
    )
    assert queued.content.startswith(head.split("\0")[0])
    assert "Queued" not in queued.content
    assert _labels(queued) == {f"animagine:cancel:{job_id}": tr("ja", "Cancel")}
    assert tr("ja", "Cancel") != "Cancel"
    assert (await burst_env.job(job_id)).locale == "ja"

    fake.expire_token(handle.token)  # the result goes to the channel with the bot's token
    assert await bot.service.run_burst() == 1
    [posted] = [m for m in fake.messages(GENERAL_CHANNEL_ID) if m.interaction_id is None]
    head, done = posted.content.split("\n")[:2]
    assert head == tr(
        "ja", "{member} your job #{job} is ready.", member=f"<@{ALICE_ID}>", job=job_id
    )
    assert done == tr(
        "ja", "**Done** · job #{job} · {images}", job=job_id, images=tr("ja", "1 image")
    )
    embed = posted.embeds[0]
    names = {field["name"] for field in embed["fields"]}
    assert {tr("ja", "Seed"), tr("ja", "Size"), tr("ja", "Steps")} <= names
    assert embed["footer"]["text"].startswith(
        tr("ja", "Job #{job} · {model}", job=job_id, model="")
    )
    labels = _labels(posted)
    assert labels[f"animagine:reroll:{job_id}"] == tr("ja", "Re-roll")
    assert labels[f"animagine:vary:{job_id}:0:subtle"] == tr("ja", "Vary (subtle)")
    assert fake.message(queued.id).content == tr(
        "ja", "Job #{job}: the answer was posted below.", job=job_id
    )


async def test_refusals_and_their_reasons_are_in_the_members_language(bot_env: BotEnv) -> None:
    fake = bot_env.fake
    too_many = await fake.slash_command(
        DEFAULT_GUILD_ID,
        GENERAL_CHANNEL_ID,
        ALICE_ID,
        "imagine",
        {"prompt": "(1girl:9), solo"},
        locale="ko",
    )
    text = (await ephemeral_answer(too_many)).content
    lead = tr("ko", "That request cannot be rendered: {reason}", reason="\0").split("\0")[0]
    assert text.startswith(lead)
    assert "weights must be" not in text  # the core's reason is translated too, values kept
    assert "'1girl'" in text

    rating = await fake.slash_command(
        DEFAULT_GUILD_ID,
        GENERAL_CHANNEL_ID,
        ALICE_ID,
        "imagine",
        {"prompt": "1girl", "rating": "explicit"},
        locale="zh-CN",
    )
    text = (await ephemeral_answer(rating)).content
    assert text == tr(
        "zh-CN",
        "**Not allowed here**: {reason}.",
        reason=tr(
            "zh-CN",
            "the {rating} rating is only allowed in age-restricted channels",
            rating="explicit",
        ),
    )
    assert "age-restricted" not in text
