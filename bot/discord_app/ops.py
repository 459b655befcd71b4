"""What the operations server asks of the bot: readiness, and the gauges read per scrape.

:class:`BotProbes` is made before the bot exists (the server starts before the model
loads, so ``/healthz`` answers and ``/readyz`` says "starting" meanwhile); :meth:`attach`
hands it the bot once it is built.

Readiness (``/readyz``):

* ``gateway``: connected to Discord's gateway; an auto-sharded bot, every shard;
* ``renderer``: the embedded engine loaded, warmed up and not failing, or, with the Redis
  backend, at least one live worker (:func:`bot.observability.health.renderer_ready`);
* ``database``: a write transaction begun and rolled back in time
  (:class:`bot.observability.health.DatabaseProbe`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import sqlalchemy as sa
from discord.ext import commands

from bot.observability.health import Check, CheckFn, DatabaseProbe, renderer_ready
from bot.observability.metrics import Metrics, Snapshot
from bot.observability.telemetry import LOCAL_WORKER
from bot.queue.redis_backend import RedisDispatcher
from bot.storage.database import Database
from bot.storage.models import Job

if TYPE_CHECKING:
    from bot.discord_app.client import AnimagineBot


class BotProbes:
    """Readiness checks and the on-demand gauges of one bot (a metrics ``Sampler``)."""

    def __init__(self, db: Database, metrics: Metrics | None = None) -> None:
        self.db = db
        self.metrics = metrics
        self.bot: AnimagineBot | None = None
        self.database = DatabaseProbe(db)
        if metrics is not None:
            metrics.sampler = self

    def attach(self, bot: AnimagineBot) -> None:
        self.bot = bot

    @property
    def checks(self) -> dict[str, CheckFn]:
        return {"gateway": self.gateway, "renderer": self.renderer, "database": self.database}

    # ------------------------------------------------------------------ readiness
    async def gateway(self) -> Check:
        bot = self.bot
        if bot is None:
            return Check(False, "starting: the model is loading")
        return gateway_state(bot)

    async def renderer(self) -> Check:
        if self.bot is None:
            return Check(False, "starting: the model is loading")
        return renderer_ready(self.bot.service)

    # ------------------------------------------------------------------ gauges
    async def sample(self) -> Snapshot:
        bot = self.bot
        pending = await self.db.run(_pending_deliveries, self.db)
        if bot is None:
            return Snapshot(deliveries_pending=pending)
        service = bot.service
        waiting = service.queue.order()
        worker = service.worker
        gpu: dict[str, int] = {}
        if isinstance(worker, RedisDispatcher):
            live = worker.live_workers
            up = len(live)
            for beat in live:
                if beat.gpu_memory_used_bytes is not None:
                    name = self.metrics.worker_label(beat.name) if self.metrics else beat.name
                    gpu[name] = gpu.get(name, 0) + beat.gpu_memory_used_bytes
        else:
            up = 0 if service.warming_up or service.renderer.failing else 1
            used = worker.engine.gpu_memory_used()
            if used is not None:
                gpu[LOCAL_WORKER] = used
        return Snapshot(
            jobs_waiting=len(waiting),
            members_waiting=len({entry.owner for entry in waiting}),
            deliveries_pending=pending,
            workers_up=up,
            gpu_memory_used_bytes=gpu,
            gateway_latency_seconds=gateway_latencies(bot),
        )


def gateway_state(bot: commands.Bot) -> Check:
    """Connected to the gateway (every shard of an auto-sharded bot), and ready."""
    if bot.is_closed():
        return Check(False, "closed")
    if isinstance(bot, commands.AutoShardedBot):
        expected = bot.shard_count or 0
        shards = bot.shards
        down = sorted(i for i, shard in shards.items() if shard.is_closed())
        missing = expected - len(shards)
        if down or missing > 0 or not expected:
            parts = [f"shard(s) {', '.join(map(str, down))} disconnected"] if down else []
            if missing > 0 or not expected:
                parts.append(f"{max(missing, 0)} of {expected or '?'} shard(s) not connected yet")
            return Check(False, "; ".join(parts))
        if not bot.is_ready():
            return Check(False, "connected, waiting for READY")
        return Check(True, f"{expected} shard(s) connected")
    ws = bot.ws
    if ws is None or not ws.open:
        return Check(False, "not connected")
    if not bot.is_ready():
        return Check(False, "connected, waiting for READY")
    return Check(True, "connected")


def gateway_latencies(bot: commands.Bot) -> dict[str, float]:
    """Shard -> heartbeat latency in seconds (those not measured yet are left out)."""
    if isinstance(bot, commands.AutoShardedBot):
        pairs = list(bot.latencies)
    else:
        pairs = [(bot.shard_id or 0, bot.latency)]
    return {str(shard): seconds for shard, seconds in pairs if math.isfinite(seconds)}


def _pending_deliveries(db: Database) -> int:
    with db.read() as session:
        count = session.scalar(
            sa.select(sa.func.count()).select_from(Job).where(Job.delivery == "pending")
        )
        return int(count or 0)
