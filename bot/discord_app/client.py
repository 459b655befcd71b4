"""The bot: a ``commands.Bot`` that owns the service, the delivery and the command tree."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import discord
from discord import app_commands
from discord.ext import commands

from bot.config import Settings
from bot.discord_app import formatting
from bot.discord_app.cogs.admin import AdminCog
from bot.discord_app.cogs.describe import DescribeCog
from bot.discord_app.cogs.history import HistoryCog
from bot.discord_app.cogs.imagine import ImagineCog
from bot.discord_app.cogs.info import InfoCog
from bot.discord_app.cogs.mod import ModCog
from bot.discord_app.components import DYNAMIC_ITEMS
from bot.discord_app.context import reply
from bot.discord_app.delivery import Delivery
from bot.discord_app.http import RestObserver, rest_trace
from bot.discord_app.i18n import CatalogueTranslator, locale_of, tr
from bot.discord_app.moderation import ModLog
from bot.engine import Engine
from bot.engine.front import PromptFront
from bot.observability.telemetry import Telemetry
from bot.queue.output import Classifier
from bot.service import ImagineService
from bot.storage import Database

log = logging.getLogger(__name__)


class BotTree(app_commands.CommandTree["AnimagineBot"]):
    """Answers every failed command: checks with their reason, bugs with an apology."""

    async def on_error(
        self, interaction: discord.Interaction[AnimagineBot], error: app_commands.AppCommandError, /
    ) -> None:
        locale = locale_of(interaction)
        if isinstance(error, app_commands.CheckFailure):
            # Ours are translated already; discord.py's own (e.g. NoPrivateMessage) have entries.
            text = tr(locale, str(error)) or tr(locale, "You cannot use this command here.")
        else:
            original = getattr(error, "original", error)
            log.error(
                "command %r failed",
                interaction.command and interaction.command.qualified_name,
                exc_info=original,
            )
            text = formatting.internal_error_text(locale, original)
        try:
            await reply(interaction, text)
        except discord.HTTPException as exc:
            log.warning("could not report a command error (%s)", exc.status)


COGS: Final = (ImagineCog, InfoCog, AdminCog, ModCog, DescribeCog, HistoryCog)
"""The bot's cogs, in the order they are added (``doctor`` builds the same command tree)."""


def intents() -> discord.Intents:
    """Guilds only: slash commands and buttons need no privileged intent."""
    wanted = discord.Intents.none()
    wanted.guilds = True
    return wanted


class AnimagineBot(commands.Bot):
    """Animagine XL 3.1 for Discord servers.

    ``classifier`` rates finished images for the moderation policy (``classifier_error``
    says why there is none). ``start_worker=False`` leaves the queue to
    :meth:`ImagineService.run_burst` (tests, benchmarks). ``sync_commands`` syncs the
    command tree at start-up: to ``discord.dev_guilds`` when configured, else globally.
    ``telemetry`` logs each step of a job's life and, when it holds metrics, counts it;
    with metrics, every REST answer from Discord is timed too (:func:`~bot.discord_app.
    http.rest_trace`).
    """

    settings: Settings
    db: Database
    engine: Engine | PromptFront
    delivery: Delivery
    modlog: ModLog
    service: ImagineService

    def __init__(
        self,
        settings: Settings,
        db: Database,
        engine: Engine | PromptFront,
        *,
        classifier: Classifier | None = None,
        classifier_error: str | None = None,
        start_worker: bool = True,
        sync_commands: bool = True,
        stop_grace: float = 30.0,
        progress_interval: float = 2.0,
        submit_concurrency: int = 4,
        telemetry: Telemetry | None = None,
        **options: Any,
    ) -> None:
        telemetry = telemetry or Telemetry()
        metrics = getattr(telemetry, "metrics", None)
        if isinstance(metrics, RestObserver) and options.get("http_trace") is None:
            options["http_trace"] = rest_trace(metrics)
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents(),
            help_command=None,
            tree_cls=BotTree,
            chunk_guilds_at_startup=False,
            member_cache_flags=discord.MemberCacheFlags.none(),
            max_messages=None,
            allowed_mentions=discord.AllowedMentions.none(),
            **options,
        )
        self.settings = settings
        self.db = db
        self.engine = engine
        self.delivery = Delivery(self, progress_interval=progress_interval)
        self.modlog = ModLog(self)
        self.service = ImagineService(
            settings,
            db,
            engine,
            self.delivery,
            classifier=classifier,
            classifier_error=classifier_error,
            telemetry=telemetry,
        )
        self.start_worker = start_worker
        self.sync_commands = sync_commands
        self.stop_grace = stop_grace
        self.submit_slots = asyncio.Semaphore(submit_concurrency)
        self.restored_jobs = 0
        self._service_stopped = False

    async def setup_hook(self) -> None:
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        await self.tree.set_translator(CatalogueTranslator())
        for cog in COGS:
            await self.add_cog(cog(self))
        self.restored_jobs = await self.service.restore()
        if self.restored_jobs:
            log.info("%d job(s) from before the restart are queued again", self.restored_jobs)
        if self.start_worker:
            self.service.start()
        if self.sync_commands:
            await self.sync_tree()

    async def sync_tree(self) -> None:
        guilds = self.settings.discord.dev_guilds
        if not guilds:
            synced = await self.tree.sync()
            log.info("synced %d commands globally", len(synced))
            return
        for guild_id in guilds:
            guild = discord.Object(guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to development guild %d", len(synced), guild_id)

    async def close(self) -> None:
        """No new jobs; the running one finishes (or is kept for the next start); then
        disconnect."""
        if not self._service_stopped:
            self._service_stopped = True
            await self.service.stop(self.stop_grace)
        await super().close()


class ShardedAnimagineBot(AnimagineBot, commands.AutoShardedBot):
    """The same bot as an auto-sharded client (``discord.shards = "auto"`` or a count).

    One process holds every shard's gateway connection; Discord assigns each server to a
    shard, and the service, queue and database are shared by all of them.
    """


def create_bot(
    settings: Settings, db: Database, engine: Engine | PromptFront, **options: Any
) -> AnimagineBot:
    """The bot ``discord.shards`` asks for: one connection (1), or auto-sharded."""
    shards = settings.discord.shards
    if shards == 1:
        return AnimagineBot(settings, db, engine, **options)
    if shards != "auto":
        options.setdefault("shard_count", shards)
    return ShardedAnimagineBot(settings, db, engine, **options)
