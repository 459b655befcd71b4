"""Opening the database: pragmas, and clear messages when the file cannot be used."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.config import DatabaseSettings
from bot.storage import Database, DatabaseError, JobStore, NewJob, prepare_database
from bot.storage.database import describe_location
from tests.storage.fakes import FakeClock, open_db, sqlite_url


def test_sqlite_runs_in_wal_mode_with_busy_timeout_and_foreign_keys(db: Database) -> None:
    with db.read() as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert session.execute(text("PRAGMA busy_timeout")).scalar() == 5000


def test_missing_folders_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "bot.db"
    db = open_db(path)
    db.close()
    assert path.is_file()


def test_corrupt_file_stops_start_up_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    path.write_bytes(b"this is not a database, just some text " * 200)
    with pytest.raises(DatabaseError) as caught:
        open_db(path)
    assert str(path) in str(caught.value)
    assert "corrupt" in str(caught.value)


def test_unreadable_path_stops_start_up_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    path.mkdir()  # a folder where the file should be
    with pytest.raises(DatabaseError) as caught:
        open_db(path)
    assert str(path) in str(caught.value)
    assert "cannot be opened" in str(caught.value)


def test_locked_database_stops_start_up_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    open_db(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(DatabaseError) as caught:
            open_db(path, busy_timeout_ms=50)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert str(path) in str(caught.value)
    assert "locked" in str(caught.value)


def test_errors_while_running_name_the_file(db: Database, db_path: Path) -> None:
    with pytest.raises(DatabaseError) as caught, db.transaction() as session:
        session.execute(text("INSERT INTO no_such_table VALUES (1)"))
    assert str(db_path) in str(caught.value)


def test_database_url_password_is_not_shown() -> None:
    location = describe_location("postgresql+psycopg://bot:hunter2@db.example/animagine")
    assert "hunter2" not in location
    assert "db.example" in location


async def test_run_keeps_database_work_off_the_event_loop(db: Database) -> None:
    loop_thread = threading.get_ident()

    def work(x: int, *, y: int) -> tuple[int, int]:
        with db.read() as session:
            value = session.execute(text("SELECT :a + :b"), {"a": x, "b": y}).scalar_one()
        return value, threading.get_ident()

    value, worker = await db.run(work, 2, y=3)
    assert value == 5
    assert worker != loop_thread


async def test_run_after_close_is_refused(db_path: Path) -> None:
    db = open_db(db_path)
    db.close()
    with pytest.raises(DatabaseError, match="closed"):
        await db.run(lambda: 1)


def test_times_come_back_as_aware_utc(db: Database) -> None:
    clock = FakeClock(datetime(2025, 1, 1, 9, 30, tzinfo=timezone(timedelta(hours=2))))
    store = JobStore(db, clock=clock)
    expires = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
    job = store.add(NewJob({"prompt": "1girl"}, interaction_expires_at=expires), user_id=1)
    again = store.get(job.id)
    assert again.queued_at == datetime(2025, 1, 1, 7, 30, tzinfo=UTC)
    assert again.queued_at.tzinfo is UTC
    assert again.interaction_expires_at == expires


def test_naive_datetimes_are_refused(db: Database) -> None:
    store = JobStore(db, clock=lambda: datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        store.add(NewJob({}), user_id=1)


def test_prepare_database_takes_the_whole_settings_or_the_section(tmp_path: Path) -> None:
    section = DatabaseSettings(url=sqlite_url(tmp_path / "x.db"), busy_timeout_ms=1234)
    db = prepare_database(section)
    try:
        with db.read() as session:
            assert session.execute(text("PRAGMA busy_timeout")).scalar() == 1234
    finally:
        db.close()
