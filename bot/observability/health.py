"""Readiness checks that know nothing of Discord: the renderer and the database.

A check is an async callable returning a :class:`Check`: whether the condition holds and
one line saying how it stands. ``/readyz`` (:mod:`bot.observability.server`) runs them all
and answers 503 when one fails; the adapter adds the gateway's
(:mod:`bot.discord_app.ops`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import sqlalchemy as sa

from bot.storage.database import Database, DatabaseError

if TYPE_CHECKING:
    from bot.service import ImagineService

DATABASE_CHECK_TIMEOUT_S: Final = 2.0


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


CheckFn = Callable[[], Awaitable[Check]]


def renderer_ready(service: ImagineService) -> Check:
    """The embedded engine loaded, warmed up and not failing; or, with the Redis backend,
    at least one live worker of this protocol version."""
    workers = service.workers()
    if workers is not None:
        live = sum(1 for w in workers if w.counted)
        if live:
            return Check(True, f"{live} worker(s) taking jobs")
        return Check(False, f"no live worker ({len(workers)} reported lately)")
    if service.warming_up:
        return Check(False, "the engine is warming up")
    failing = service.renderer.failing
    if failing is not None:
        return Check(False, f"the engine is failing: {failing}")
    return Check(True, "the engine is loaded")


class DatabaseProbe:
    """Whether the database takes writes: a write transaction begun and rolled back.

    On SQLite ``BEGIN IMMEDIATE`` takes the write lock (it fails on a read-only file or a
    lock held past the busy timeout), then a write to the smallest table is rolled back;
    on other databases the same write to ``guild_settings`` (none is ever kept). Bounded
    by ``timeout``; one check runs at a time (a probe arriving while one is still running
    gets its answer).
    """

    def __init__(self, db: Database, timeout: float = DATABASE_CHECK_TIMEOUT_S) -> None:
        self.db = db
        self.timeout = timeout
        self._running: asyncio.Future[None] | None = None

    def _write(self) -> None:
        with self.db.transaction() as session:
            # Touches no row; still a write statement, so it needs a writable database.
            session.execute(sa.text("DELETE FROM guild_settings WHERE 1 = 0"))
            session.rollback()

    async def __call__(self) -> Check:
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(asyncio.to_thread(self._write))
        try:
            await asyncio.wait_for(asyncio.shield(self._running), self.timeout)
        except TimeoutError:
            return Check(False, f"no write transaction within {self.timeout:g} s")
        except DatabaseError as exc:
            return Check(False, exc.problem)
        except Exception as exc:  # the driver's own, outside DatabaseError's wrapping
            return Check(False, f"{type(exc).__name__}: {exc}".splitlines()[0])
        return Check(True, "writable")
