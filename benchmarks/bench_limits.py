"""Rate-limit decisions per second on SQLite and on PostgreSQL, and the latency of one.

Run from the repository root: ``python benchmarks/bench_limits.py`` (``--decisions N``,
``--backend sqlite|postgresql|both``, default both). Each run uses a fresh database,
prepared as the bot does at start, and the bot's own path: asyncio tasks (one per member)
awaiting ``db.run(limiter.accept_job, ...)`` on the database's worker threads
(``pool_size``, 4 by default). SQLite is a file in a temporary folder (WAL); PostgreSQL is
a throw-away local server on the same machine (the tests' helper,
``tests/support/postgres_server.py``: ``initdb`` + ``postgres`` over TCP on the loopback,
default settings but for :data:`PG_SETTINGS`), a new database per run; or, with
``--database-url``, a server of yours: every table of the bot in that database is dropped
before each run, so give it a scratch database.

Two mixes are measured: every decision accepted (charge + job insert, the most work) and
the default tier (4 images at once, one every 30 s), where nearly all are refused.
Prints the machine and a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

if importlib.util.find_spec("bot") is None:  # not installed: run from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support.postgres_server

from bot.config import DatabaseSettings, LimitsSettings
from bot.limits import JobShape, RateLimiter, Requester
from bot.storage import NewJob, downgrade, prepare_database
from bot.storage.database import describe_location
from tests.support.postgres_server import PostgresServer

MEMBERS = (1, 8, 64)
GENEROUS = LimitsSettings.Tier(
    burst=10_000, refill_seconds=1.0, daily_quota=0, max_concurrent_jobs=10_000
)
SERVER = LimitsSettings.Tier(
    burst=10_000, refill_seconds=0.001, daily_quota=0, max_concurrent_jobs=10_000
)
# As durable as SQLite in WAL mode with synchronous=NORMAL (the bot's setting): a crash may
# lose the last commits, never corrupt the database. (The tests' server runs without fsync.)
PG_SETTINGS = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "off"}
HEADER = "| database | members | mix | decisions | accepted | decisions/s | p50 ms | p99 ms |"

FreshDatabase = Callable[[], contextlib.AbstractContextManager[str]]


@dataclass(frozen=True)
class Result:
    backend: str
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
            f"| {self.backend} | {self.members} | {self.mix} | {self.decisions} "
            f"| {self.accepted} | {rate:,.0f} | {p50:.2f} | {p99:.2f} |"
        )


async def _run(
    backend: str, url: str, members: int, total: int, *, tier: LimitsSettings.Tier, mix: str
) -> Result:
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
    return Result(backend, members, mix, len(latencies), accepted, seconds, latencies)


@contextlib.contextmanager
def _sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as folder:
        yield f"sqlite:///{Path(folder) / 'bench.db'}"


def _measure(
    backend: str, fresh: FreshDatabase, members: tuple[int, ...], decisions: int, warmup: int
) -> list[Result]:
    rows = []
    for mix, tier in (("all accepted", GENEROUS), ("default tier", LimitsSettings.Tier())):
        for count in members:
            if warmup:
                with fresh() as url:
                    asyncio.run(_run(backend, url, count, warmup, tier=tier, mix=mix))
            with fresh() as url:
                rows.append(asyncio.run(_run(backend, url, count, decisions, tier=tier, mix=mix)))
    return rows


def _cpu() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return cpu


def _os() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


def _server_version(url: str) -> str:
    import sqlalchemy as sa

    from bot.storage import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SHOW server_version")).scalar()).split()[0]
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=3000, help="per row (default 3000)")
    parser.add_argument(
        "--backend", choices=("sqlite", "postgresql", "both"), default="both", help="(both)"
    )
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL database to use (its bot tables are dropped before each run) "
        "instead of a throw-away local server",
    )
    parser.add_argument(
        "--members", type=int, nargs="+", default=list(MEMBERS), help="(default 1 8 64)"
    )
    parser.add_argument("--warmup", type=int, default=100, help="decisions before each row")
    args = parser.parse_args()
    members = tuple(args.members)
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)

    rows: list[Result] = []
    notes = [
        f"Machine: {_cpu()}, {os.cpu_count()} cores; {_os()}; "
        f"{platform.python_implementation()} {platform.python_version()}; "
        f"pool_size {DatabaseSettings().pool_size}"
    ]
    if "sqlite" in backends:
        rows += _measure("SQLite", _sqlite_database, members, args.decisions, args.warmup)
        notes.append(
            f"SQLite {sqlite3.sqlite_version}: WAL, synchronous=NORMAL, a file in a temporary "
            "folder, a new file per run"
        )
    if "postgresql" in backends:
        with contextlib.ExitStack() as stack:
            if args.database_url:
                url = args.database_url

                @contextlib.contextmanager
                def given() -> Iterator[str]:
                    downgrade(url)  # the bot's tables dropped: a fresh start for each run
                    yield url

                fresh: FreshDatabase = given
                where = f"the server at {describe_location(url)}"
            else:
                server = stack.enter_context(PostgresServer(**PG_SETTINGS))

                @contextlib.contextmanager
                def created() -> Iterator[str]:
                    name = server.create_database("bench")
                    try:
                        yield server.url(name)
                    finally:
                        server.drop_database(name)

                fresh = created
                url = server.url()
                where = (
                    "a local server over TCP on the loopback, synchronous_commit off (as "
                    "durable as SQLite's WAL + synchronous=NORMAL), a new database per run"
                )
            rows += _measure("PostgreSQL", fresh, members, args.decisions, args.warmup)
            notes.append(f"PostgreSQL {_server_version(url)} (psycopg 3): {where}")

    print("\n".join(notes) + "\n")
    print(HEADER)
    print("|---|--:|---|--:|--:|--:|--:|--:|")
    for result in rows:
        print(result.row())


if __name__ == "__main__":
    main()
