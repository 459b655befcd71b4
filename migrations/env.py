"""Alembic environment of the bot.

Normally run through ``bot.storage.migrate`` (``python -m bot db upgrade``), which passes an
open connection in ``config.attributes["connection"]``. Running the ``alembic`` command from
the repository root also works (``alembic.ini``); the URL then comes from
``ANIMAGINE_DATABASE__URL`` or the ini file's ``sqlalchemy.url``, else the default.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from bot.config import DatabaseSettings
from bot.storage.database import create_engine
from bot.storage.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return (
        os.environ.get("ANIMAGINE_DATABASE__URL")
        or config.get_main_option("sqlalchemy.url")
        or DatabaseSettings().url
    )


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=True,  # SQLite alters tables by rebuilding them
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    # The bot's SQLite connections let SQLAlchemy emit BEGIN, so DDL is transactional there:
    # an upgrade applies completely or not at all.
    _configure(connection=connection, transactional_ddl=True if sqlite else None)
    with context.begin_transaction():
        context.run_migrations()
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"migration left broken foreign keys: {broken[:5]}")


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = create_engine(_url(), foreign_keys=False, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            _run_on(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
