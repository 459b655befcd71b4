"""Schema migrations (Alembic), configured from code so they work from any directory.

The revisions live in the repository's top-level ``migrations/`` folder, found next to the
``bot`` package (the bot is installed in editable mode). ``prepare_database`` is the
start-up entry: it opens the database, checks it can be read, refuses a schema newer than
this code, and upgrades to the newest revision.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from bot.config import DatabaseSettings, Settings
from bot.storage.database import (
    BEGIN_OPTION,
    Database,
    DatabaseError,
    create_engine,
    describe_location,
    is_memory,
    wrap_errors,
)

MIGRATIONS_DIR: Final = Path(__file__).resolve().parents[2] / "migrations"


class SchemaVersionError(DatabaseError):
    """The database's schema revision is unknown to this code (it is newer, or foreign)."""


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """Where a database's schema stands relative to this code."""

    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for ``migrations/``; ``connection`` is used when given."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise RuntimeError(
            f"migrations folder not found at {MIGRATIONS_DIR}: install the bot from its "
            "source tree in editable mode (pip install -e .)"
        )
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision this code knows."""
    revision = script_directory().get_current_head()
    assert revision is not None
    return str(revision)


def known_revisions() -> frozenset[str]:
    return frozenset(rev.revision for rev in script_directory().walk_revisions())


@contextmanager
def _connect(url: str, busy_timeout_ms: int) -> Iterator[Connection]:
    location = describe_location(url)
    # Foreign keys are off while migrating (SQLite rebuilds tables to alter them); the
    # migration environment checks them before committing.
    engine = create_engine(
        url, busy_timeout_ms=busy_timeout_ms, foreign_keys=False, poolclass=NullPool
    )
    try:
        with wrap_errors(location), engine.connect() as conn:
            yield conn.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
    finally:
        engine.dispose()


def _run_command(conn: Connection, location: str, name: str, revision: str) -> None:
    config = alembic_config(conn)
    try:
        if name == "upgrade":
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)
    except CommandError as exc:
        raise DatabaseError(location, f"cannot {name} to {revision!r}: {exc}") from exc
    if conn.in_transaction():
        conn.commit()


def upgrade(url: str, revision: str = "head", *, busy_timeout_ms: int = 5000) -> None:
    """Upgrade the schema of the database at ``url`` (to the newest revision by default)."""
    _check_known(url, busy_timeout_ms)
    with _connect(url, busy_timeout_ms) as conn:
        _run_command(conn, describe_location(url), "upgrade", revision)


def downgrade(url: str, revision: str = "base", *, busy_timeout_ms: int = 5000) -> None:
    """Downgrade the schema (to an empty database by default: every table is dropped)."""
    _check_known(url, busy_timeout_ms)
    with _connect(url, busy_timeout_ms) as conn:
        _run_command(conn, describe_location(url), "downgrade", revision)


def _current_on(conn: Connection) -> str | None:
    revision: str | None = MigrationContext.configure(conn).get_current_revision()
    if conn.in_transaction():
        conn.rollback()
    return revision


def current(url: str, *, busy_timeout_ms: int = 5000) -> str | None:
    """The database's schema revision; None for a database never migrated."""
    with _connect(url, busy_timeout_ms) as conn:
        return _current_on(conn)


def _version(location: str, revision: str | None) -> SchemaVersion:
    if revision is not None and revision not in known_revisions():
        raise SchemaVersionError(
            location,
            f"its schema is at revision {revision!r}, which this version of the bot does not "
            "know: it was probably upgraded by a newer version. Run that newer version, or "
            "restore a backup made before the upgrade.",
        )
    return SchemaVersion(current=revision, head=head())


def _check_known(url: str, busy_timeout_ms: int) -> SchemaVersion:
    return _version(describe_location(url), current(url, busy_timeout_ms=busy_timeout_ms))


def check_schema_version(url: str, *, busy_timeout_ms: int = 5000) -> SchemaVersion:
    """The database's revision and this code's head; raises :class:`SchemaVersionError`
    when the database's revision is unknown here (the database is newer than the code)."""
    return _check_known(url, busy_timeout_ms)


def prepare_database(settings: DatabaseSettings | Settings) -> Database:
    """Open the configured database for the bot, upgraded to the newest schema.

    Raises :class:`DatabaseError` (whose message names the file) when the database cannot be
    opened, is corrupt, stays locked longer than the busy timeout, or has a schema revision
    this code does not know.
    """
    section = settings.database if isinstance(settings, Settings) else settings
    db = Database.from_settings(section)
    try:
        db.check()
        if is_memory(db.url):
            # One shared connection: migrate on it, or the tables would vanish with another.
            with db.errors(), db.engine.connect() as conn:
                _version(db.location, _current_on(conn))
                _run_command(conn, db.location, "upgrade", "head")
        else:
            url = db.url.render_as_string(hide_password=False)
            upgrade(url, busy_timeout_ms=section.busy_timeout_ms)
    except BaseException:
        db.close()
        raise
    return db


__all__ = [
    "MIGRATIONS_DIR",
    "SchemaVersion",
    "SchemaVersionError",
    "alembic_config",
    "check_schema_version",
    "current",
    "downgrade",
    "head",
    "known_revisions",
    "prepare_database",
    "upgrade",
]
