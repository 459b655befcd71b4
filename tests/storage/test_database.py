"""Opening the database: its settings, and clear messages when it cannot be used.

Tests that take the ``db`` or ``db_url`` fixture run on SQLite and on a real PostgreSQL
server; those about SQLite's file itself (WAL, corruption, a locked file, folders) run on
SQLite only, marked ``sqlite_only`` or taking a file path.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.config import DatabaseSettings, Settings
from bot.storage import Database, DatabaseError, JobStore, NewJob, prepare_database
from bot.storage.database import describe_location
from tests.storage.fakes import PASSWORD, FakeClock, open_db, sqlite_only, with_password
from tests.support.postgres_server import PostgresServer
from tests.support.redis_server import free_port


@sqlite_only
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


def test_errors_while_running_name_the_database(db_url: str) -> None:
    url = with_password(db_url)
    db = open_db(url)
    try:
        with pytest.raises(DatabaseError) as caught, db.transaction() as session:
            session.execute(text("INSERT INTO no_such_table VALUES (1)"))
    finally:
        db.close()
    message = str(caught.value)
    assert describe_location(url) in message  # the file's absolute path, or the URL
    assert "no_such_table" in message
    assert PASSWORD not in message


def test_database_url_password_is_not_shown() -> None:
    location = describe_location("postgresql+psycopg://bot:hunter2@db.example/animagine")
    assert "hunter2" not in location
    assert "db.example" in location
    location = describe_location("postgresql+psycopg://bot@db.example/animagine?password=pw42")
    assert "pw42" not in location
    assert "db.example/animagine" in location


def test_a_missing_postgresql_database_stops_start_up_without_the_password(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.url("no_such_database", password=PASSWORD)
    with pytest.raises(DatabaseError) as caught:
        prepare_database(DatabaseSettings(url=url))
    message = str(caught.value)
    assert PASSWORD not in message
    assert describe_location(url) in message
    assert 'database "no_such_database" does not exist' in message


def test_an_unreachable_postgresql_server_is_named_without_the_password(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.url("animagine", password=PASSWORD).replace(
        f":{postgres_server.port}/", f":{free_port()}/"
    )
    with pytest.raises(DatabaseError) as caught:
        prepare_database(DatabaseSettings(url=url))
    message = str(caught.value)
    assert PASSWORD not in message
    assert "cannot be reached" in message


def test_a_row_locked_longer_than_the_busy_timeout_fails_naming_the_lock(
    postgres_server: PostgresServer,
) -> None:
    """On PostgreSQL the busy timeout bounds waiting for a lock (``lock_timeout``)."""
    name = postgres_server.create_database()
    url = postgres_server.url(name)
    holder = open_db(url)
    impatient = open_db(url, busy_timeout_ms=50)
    store = JobStore(holder)
    job = store.add(NewJob({}), user_id=1)
    try:
        with holder.transaction() as session:
            session.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": job.id})
            with pytest.raises(DatabaseError) as caught:
                JobStore(impatient).set_message(job.id, 5)
    finally:
        impatient.close()
        holder.close()
        postgres_server.drop_database(name)
    assert "is locked by another process" in str(caught.value)
    assert describe_location(url) in str(caught.value)


async def test_run_keeps_database_work_off_the_event_loop(db: Database) -> None:
    loop_thread = threading.get_ident()

    def work(x: int, *, y: int) -> tuple[int, int]:
        with db.read() as session:
            value = session.execute(text("SELECT :a + :b"), {"a": x, "b": y}).scalar_one()
        return value, threading.get_ident()

    value, worker = await db.run(work, 2, y=3)
    assert value == 5
    assert worker != loop_thread


async def test_run_after_close_is_refused(db_url: str) -> None:
    db = open_db(db_url)
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


def test_prepare_database_takes_the_whole_settings_or_the_section(db_url: str) -> None:
    for settings in (
        DatabaseSettings(url=db_url, busy_timeout_ms=1234),
        Settings(database=DatabaseSettings(url=db_url, busy_timeout_ms=1234)),
    ):
        db = prepare_database(settings)
        try:
            with db.read() as session:
                if db.is_sqlite:
                    assert session.execute(text("PRAGMA busy_timeout")).scalar() == 1234
                else:  # how long a statement waits for a lock
                    assert session.execute(text("SHOW lock_timeout")).scalar() == "1234ms"
        finally:
            db.close()
