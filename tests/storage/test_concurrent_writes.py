"""Writes racing from many threads at once (each on its own connection) all succeed, and
none is lost: on SQLite the write lock orders them; on PostgreSQL the first-time creation
of a row and the queue position must not depend on who reads first."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from bot.storage import Database, GuildStore, JobStore, MemberStore, NewJob
from tests.storage.fakes import FakeClock, open_db

T = TypeVar("T")
THREADS = 8


def _at_once(fn: Callable[[int], T]) -> list[T]:
    """``fn(0) ... fn(THREADS - 1)``, each in its own thread, released together."""
    start = threading.Barrier(THREADS)

    def run(n: int) -> T:
        start.wait(timeout=30)
        return fn(n)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return list(pool.map(run, range(THREADS)))


def _many_connections(db_url: str) -> Database:
    return open_db(db_url, pool_size=THREADS)


def test_a_new_member_changed_from_many_threads_at_once(db_url: str, clock: FakeClock) -> None:
    db = _many_connections(db_url)
    try:
        members = MemberStore(db, clock=clock)
        records = _at_once(lambda n: members.set_tier(100, 7, f"tier{n}", actor_id=n))
        events = members.events(guild_id=100, user_id=7)
        final = members.get(100, 7)
    finally:
        db.close()
    assert final is not None
    assert final.tier in {r.tier for r in records}
    assert sorted(e.actor_id or 0 for e in events) == list(range(THREADS))


def test_a_new_server_configured_from_many_threads_at_once(db_url: str, clock: FakeClock) -> None:
    db = _many_connections(db_url)
    try:
        guilds = GuildStore(db, clock=clock)
        _at_once(lambda n: guilds.set_defaults(100, {f"key{n}": n}))
        defaults = guilds.get_defaults(100)
    finally:
        db.close()
    assert defaults == {f"key{n}": n for n in range(THREADS)}  # no change was lost


def test_jobs_queued_at_once_get_distinct_positions(db_url: str, clock: FakeClock) -> None:
    db = _many_connections(db_url)
    try:
        jobs = JobStore(db, clock=clock)
        # Different members, servers and direct messages: no rate-limit row is shared.
        added = _at_once(lambda n: jobs.add(NewJob({"n": n}), user_id=n, guild_id=n or None))
        queued = jobs.queued()
    finally:
        db.close()
    assert sorted(j.position for j in added) == list(range(1, THREADS + 1))
    assert [j.id for j in queued] == [j.id for j in sorted(added, key=lambda j: j.position)]
