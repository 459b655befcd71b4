"""Concurrent attempts, from two processes sharing one database file, never over-spend.

Two processes (one firing asyncio tasks through ``Database.run``, one firing threads) each
make 120 attempts at once for the same member, in three scenarios where a different limit
binds. Exactly the allowed number must pass, and every other attempt must name that limit.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from bot.config import LimitsSettings
from bot.limits import JobShape, LimitDecision, RateLimiter, Refusal, Requester
from bot.storage import Database, JobStore, NewJob
from tests.storage.fakes import START, open_db, sqlite_url

ATTEMPTS_PER_PROCESS = 120
MEMBER = Requester(user_id=1, guild_id=100)
Tier = LimitsSettings.Tier
# name: (member tier, how many attempts of 2 images may pass, the limit that refuses the rest)
SCENARIOS = {
    "burst": (Tier(burst=9, daily_quota=0, max_concurrent_jobs=1000), 4, "rate"),
    "concurrent": (Tier(burst=1000, daily_quota=0, max_concurrent_jobs=3), 3, "concurrent"),
    "daily": (Tier(burst=1000, daily_quota=15, max_concurrent_jobs=1000), 7, "daily"),
}
SERVER = Tier(burst=10_000, daily_quota=0, max_concurrent_jobs=10_000)


def _frozen_clock() -> datetime:
    return START


def _outcome(decision: LimitDecision) -> str:
    return decision.limit.value if isinstance(decision, Refusal) else "accepted"


def _attempts(url: str, settings_json: str, mode: str) -> list[str]:
    settings = LimitsSettings.model_validate_json(settings_json)
    db = Database(url, busy_timeout_ms=30_000, pool_size=8)
    limiter = RateLimiter(db, settings, clock=_frozen_clock)

    def one(n: int) -> LimitDecision:
        return limiter.accept_job(MEMBER, NewJob({"n": n}), JobShape(count=2))

    async def with_tasks() -> list[LimitDecision]:
        return list(await asyncio.gather(*(db.run(one, n) for n in range(ATTEMPTS_PER_PROCESS))))

    try:
        if mode == "tasks":
            decisions = asyncio.run(with_tasks())
        else:
            with ThreadPoolExecutor(max_workers=16) as pool:
                decisions = list(pool.map(one, range(ATTEMPTS_PER_PROCESS)))
    finally:
        db.close()
    return [_outcome(d) for d in decisions]


def _worker(
    runs: list[tuple[str, str, str]],
    mode: str,
    start: Barrier,
    results: Queue[tuple[str, list[str]]],
) -> None:
    for name, url, settings_json in runs:
        try:
            start.wait(timeout=60)
            results.put((name, _attempts(url, settings_json, mode)))
        except Exception as exc:  # report it rather than leave the parent waiting
            results.put((name, [f"error: {exc!r}"]))
            raise


def test_two_processes_never_pass_more_than_allowed(tmp_path: Path) -> None:
    runs = []
    for name, (tier, _, _) in SCENARIOS.items():
        path = tmp_path / f"{name}.db"
        open_db(path).close()  # migrated once, as the bot does at start
        settings = LimitsSettings(tiers={"default": tier}, server=SERVER)
        runs.append((name, sqlite_url(path), settings.model_dump_json()))

    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    results: Queue[tuple[str, list[str]]] = context.Queue()
    workers = [
        context.Process(target=_worker, args=(runs, mode, start, results))
        for mode in ("tasks", "threads")
    ]
    for worker in workers:
        worker.start()
    outcomes: dict[str, list[str]] = {name: [] for name in SCENARIOS}
    for _ in range(len(workers) * len(runs)):
        name, per_process = results.get(timeout=120)
        outcomes[name] += per_process
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    for name, (_, allowed, limit) in SCENARIOS.items():
        flat = outcomes[name]
        assert len(flat) == 2 * ATTEMPTS_PER_PROCESS, name
        assert flat.count("accepted") == allowed, name
        assert set(flat) == {"accepted", limit}, name

        db = open_db(tmp_path / f"{name}.db")
        try:
            jobs = JobStore(db).active()
        finally:
            db.close()
        assert len(jobs) == allowed
        assert sum(j.cost for j in jobs) == 2 * allowed
        assert len({j.position for j in jobs}) == allowed
