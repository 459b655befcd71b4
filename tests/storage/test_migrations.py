"""The schema comes from the migrations, and the migrations match the models.

Each test runs on SQLite and on a real PostgreSQL server (``[sqlite]``, ``[postgresql]``);
the PostgreSQL URLs carry a password, which no message may show.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from bot.cli import main
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
from bot.storage.database import describe_location
from bot.storage.models import Base, UTCDateTime
from tests.storage.fakes import PASSWORD, with_password

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


def _execute(url: str, statement: sa.Executable, *rows: dict[str, object]) -> list[sa.Row[Any]]:
    """Run one statement in its own transaction, as another program would."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(statement, list(rows)) if rows else conn.execute(statement)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


@pytest.fixture
def url(empty_db_url: str) -> str:
    """A database never migrated; on PostgreSQL its URL has a password (the test server
    accepts any)."""
    return with_password(empty_db_url)


def test_upgrade_downgrade_upgrade_and_no_drift(url: str) -> None:
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


def test_check_schema_version_reports_pending_upgrade(url: str) -> None:
    version = check_schema_version(url)
    assert version.current is None
    assert not version.up_to_date
    upgrade(url)
    assert check_schema_version(url).up_to_date


def test_prepare_database_upgrades_and_keeps_data_on_restart(url: str) -> None:
    settings = Settings(database=DatabaseSettings(url=url))
    db = prepare_database(settings)
    try:
        MemberStore(db).ban(1, 2, reason="spam")
    finally:
        db.close()
    again = prepare_database(settings)
    try:
        assert current(url) == head()
        member = MemberStore(again).get(1, 2)
        assert member is not None
        assert member.banned
        assert member.ban_reason == "spam"
    finally:
        again.close()


def test_database_newer_than_code_refuses_to_start(url: str) -> None:
    upgrade(url)
    _execute(url, sa.text("UPDATE alembic_version SET version_num = 'f00dfeed9999'"))

    with pytest.raises(SchemaVersionError) as caught:
        check_schema_version(url)
    message = str(caught.value)
    assert describe_location(url) in message  # the file's path, or the URL
    assert PASSWORD not in message
    assert "f00dfeed9999" in message
    assert "newer version" in message

    with pytest.raises(SchemaVersionError, match="f00dfeed9999"):
        prepare_database(DatabaseSettings(url=url))
    with pytest.raises(SchemaVersionError):
        upgrade(url)


def test_migrations_found_from_any_working_directory(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    upgrade(url)
    assert current(url) == head()


def test_db_upgrade_and_current_from_the_command_line(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANIMAGINE_DATABASE__URL", url)
    assert main(["db", "current"]) == 0
    assert "empty (no schema)" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0
    out = capsys.readouterr().out
    assert describe_location(url) in out
    assert PASSWORD not in out
    assert main(["db", "current"]) == 0
    assert f"{head()} (up to date)" in capsys.readouterr().out


def test_in_memory_database_is_migrated() -> None:  # SQLite only: there is no other kind
    db = prepare_database(DatabaseSettings(url="sqlite://"))
    try:
        with db.read() as session:
            names = set(inspect(session.connection()).get_table_names())
        assert names >= TABLES
    finally:
        db.close()


OLD_JOBS = sa.table(
    "jobs",
    sa.column("status", sa.String),
    sa.column("request", sa.JSON),
    sa.column("guild_id", sa.BigInteger),
    sa.column("user_id", sa.BigInteger),
    sa.column("position", sa.BigInteger),
    sa.column("cost", sa.Integer),
    sa.column("queued_at", UTCDateTime()),
)


def test_a_job_queued_before_plans_were_stored_is_carried_over_unplanned(url: str) -> None:
    upgrade(url, "0001")
    stored = {
        "request": GenerationRequest(prompt="1girl", seed=4, count=2).model_dump(mode="json"),
        "age_restricted": True,
        "is_dm": False,
        "is_thread": True,
    }
    queued_at = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    row = {"status": "queued", "request": stored, "guild_id": 10, "user_id": 1}
    _execute(url, OLD_JOBS.insert(), {**row, "position": 1, "cost": 2, "queued_at": queued_at})

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
        assert job.queued_at == queued_at
    finally:
        db.close()

    downgrade(url, "0001")
    engine = create_engine(url)
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("jobs")}
    finally:
        engine.dispose()
    assert "plan" not in columns
    (request,) = _execute(url, sa.select(OLD_JOBS.c.request))
    assert request[0] == stored
