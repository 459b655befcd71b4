"""Moderation through Discord: withheld images are never uploaded where they may not be seen,
age-restricted channels (and their threads) get spoilers, DMs are refused by default,
moderators have "Who made this?" and /mod, servers tune the policy with /settings, and the
log channel hears about refusals, withheld images and bans.

The image classifier is the tiny ONNX tagger of ``tests/support/tiny_tagger.py``, told to
rate every image explicit (0.9).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.discord_app.moderation import DurationError, parse_duration
from bot.engine import Engine
from bot.moderation.classifier import Tagger
from bot.storage import GuildStore, JobStatus, JobStore, MemberStore
from tests.e2e.conftest import (
    LOG_CHANNEL_ID,
    MIA_ID,
    BotEnv,
    SettingsFactory,
    ephemeral_answer,
    infotext_of,
    job_id_in,
    moderated_guild,
    queued_message,
    result_of,
    start_bot,
    uploads,
)
from tests.e2e.fake_discord import (
    ALICE_ID,
    BOB_ID,
    DEFAULT_GUILD_ID,
    GENERAL_CHANNEL_ID,
    NSFW_CHANNEL_ID,
    NSFW_THREAD_ID,
    THREAD_ID,
    CallbackType,
    CommandType,
    FakeDiscord,
    FakeMessage,
    InteractionHandle,
    Permission,
)
from tests.support.tiny_tagger import save_tiny_tagger

EXPLICIT = {"explicit": 0.9}


@pytest.fixture
def explicit_tagger(tmp_path: Path) -> Tagger:
    return Tagger.load(str(save_tiny_tagger(tmp_path / "tagger", scores=EXPLICIT)))


@dataclass
class ModEnv(BotEnv):
    """A bot over :func:`moderated_guild` (log channel, Mia the moderator)."""

    async def mod(self, sub: str, options: dict[str, Any], *, user: int = MIA_ID) -> FakeMessage:
        handle = await self.fake.slash_command(
            DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, user, "mod", options, sub
        )
        return await ephemeral_answer(handle)

    async def settings(
        self, sub: str, options: dict[str, Any], *, user: int = BOB_ID
    ) -> FakeMessage:
        handle = await self.fake.slash_command(
            DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, user, "settings", options, sub
        )
        return await ephemeral_answer(handle)

    async def events(self) -> list[tuple[str, int | None, int | None]]:
        """(kind, member, actor) of the server's moderation events, oldest first."""
        store = MemberStore(self.bot.db)
        found = await self.bot.db.run(store.events, guild_id=DEFAULT_GUILD_ID)
        return [(e.kind, e.user_id, e.actor_id) for e in reversed(found)]

    def log(self) -> list[FakeMessage]:
        return self.fake.messages(LOG_CHANNEL_ID)

    async def log_message(self, pattern: str, within: float = 5.0) -> FakeMessage:
        """The first message of the log channel that matches ``pattern``."""
        return await self.fake.wait_for_message(
            lambda m: re.search(pattern, m.content) is not None,
            channel_id=LOG_CHANNEL_ID,
            timeout=within,
        )


@pytest.fixture
async def mod_env(
    make_settings: SettingsFactory, engine: Engine, explicit_tagger: Tagger
) -> AsyncIterator[ModEnv]:
    """The moderated guild, the explicit tagger, a background worker."""
    async with (
        FakeDiscord(guilds=[moderated_guild()]) as fake,
        start_bot(fake, make_settings(), engine, classifier=explicit_tagger) as bot,
    ):
        yield ModEnv(fake, bot)


async def refusal(handle: InteractionHandle) -> str:
    """The ephemeral answer of a refused request (its thinking reply gone)."""
    answer = await ephemeral_answer(handle)
    assert handle.original_message is None or handle.original_message.deleted
    return answer.content


# ------------------------------------------------------------------------ where images go


async def test_flagged_images_are_withheld_outside_age_restricted_channels(
    mod_env: ModEnv,
) -> None:
    env, fake = mod_env, mod_env.fake
    plain = await env.imagine("1girl", seed=11)
    shown = await result_of(plain)
    job_id = job_id_in(shown)
    assert shown.attachments == []
    assert "Image 1 (seed 11) was not posted: withheld: rated explicit (0.90" in shown.content
    assert f"animagine:upscale:{job_id}:0" not in shown.custom_ids
    in_thread = await env.imagine("1girl", channel=THREAD_ID)  # follows #general
    assert (await result_of(in_thread)).attachments == []
    # Not one byte of the images went to those channels, by any route.
    assert uploads(fake, channel_id=GENERAL_CHANNEL_ID, handles=[plain]) == []
    assert uploads(fake, channel_id=THREAD_ID, handles=[in_thread]) == []

    restricted = await result_of(await env.imagine("1girl", channel=NSFW_CHANNEL_ID))
    [png] = restricted.attachments
    assert png.filename.startswith("SPOILER_animagine_")
    assert "Image 1 is behind a spoiler: rated explicit" in restricted.content
    threaded = await result_of(await env.imagine("1girl", channel=NSFW_THREAD_ID))
    assert threaded.attachments[0].filename.startswith("SPOILER_animagine_")

    jobs = await env.jobs()
    assert [(j.channel.age_restricted, j.channel.is_thread) for j in jobs] == [
        (False, False), (False, True), (True, False), (True, True),
    ]  # fmt: skip
    images = await env.bot.db.run(JobStore(env.bot.db).images, job_id)
    assert images[0].moderation_scores is not None
    assert images[0].moderation_scores["explicit"] == pytest.approx(0.9, abs=1e-3)
    assert [kind for kind, _, _ in await env.events()] == ["image_withheld"] * 2


async def test_without_a_classifier_only_age_restricted_channels_get_images(
    fake: FakeDiscord, make_settings: SettingsFactory, engine: Engine
) -> None:
    settings = make_settings(ANIMAGINE_MODERATION__FAIL_CLOSED="true")
    async with start_bot(fake, settings, engine) as bot:  # no tagger
        env = BotEnv(fake, bot)
        plain = await env.imagine("1girl", seed=3)
        shown = await result_of(plain)
        assert shown.attachments == []
        assert "was not posted: withheld: the image check could not run" in shown.content
        assert uploads(fake, channel_id=GENERAL_CHANNEL_ID, handles=[plain]) == []
        restricted = await result_of(await env.imagine("1girl", channel=NSFW_CHANNEL_ID))
        assert restricted.attachments[0].filename.startswith("SPOILER_animagine_")


async def test_direct_messages_are_refused_by_default(bot_env: BotEnv) -> None:
    handle = await bot_env.imagine("1girl", guild=None, channel=None)
    text = await refusal(handle)
    assert text == "**Not allowed here**: the bot does not make images in direct messages."
    assert await bot_env.jobs() == []


# ------------------------------------------------------------------------ moderators


async def test_who_made_this_is_for_moderators(mod_env: ModEnv) -> None:
    env, fake = mod_env, mod_env.fake
    menu = fake.command("Who made this?", type=CommandType.MESSAGE)
    assert int(menu["default_member_permissions"]) == Permission.MANAGE_MESSAGES
    result = await result_of(
        await env.imagine("1girl, silver hair", channel=NSFW_CHANNEL_ID, seed=5)
    )
    job_id = job_id_in(result)

    denied = await fake.message_context_menu("Who made this?", result, ALICE_ID)
    assert (await denied.response()).ephemeral
    assert "Only moderators" in (await ephemeral_answer(denied)).content

    asked = await fake.message_context_menu("Who made this?", result, MIA_ID)
    answer = await ephemeral_answer(asked)
    [embed] = answer.embeds
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert embed["title"] == f"Job #{job_id}"
    assert "1girl, silver hair" in embed["description"]
    assert fields["Requested by"] == f"<@{ALICE_ID}> (`{ALICE_ID}`)"
    assert fields["Server"] == f"Test Server (`{DEFAULT_GUILD_ID}`)"
    assert fields["Channel"] == f"<#{NSFW_CHANNEL_ID}> (age-restricted)"
    message_link = f"https://discord.com/channels/{DEFAULT_GUILD_ID}/{NSFW_CHANNEL_ID}/{result.id}"
    assert message_link in fields["Message"]
    assert fields["Image 1 · seed 5"].startswith("explicit 0.90 ⚠ · questionable 0.01")

    words = fake.seed_message(GENERAL_CHANNEL_ID, "hello", author=ALICE_ID)
    other = await fake.message_context_menu("Who made this?", words, MIA_ID)
    assert "not an image message of this bot" in (await ephemeral_answer(other)).content


def test_ban_durations() -> None:
    assert parse_duration("1h") == timedelta(hours=1)
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration(" 1d 12H ") == timedelta(days=1, hours=12)
    assert parse_duration("2w30m") == timedelta(weeks=2, minutes=30)
    for bad in ("", "soon", "1 year", "0h", "5", "h", "99999w"):
        with pytest.raises(DurationError):
            parse_duration(bad)


async def test_mod_ban_refuses_imagine_and_buttons_until_unban(
    make_settings: SettingsFactory, engine: Engine
) -> None:
    async with (
        FakeDiscord(guilds=[moderated_guild()]) as fake,
        start_bot(fake, make_settings(), engine, start_worker=False) as bot,
    ):
        env = ModEnv(fake, bot)
        first = await env.imagine("1girl", seed=1)
        await queued_message(first)
        await bot.service.run_burst()
        done = await result_of(first)
        waiting = job_id_in(await queued_message(await env.imagine("1girl, waiting")))

        assert (
            "Only moderators"
            in (await env.mod("ban", {"member": MIA_ID, "reason": "x"}, user=ALICE_ID)).content
        )
        bad = await env.mod("ban", {"member": ALICE_ID, "reason": "spam", "duration": "soon"})
        assert bad.content.startswith("Not banned: 'soon' is not a duration")
        banned = await env.mod("ban", {"member": ALICE_ID, "reason": "spam", "duration": "1h"})
        assert banned.content.startswith(f"Banned <@{ALICE_ID}> from the bot until <t:")
        assert banned.content.endswith(": spam. 1 waiting job cancelled.")
        assert (await env.job(waiting)).status is JobStatus.CANCELLED

        text = await refusal(await env.imagine("1girl"))
        assert re.fullmatch(
            r"\*\*Banned\*\*: You are banned from generating images: spam\n"
            r"The ban ends <t:\d+:R>\.",
            text,
        )
        reroll = await fake.click_button(done, f"animagine:reroll:{job_id_in(done)}", ALICE_ID)
        assert (await refusal(reroll)).startswith("**Banned**: You are banned")

        unbanned = await env.mod("unban", {"member": ALICE_ID, "reason": "sorry"})
        assert unbanned.content == f"Unbanned <@{ALICE_ID}>: they can use the bot again."
        again = await env.mod("unban", {"member": ALICE_ID})
        assert "is not banned" in again.content
        await queued_message(await env.imagine("1girl, welcome back"))
        assert await env.events() == [("ban", ALICE_ID, MIA_ID), ("unban", ALICE_ID, MIA_ID)]


async def test_mod_purge_deletes_a_members_bot_messages_in_a_channel(mod_env: ModEnv) -> None:
    env, fake = mod_env, mod_env.fake
    await env.settings("moderation set", {"explicit_threshold": 1.0})  # post them all
    mine = [await result_of(await env.imagine(f"1girl, {n}")) for n in ("one", "two")]
    elsewhere = await result_of(await env.imagine("1girl, three", channel=NSFW_CHANNEL_ID))
    theirs = await result_of(await env.imagine("1boy", user=BOB_ID))
    assert all(m.attachments for m in [*mine, theirs])

    answer = await env.mod("purge", {"member": ALICE_ID, "reason": "flood"})
    assert answer.content.startswith(
        f"Deleted 2 bot messages of <@{ALICE_ID}> in <#{GENERAL_CHANNEL_ID}>"
    )
    assert [fake.message(m.id).deleted for m in mine] == [True, True]
    assert not fake.message(theirs.id).deleted
    assert not fake.message(elsewhere.id).deleted
    store = MemberStore(env.bot.db)
    [event] = await env.bot.db.run(store.events, guild_id=DEFAULT_GUILD_ID)
    assert (event.kind, event.user_id, event.actor_id, event.reason) == (
        "purge", ALICE_ID, MIA_ID, "flood",
    )  # fmt: skip
    assert event.details is not None
    assert sorted(event.details["message_ids"]) == sorted(m.id for m in mine)

    there = await env.mod("purge", {"member": ALICE_ID, "channel": NSFW_CHANNEL_ID})
    assert there.content.startswith("Deleted 1 bot message of")
    assert fake.message(elsewhere.id).deleted


# ------------------------------------------------------------------------ the log channel


async def test_the_log_channel_hears_refusals_withheld_images_and_bans(mod_env: ModEnv) -> None:
    env, fake = mod_env, mod_env.fake
    saved = await env.settings(
        "moderation set", {"log_channel": LOG_CHANNEL_ID, "forward_withheld": True}
    )
    assert saved.content == "Saved."

    refused = await refusal(await env.imagine("1girl", rating="explicit"))
    assert refused.startswith("**Not allowed here**: the explicit rating is only allowed in")
    logged = await env.log_message("Prompt refused")
    assert logged.content.startswith(
        f"⛔ **Prompt refused** · <@{ALICE_ID}> in <#{GENERAL_CHANNEL_ID}>"
    )

    hard = await refusal(await env.imagine("1girl, lolicon"))
    assert hard.startswith("**Refused**: sexual content involving minors is never allowed")
    blocked = await env.log_message("Hard block")
    assert "||`1girl, lolicon`||" in blocked.content  # the prompt behind a spoiler

    plain = await env.imagine("1girl", seed=21)
    await result_of(plain)
    withheld = await env.log_message("Image withheld")
    [copy] = withheld.attachments
    assert copy.filename.startswith("SPOILER_animagine_")
    assert "Image 1 (seed 21): withheld: rated explicit" in withheld.content
    assert uploads(fake, channel_id=GENERAL_CHANNEL_ID, handles=[plain]) == []

    # The forwarded copy names its job: moderators can ask who made it.
    who = await fake.message_context_menu("Who made this?", withheld, MIA_ID)
    fields = {f["name"]: f["value"] for f in (await ephemeral_answer(who)).embeds[0]["fields"]}
    assert fields["Requested by"].startswith(f"<@{ALICE_ID}>")
    assert fields["Channel"] == f"<#{GENERAL_CHANNEL_ID}> (not age-restricted)"

    await env.settings("moderation set", {"forward_withheld": False})
    await result_of(await env.imagine("1girl", seed=22))
    described = await env.log_message("seed 22")
    assert described.attachments == []

    await env.mod("ban", {"member": ALICE_ID, "reason": "testing limits"})
    ban = await env.log_message(r"\*\*Ban\*\*")
    assert ban.content == (
        f"🔨 **Ban** · <@{ALICE_ID}> by <@{MIA_ID}> · until unbanned\nReason: testing limits"
    )
    kinds = [kind for kind, _, _ in await env.events()]
    assert kinds == [
        "prompt_blocked",
        "prompt_hard_blocked",
        "image_withheld",
        "image_withheld",
        "ban",
    ]


# ------------------------------------------------------------------------ /settings


async def test_settings_moderation_validates_and_shapes_the_policy(mod_env: ModEnv) -> None:
    env, bot = mod_env, mod_env.bot
    guilds = GuildStore(bot.db)
    denied = await env.settings("moderation set", {"spoiler": "always"}, user=MIA_ID)
    assert "Manage Server" in denied.content

    too_high = await env.settings("moderation set", {"questionable_threshold": 1.5})
    assert too_high.content == (
        "Not saved: questionable_threshold: Input should be less than or equal to 1 (got 1.5)."
    )
    no_tag = await env.settings("moderation block", {"tags": "gore, !!!"})
    assert no_tag.content.startswith(
        "Not saved: blocked_tags_add: '!!!' is not a tag: it has no letter or digit"
    )
    assert await bot.db.run(guilds.get_moderation, DEFAULT_GUILD_ID) == {}

    saved = await env.settings(
        "moderation set",
        {"explicit_threshold": 0.95, "spoiler": "never", "extra_negatives": "bad hands, -x-"},
    )
    assert saved.content == "Saved."
    await env.settings("moderation block", {"tags": "gore, Blood"})
    await env.settings("moderation unblock", {"tags": "nude"})
    assert await bot.db.run(guilds.get_moderation, DEFAULT_GUILD_ID) == {
        "explicit_threshold": 0.95,
        "spoiler": "never",
        "extra_negatives": ["bad hands", "-x-"],
        "blocked_tags_add": ["gore", "Blood"],
        "blocked_tags_remove": ["nude"],
    }

    text = await refusal(await env.imagine("1girl, blood"))
    assert text == "**Not allowed here**: not allowed outside age-restricted channels: Blood."
    nude = await result_of(await env.imagine("1girl, nude", seed=9))  # allowed here now
    assert nude.attachments  # explicit 0.90 is under this server's 0.95
    assert infotext_of(nude).negative_prompt.startswith("bad hands, -x-, nsfw, ")
    restricted = await result_of(await env.imagine("1girl", channel=NSFW_CHANNEL_ID))
    assert not restricted.attachments[0].filename.startswith("SPOILER_")  # spoiler: never

    shown = await env.settings("show", {})
    server, moderation = shown.embeds
    assert server["title"] == "Server settings"
    fields = {f["name"]: f["value"] for f in moderation["fields"]}
    assert fields["Withhold above"] == "questionable 0.50 · explicit 0.95"
    assert fields["Spoilers (age-restricted)"] == "never"
    assert "added here: gore, Blood" in fields["Blocked tags"]
    assert "allowed here: nude" in fields["Blocked tags"]
    assert fields["Image classifier"].startswith("loaded")
    assert fields["Direct messages"] == (
        "refused: bot-wide config `moderation.dm_allowed`, not a server setting"
    )

    await env.settings("moderation unblock", {"tags": "gore"})
    await env.settings("moderation reset", {"setting": "spoiler"})
    left = await bot.db.run(guilds.get_moderation, DEFAULT_GUILD_ID)
    assert "spoiler" not in left
    assert left["blocked_tags_add"] == ["Blood"]
    await env.settings("moderation reset", {"setting": "*"})
    assert await bot.db.run(guilds.get_moderation, DEFAULT_GUILD_ID) == {}

    answer = await env.fake.slash_command(
        DEFAULT_GUILD_ID,
        GENERAL_CHANNEL_ID,
        BOB_ID,
        "settings",
        {"extra_negatives": "-"},
        "moderation set",
    )
    assert (await answer.response()).type == CallbackType.DEFERRED_CHANNEL_MESSAGE
    await ephemeral_answer(answer)
    assert await bot.db.run(guilds.get_moderation, DEFAULT_GUILD_ID) == {"extra_negatives": []}
