"""The schema comes from the migrations, and the migrations match the models."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from bot.config import DatabaseSettings, Settings
from bot.moderation import ChannelContext
from bot.request import GenerationRequest
from bot.storage import (
    JobStore,
    MemberStore,
    SchemaVersionError,
    check_schema_version,
    create_engine,
    current,
    downgrade,
    head,
    prepare_database,
    upgrade,
)
from bot.storage.models import Base
from tests.storage.fakes import sqlite_url

TABLES = {
    "guild_settings",
    "members",
    "jobs",
    "images",
    "rate_limit_state",
    "moderation_events",
}


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_and_no_drift(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "m.db")
    assert current(url) is None
    upgrade(url)
    assert current(url) == head()
    assert _tables(url) == TABLES
    assert _diff(url) == []

    downgrade(url)
    assert current(url) is None
    assert _tables(url) == set()

    upgrade(url)
    assert current(url) == head()
    assert _tables(url) == TABLES
    assert _diff(url) == []


def test_check_schema_version_reports_pending_upgrade(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "m.db")
    version = check_schema_version(url)
    assert version.current is None
    assert not version.up_to_date
    upgrade(url)
    assert check_schema_version(url).up_to_date


def test_prepare_database_upgrades_and_keeps_data_on_restart(tmp_path: Path) -> None:
    settings = Settings(database=DatabaseSettings(url=sqlite_url(tmp_path / "new" / "bot.db")))
    db = prepare_database(settings)
    try:
        MemberStore(db).ban(1, 2, reason="spam")
    finally:
        db.close()
    again = prepare_database(settings)
    try:
        assert current(sqlite_url(tmp_path / "new" / "bot.db")) == head()
        member = MemberStore(again).get(1, 2)
        assert member is not None
        assert member.banned
        assert member.ban_reason == "spam"
    finally:
        again.close()


def test_database_newer_than_code_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    url = sqlite_url(path)
    upgrade(url)
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE alembic_version SET version_num = 'f00dfeed9999'")
    raw.close()

    with pytest.raises(SchemaVersionError) as caught:
        check_schema_version(url)
    message = str(caught.value)
    assert str(path) in message
    assert "f00dfeed9999" in message
    assert "newer version" in message

    with pytest.raises(SchemaVersionError, match="f00dfeed9999"):
        prepare_database(DatabaseSettings(url=url))
    with pytest.raises(SchemaVersionError):
        upgrade(url)


def test_migrations_found_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    url = sqlite_url(tmp_path / "cwd.db")
    upgrade(url)
    assert current(url) == head()


def test_in_memory_database_is_migrated() -> None:
    db = prepare_database(DatabaseSettings(url="sqlite://"))
    try:
        with db.read() as session:
            names = set(inspect(session.connection()).get_table_names())
        assert names >= TABLES
    finally:
        db.close()


def test_a_job_queued_before_plans_were_stored_is_carried_over_unplanned(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = sqlite_url(path)
    upgrade(url, "0001")
    stored = {
        "request": GenerationRequest(prompt="1girl", seed=4, count=2).model_dump(mode="json"),
        "age_restricted": True,
        "is_dm": False,
        "is_thread": True,
    }
    with sqlite3.connect(path) as raw:
        raw.execute(
            "INSERT INTO jobs (status, request, guild_id, user_id, position, cost, queued_at)"
            " VALUES ('queued', ?, 10, 1, 1, 2, '2026-11-26 10:00:00.000000')",
            (json.dumps(stored),),
        )
    raw.close()

    upgrade(url)
    assert current(url) == head()
    db = prepare_database(DatabaseSettings(url=url))
    try:
        (job,) = JobStore(db).queued()
        assert job.plan is None  # planned on first use, by the code that plans new jobs
        assert job.request == GenerationRequest(prompt="1girl", seed=4, count=2)
        assert job.channel == ChannelContext(True, is_thread=True)
        assert job.spec.shape.count == 2  # ETA and micro-batching read the request meanwhile
        assert job.cost == 2
    finally:
        db.close()

    downgrade(url, "0001")
    with sqlite3.connect(path) as raw:
        columns = {row[1] for row in raw.execute("PRAGMA table_info(jobs)")}
        (request,) = raw.execute("SELECT request FROM jobs").fetchone()
    raw.close()
    assert "plan" not in columns
    assert json.loads(request) == stored
