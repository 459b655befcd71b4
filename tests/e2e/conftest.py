"""Fixtures for the bot's end-to-end tests: a fake Discord, a tmp database, the tiny engine.

``bot_env`` starts an :class:`AnimagineBot` against a :class:`FakeDiscord` with a fresh
SQLite file (migrated with ``prepare_database``) and the session's tiny CPU engine. Tests
that need another world or other settings build their own with ``start_bot``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from sqlalchemy import select

from bot.config import Settings
from bot.discord_app.client import AnimagineBot
from bot.engine import Engine
from bot.engine.front import PromptFront
from bot.images import Infotext, read_infotext
from bot.storage import JobRecord, JobStore, prepare_database
from bot.storage.models import Job
from tests.conftest import tiny_settings
from tests.e2e.fake_discord import (
    ALICE_ID,
    DEFAULT_GUILD_ID,
    GENERAL_CHANNEL_ID,
    MODERATOR_ROLE_ID,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeMember,
    FakeMessage,
    FakeUser,
    InteractionHandle,
    UploadedFile,
    default_guild,
    running_client,
)

SettingsFactory = Callable[..., Settings]

LOG_CHANNEL_ID: Final = 800_000_000_000_000_014
"""#mod-log in :func:`moderated_guild`: private to moderators, age-restricted."""
MIA_ID: Final = 700_000_000_000_000_004
"""A moderator of :func:`moderated_guild`: the Moderator role only (Manage Messages; not an
owner, not an admin)."""


@pytest.fixture
def make_settings(tiny_model_dir: Path, tmp_path: Path) -> SettingsFactory:
    """Settings for the tiny model with a tmp SQLite file; keyword args are env overrides
    (``ANIMAGINE_QUEUE__MAX_LENGTH="1"``)."""

    def make(**env: str) -> Settings:
        base = {
            "ANIMAGINE_DATABASE__URL": f"sqlite:///{tmp_path / 'bot.db'}",
            "ANIMAGINE_ENGINE__DEFAULT_WIDTH": "64",
            "ANIMAGINE_ENGINE__DEFAULT_HEIGHT": "64",
            "ANIMAGINE_ENGINE__DEFAULT_STEPS": "2",
            "ANIMAGINE_ENGINE__MAX_STEPS": "150",
            "ANIMAGINE_QUEUE__INITIAL_STEP_SECONDS": "0.5",
            # No image classifier (tests/support/tiny_tagger.py for tests that want one):
            # images post unchecked, in plain channels too.
            "ANIMAGINE_MODERATION__CLASSIFIER__SOURCE": "",
            "ANIMAGINE_MODERATION__FAIL_CLOSED": "false",
        }
        return tiny_settings(tiny_model_dir, **{**base, **env})

    return make


@contextlib.asynccontextmanager
async def start_bot(
    fake: FakeDiscord,
    settings: Settings,
    engine: Engine | PromptFront,
    *,
    start_worker: bool = True,
    **options: Any,
) -> AsyncIterator[AnimagineBot]:
    """A running bot over ``settings``' database; closed (and the database too) on exit."""
    db = await asyncio.to_thread(prepare_database, settings)
    try:
        options.setdefault("guild_ready_timeout", 0.05)
        options.setdefault("stop_grace", 10.0)
        bot = AnimagineBot(settings, db, engine, start_worker=start_worker, **options)
        async with running_client(bot, fake):
            yield bot
    finally:
        await asyncio.to_thread(db.close)


@dataclass
class BotEnv:
    """A fake Discord, the bot connected to it, and helpers to drive it."""

    fake: FakeDiscord
    bot: AnimagineBot

    async def imagine(
        self,
        prompt: str = "1girl, solo, smile",
        *,
        user: int = ALICE_ID,
        channel: int | None = GENERAL_CHANNEL_ID,
        guild: int | None = DEFAULT_GUILD_ID,
        **options: Any,
    ) -> InteractionHandle:
        return await self.fake.slash_command(
            guild, channel, user, "imagine", {"prompt": prompt, **options}
        )

    async def job(self, job_id: int) -> JobRecord:
        return await self.bot.db.run(JobStore(self.bot.db).get, job_id)

    async def jobs(self) -> list[JobRecord]:
        """Every job, oldest first."""

        def read() -> list[JobRecord]:
            with self.bot.db.read() as session:
                return [JobRecord.of(j) for j in session.scalars(select(Job).order_by(Job.id))]

        return await self.bot.db.run(read)


def moderated_guild() -> FakeGuild:
    """The default guild plus a moderation log channel and Mia, a plain moderator."""
    guild = default_guild()
    guild.channels.append(FakeChannel(LOG_CHANNEL_ID, "mod-log", nsfw=True, position=2))
    guild.members.append(FakeMember(FakeUser(MIA_ID, "mia", "Mia"), roles=[MODERATOR_ROLE_ID]))
    return guild


def uploads(
    fake: FakeDiscord, *, channel_id: int, handles: Iterable[InteractionHandle] = ()
) -> list[UploadedFile]:
    """Every file the bot sent to a channel: with its own token or through the webhooks of
    ``handles`` (interactions there)."""
    tokens = [handle.token for handle in handles]
    return [
        upload
        for request in fake.requests
        if request.route.startswith(f"/channels/{channel_id}/")
        or any(token in request.path for token in tokens)
        for upload in request.files
    ]


async def until_running(bot: AnimagineBot, job_id: int, within: float = 10.0) -> None:
    """Wait (polling closely) until the worker renders ``job_id``."""
    async with asyncio.timeout(within):
        while bot.service.worker.running_job_id != job_id:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.005)


def is_result(message: FakeMessage) -> bool:
    return message.content.startswith("**Done**")


async def result_of(handle: InteractionHandle, within: float = 15.0) -> FakeMessage:
    """The job message of an interaction once it shows the finished images."""
    return await handle.original(is_result, timeout=within)


async def queued_message(handle: InteractionHandle, within: float = 5.0) -> FakeMessage:
    """The job message once the deferred reply became the job's message."""
    return await handle.original(lambda m: not m.loading and "job #" in m.content, within)


def infotext_of(message: FakeMessage, index: int = 0) -> Infotext:
    infotext = read_infotext(message.attachments[index].data)
    assert infotext is not None
    return infotext


def job_id_in(message: FakeMessage) -> int:
    """The job a message's buttons name."""
    for custom_id in message.custom_ids:
        if custom_id.startswith("animagine:"):
            return int(custom_id.split(":")[2])
    raise AssertionError(f"no job button on {message.custom_ids}")


async def ephemeral_answer(handle: InteractionHandle, within: float = 5.0) -> FakeMessage:
    """The ephemeral message an interaction was answered with (reply or follow-up)."""

    def find() -> FakeMessage | None:
        answers = (m for m in handle.messages() if m.ephemeral and not (m.deleted or m.loading))
        return next(answers, None)

    return await handle._fake.wait_for(find, within, f"an ephemeral answer to {handle!r}")


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
async def bot_env(
    fake: FakeDiscord, make_settings: SettingsFactory, engine: Engine
) -> AsyncIterator[BotEnv]:
    """The bot with its background worker, default settings."""
    async with start_bot(fake, make_settings(), engine) as bot:
        yield BotEnv(fake, bot)


@pytest.fixture
async def burst_env(
    fake: FakeDiscord, make_settings: SettingsFactory, engine: Engine
) -> AsyncIterator[BotEnv]:
    """The bot without a background worker: jobs wait until ``service.run_burst()``."""
    async with start_bot(fake, make_settings(), engine, start_worker=False) as bot:
        yield BotEnv(fake, bot)
