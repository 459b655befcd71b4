"""Test helpers shared by the storage and limits tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from bot.config import DatabaseSettings
from bot.storage import Database, prepare_database

START = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment


BACKENDS = ("sqlite", "postgresql")
"""The databases the storage and limits suites run each test on (``[sqlite]``, ...)."""

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])
"""For a test about SQLite itself (its file, WAL, busy timeout, corruption): it runs on
SQLite only, overriding the suite's parametrized ``backend`` fixture."""


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


PASSWORD = "hunter2-s3cret"


def with_password(url: str) -> str:
    """``url`` with :data:`PASSWORD` in it, for a server URL (SQLite has no password). The
    tests' PostgreSQL server trusts every local login, so the password is accepted as is."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return url
    return parsed.set(password=PASSWORD).render_as_string(hide_password=False)


def open_db(where: Path | str, *, busy_timeout_ms: int = 5000, pool_size: int = 4) -> Database:
    """The database at ``where`` (an SQLite file, or a URL), migrated as at start-up."""
    url = sqlite_url(where) if isinstance(where, Path) else where
    settings = DatabaseSettings(url=url, busy_timeout_ms=busy_timeout_ms, pool_size=pool_size)
    return prepare_database(settings)
