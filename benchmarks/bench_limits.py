"""Rate-limit decisions per second on SQLite, and the latency of one decision.

Run from the repository root: ``python benchmarks/bench_limits.py`` (``--decisions N``).
Each run uses a fresh database file in a temporary folder, prepared as the bot does at
start, and the bot's own path: asyncio tasks (one per member) awaiting
``db.run(limiter.accept_job, ...)`` on the database's worker threads (``pool_size``, 4 by
default). Two mixes are measured: every decision accepted (charge + job insert, the most
work) and the default tier (4 images at once, one every 30 s), where nearly all are refused.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if importlib.util.find_spec("bot") is None:  # not installed: run from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.config import DatabaseSettings, LimitsSettings
from bot.limits import JobShape, RateLimiter, Requester
from bot.storage import NewJob, prepare_database

MEMBERS = (1, 8, 64)
GENEROUS = LimitsSettings.Tier(
    burst=10_000, refill_seconds=1.0, daily_quota=0, max_concurrent_jobs=10_000
)
SERVER = LimitsSettings.Tier(
    burst=10_000, refill_seconds=0.001, daily_quota=0, max_concurrent_jobs=10_000
)


@dataclass(frozen=True)
class Result:
    members: int
    mix: str
    decisions: int
    accepted: int
    seconds: float
    latencies: list[float]

    def row(self) -> str:
        ms = sorted(x * 1000 for x in self.latencies)
        p50 = statistics.median(ms)
        p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
        rate = self.decisions / self.seconds
        return (
            f"| {self.members} | {self.mix} | {self.decisions} | {self.accepted} "
            f"| {rate:,.0f} | {p50:.2f} | {p99:.2f} |"
        )


async def _run(members: int, total: int, tier: LimitsSettings.Tier, mix: str) -> Result:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        db = prepare_database(DatabaseSettings(url=url))
        limits = LimitsSettings(tiers={"default": tier}, server=SERVER)
        limiter = RateLimiter(db, limits)
        per_member = max(1, total // members)
        latencies: list[float] = []
        accepted = 0

        async def member(user_id: int) -> None:
            nonlocal accepted
            who = Requester(user_id=user_id, guild_id=1, role_ids=frozenset({11, 12}))
            shape = JobShape(count=1, width=896, height=1152, steps=28)
            for n in range(per_member):
                job = NewJob({"prompt": "1girl, masterpiece", "n": n}, channel_id=2)
                started = time.perf_counter()
                decision = await db.run(limiter.accept_job, who, job, shape)
                latencies.append(time.perf_counter() - started)
                accepted += decision.accepted

        try:
            began = time.perf_counter()
            await asyncio.gather(*(member(u) for u in range(1, members + 1)))
            seconds = time.perf_counter() - began
        finally:
            db.close()
        return Result(members, mix, len(latencies), accepted, seconds, latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=3000, help="per row (default 3000)")
    args = parser.parse_args()
    rows = []
    for mix, tier in (("all accepted", GENEROUS), ("default tier", LimitsSettings.Tier())):
        for members in MEMBERS:
            asyncio.run(_run(members, 100, tier, mix))  # warm up
            rows.append(asyncio.run(_run(members, args.decisions, tier, mix)))
    print(
        f"Rate-limit decisions on SQLite (WAL, temp file); {platform.python_implementation()} "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs, pool_size {DatabaseSettings().pool_size}\n"
    )
    print("| members | mix | decisions | accepted | decisions/s | p50 ms | p99 ms |")
    print("|--:|---|--:|--:|--:|--:|--:|")
    for result in rows:
        print(result.row())


if __name__ == "__main__":
    main()
