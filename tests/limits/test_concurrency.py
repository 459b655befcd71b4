"""Concurrent attempts from 8 processes sharing one database never over-spend.

Eight processes (half firing asyncio tasks through ``Database.run``, half firing threads)
each make 20 attempts at once for the same member, in three scenarios where a different
limit binds, on SQLite (one file: ``BEGIN IMMEDIATE`` orders the writers) and on a real
PostgreSQL server (row locks, and rows created on first use by whoever comes first).
Exactly the allowed number must pass, and every other attempt must name that limit.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

from bot.config import LimitsSettings
from bot.limits import JobShape, LimitDecision, RateLimiter, Refusal, Requester
from bot.storage import Database, JobStore, NewJob
from tests.storage.fakes import START, open_db

PROCESSES = 8
ATTEMPTS_PER_PROCESS = 20
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
    db = Database(url, busy_timeout_ms=30_000, pool_size=4)
    limiter = RateLimiter(db, settings, clock=_frozen_clock)

    def one(n: int) -> LimitDecision:
        return limiter.accept_job(MEMBER, NewJob({"n": n}), JobShape(count=2))

    async def with_tasks() -> list[LimitDecision]:
        return list(await asyncio.gather(*(db.run(one, n) for n in range(ATTEMPTS_PER_PROCESS))))

    try:
        if mode == "tasks":
            decisions = asyncio.run(with_tasks())
        else:
            with ThreadPoolExecutor(max_workers=8) as pool:
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
    for done, (name, url, settings_json) in enumerate(runs):
        try:
            start.wait(timeout=60)
            results.put((name, _attempts(url, settings_json, mode)))
        except Exception as exc:
            # Report it, for this run and the ones left, rather than leave the parent (and
            # the other processes, at the barrier) waiting.
            start.abort()
            for left, _, _ in runs[done:]:
                results.put((left, [f"error: {exc!r}"]))
            raise


def test_eight_processes_never_pass_more_than_allowed(make_db_url: Callable[[], str]) -> None:
    runs = []
    for name, (tier, _, _) in SCENARIOS.items():
        url = make_db_url()  # migrated once, as the bot does at start; no rows yet
        settings = LimitsSettings(tiers={"default": tier}, server=SERVER)
        runs.append((name, url, settings.model_dump_json()))

    # Processes forked from a fresh server process that imported this module once: eight
    # spawned interpreters would each import the bot again (seconds on a small machine).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    start = context.Barrier(PROCESSES)
    results: Queue[tuple[str, list[str]]] = context.Queue()
    workers = [
        context.Process(target=_worker, args=(runs, mode, start, results))
        for n in range(PROCESSES)
        for mode in ["tasks" if n % 2 else "threads"]
    ]
    for worker in workers:
        worker.start()
    outcomes: dict[str, list[str]] = {name: [] for name in SCENARIOS}
    for _ in range(len(workers) * len(runs)):
        name, per_process = results.get(timeout=120)
        outcomes[name] += per_process
    for worker in workers:
        worker.join(timeout=60)
    errors = {o for flat in outcomes.values() for o in flat if o.startswith("error")}
    assert not errors
    assert [w.exitcode for w in workers] == [0] * PROCESSES

    for (name, (_, allowed, limit)), (_, url, _) in zip(SCENARIOS.items(), runs, strict=True):
        flat = outcomes[name]
        assert len(flat) == PROCESSES * ATTEMPTS_PER_PROCESS, name
        assert flat.count("accepted") == allowed, name
        assert set(flat) == {"accepted", limit}, name

        db = open_db(url)
        try:
            jobs = JobStore(db).active()
        finally:
            db.close()
        assert len(jobs) == allowed
        assert sum(j.cost for j in jobs) == 2 * allowed
        assert len({j.position for j in jobs}) == allowed
