"""Test helpers shared by the storage and limits tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

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


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def open_db(path: Path, *, busy_timeout_ms: int = 5000) -> Database:
    return prepare_database(DatabaseSettings(url=sqlite_url(path), busy_timeout_ms=busy_timeout_ms))
