"""Engine creation, sessions, error wrapping and the async facade.

SQLite (the default) is opened in WAL mode with a busy timeout and foreign keys on. The
sqlite3 driver's own transaction handling is switched off and SQLAlchemy emits ``BEGIN``
itself, so that transactions (and DDL) behave as documented and write transactions can
start with ``BEGIN IMMEDIATE``: the write lock is taken before anything is read, which makes
read-decide-write sequences atomic also across processes sharing the file. On PostgreSQL
the same code takes row locks (``SELECT ... FOR UPDATE``) instead.

Database work is synchronous; from the event loop call it through :meth:`Database.run`,
which runs it on the database's own worker threads.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, ParamSpec, Self, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import Pool, StaticPool

from bot.storage.clock import Clock, as_utc, utc_now

if TYPE_CHECKING:
    from bot.config import DatabaseSettings

P = ParamSpec("P")
T = TypeVar("T")

BEGIN_OPTION: Final = "animagine_sqlite_begin"
"""Execution option naming how SQLite transactions begin: DEFERRED (default) or IMMEDIATE."""
_BEGIN_MODES: Final = frozenset({"DEFERRED", "IMMEDIATE", "EXCLUSIVE"})

_HINTS: Final = (
    ("file is not a database", "is not an SQLite database or is corrupt"),
    ("malformed", "is corrupt"),
    ("database is locked", "is locked by another process"),
    ("unable to open database file", "cannot be opened (check the path and its permissions)"),
    ("readonly database", "is read-only"),
    ("disk i/o error", "cannot be read or written (disk I/O error)"),
    ("database or disk is full", "cannot be written: the disk is full"),
    ("connection refused", "cannot be reached (is the server running, at that host and port?)"),
)
# PostgreSQL reports its errors by SQLSTATE; the same words as SQLite's where they match.
_SQLSTATE_HINTS: Final = {
    "53100": "cannot be written: the disk is full",  # disk_full
    "55P03": "is locked by another process",  # lock_not_available: lock_timeout passed
    "25006": "is read-only",  # read_only_sql_transaction (a standby, or read-only user)
    "53300": "has no free connection (too many clients)",  # too_many_connections
}
_SECRET_QUERY_KEYS: Final = frozenset({"password", "sslpassword"})


class DatabaseError(Exception):
    """The database cannot be used. ``str()`` names the file (or the URL, password hidden)."""

    def __init__(self, location: str, problem: str) -> None:
        super().__init__(f"database {location}: {problem}")
        self.location = location
        self.problem = problem


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def is_memory(url: URL) -> bool:
    return is_sqlite(url) and (
        not url.database or url.database == ":memory:" or url.query.get("mode") == "memory"
    )


def sqlite_path(url: URL) -> Path | None:
    """The file an SQLite URL names (None for other databases and in-memory SQLite)."""
    if not is_sqlite(url) or is_memory(url) or url.database is None:
        return None
    return Path(url.database)


def describe_location(url: str | URL) -> str:
    """How messages name the database: the absolute file path, or the URL without password
    (neither the user's password nor one given as a query parameter)."""
    url = make_url(url)
    if is_memory(url):
        return "(in memory)"
    path = sqlite_path(url)
    if path is not None:
        return str(path.absolute())
    hidden = {key: "***" for key in url.query if key.lower() in _SECRET_QUERY_KEYS}
    if hidden:
        url = url.update_query_dict(hidden)
    return url.render_as_string(hide_password=True)


def describe_problem(exc: BaseException) -> str:
    """A short, human explanation of a driver error."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()[0] if str(original).strip() else type(exc).__name__
    state = getattr(original, "sqlstate", None)
    if isinstance(state, str) and state in _SQLSTATE_HINTS:
        return f"{_SQLSTATE_HINTS[state]} ({text})"
    lowered = text.lower()
    for needle, hint in _HINTS:
        if needle in lowered:
            return f"{hint} ({text})"
    return text


@contextmanager
def wrap_errors(location: str) -> Iterator[None]:
    """Re-raise driver and pool errors as :class:`DatabaseError` naming ``location``."""
    try:
        yield
    except DatabaseError:
        raise
    except sa_exc.TimeoutError as exc:
        raise DatabaseError(location, f"no free connection ({exc})") from exc
    except (sa_exc.DBAPIError, sqlite3.Error) as exc:
        raise DatabaseError(location, describe_problem(exc)) from exc


def _sqlite_on_connect(busy_timeout_ms: int, foreign_keys: bool, dbapi_conn: Any, _: Any) -> None:
    # Take transaction control away from the sqlite3 module; _sqlite_on_begin emits BEGIN.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    mode = str(conn.get_execution_options().get(BEGIN_OPTION, "DEFERRED")).upper()
    if mode not in _BEGIN_MODES:
        raise ValueError(f"unknown SQLite BEGIN mode {mode!r}")
    conn.exec_driver_sql(f"BEGIN {mode}")


def create_engine(
    url: str | URL,
    *,
    busy_timeout_ms: int = 5000,
    pool_size: int = 4,
    foreign_keys: bool = True,
    poolclass: type[Pool] | None = None,
) -> Engine:
    """An engine for ``url`` with the bot's connection settings (pragmas on SQLite)."""
    try:
        url = make_url(url)
    except sa.exc.ArgumentError:
        raise DatabaseError(str(url), "database.url is not a database URL") from None
    try:
        return _create_engine(url, busy_timeout_ms, pool_size, foreign_keys, poolclass)
    except (sa.exc.NoSuchModuleError, ImportError) as exc:
        raise DatabaseError(
            describe_location(url),
            f"database.url: no driver for {url.drivername!r} is installed ({exc}); "
            "for PostgreSQL install psycopg (pip install 'psycopg[binary]')",
        ) from None


def _create_engine(
    url: URL,
    busy_timeout_ms: int,
    pool_size: int,
    foreign_keys: bool,
    poolclass: type[Pool] | None,
) -> Engine:
    kwargs: dict[str, Any] = {}
    if is_sqlite(url):
        kwargs["connect_args"] = {"timeout": busy_timeout_ms / 1000, "check_same_thread": False}
        if is_memory(url):
            kwargs["poolclass"] = StaticPool
        elif poolclass is not None:
            kwargs["poolclass"] = poolclass
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_timeout=30)
        engine = sa.create_engine(url, **kwargs)
        event.listen(
            engine, "connect", functools.partial(_sqlite_on_connect, busy_timeout_ms, foreign_keys)
        )
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if url.get_backend_name() == "postgresql" and "options" not in url.query:
        # The busy timeout bounds waiting for a lock, as on SQLite: past it the statement
        # fails ("is locked by another process") instead of waiting forever. 0 is "do not
        # wait" on SQLite but "forever" on PostgreSQL, hence at least 1 ms.
        lock_timeout = max(1, int(busy_timeout_ms))
        kwargs["connect_args"] = {"options": f"-c lock_timeout={lock_timeout}"}
    if poolclass is not None:
        kwargs["poolclass"] = poolclass
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    return sa.create_engine(url, **kwargs)


def insert_missing(session: Session, model: type[Any], values: Mapping[str, Any]) -> None:
    """Insert the row ``values`` unless a row with its primary key exists already.

    Then read (and lock) it with ``with_for_update()``: on PostgreSQL two transactions that
    both found no row can both get here, and a plain ``INSERT`` would fail in one of them;
    ``ON CONFLICT DO NOTHING`` instead waits for the other's row and leaves it alone. On
    SQLite the write lock (``BEGIN IMMEDIATE``) already orders them.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        session.execute(sqlite.insert(model).values(dict(values)).on_conflict_do_nothing())
    elif dialect == "postgresql":
        session.execute(postgresql.insert(model).values(dict(values)).on_conflict_do_nothing())
    else:
        key = tuple(values[c.key] for c in sa.inspect(model).primary_key)
        if session.get(model, key) is None:
            session.add(model(**values))
            session.flush()


def serialize(session: Session, name: str) -> None:
    """Let one transaction at a time past this point (until it ends), across processes.

    For read-then-write steps that lock no row (the next queue position is one more than
    the largest). SQLite's write lock already orders every write transaction; PostgreSQL
    takes an advisory lock named by ``name`` (per database), released at commit/rollback.
    """
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(f"animagine:{name}".encode())
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


class Database:
    """The bot's database: sessions for reading and for atomic writes, and :meth:`run`."""

    def __init__(self, url: str | URL, *, busy_timeout_ms: int = 5000, pool_size: int = 4) -> None:
        self.url = make_url(url)
        self.location = describe_location(self.url)
        self.busy_timeout_ms = busy_timeout_ms
        self.path = sqlite_path(self.url)
        if self.path is not None and not self.path.parent.is_dir():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(
                    self.location, f"cannot create its folder ({exc.strerror or exc})"
                ) from exc
        try:
            self.engine = create_engine(
                self.url, busy_timeout_ms=busy_timeout_ms, pool_size=pool_size
            )
        except ImportError as exc:
            raise DatabaseError(
                self.location, f"its driver is not installed ({exc.name or exc})"
            ) from exc
        writer = self.engine
        if self.is_sqlite:
            writer = self.engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(writer, expire_on_commit=False)
        # One writer per process at a time: SQLite allows one anyway, and waiting on a lock
        # here is fair and cheap while SQLite's busy handler sleeps and retries.
        self._write_lock: AbstractContextManager[Any] = (
            threading.Lock() if self.is_sqlite else nullcontext()
        )
        # An in-memory database is one shared connection: reads must wait for writes too.
        self._read_lock = self._write_lock if is_memory(self.url) else nullcontext()
        self._executor = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="database")
        self._closed = False

    @classmethod
    def from_settings(cls, settings: DatabaseSettings) -> Database:
        return cls(
            settings.url, busy_timeout_ms=settings.busy_timeout_ms, pool_size=settings.pool_size
        )

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.url)

    @property
    def is_memory(self) -> bool:
        return is_memory(self.url)

    @property
    def dialect_name(self) -> str:
        return self.engine.dialect.name

    def errors(self) -> AbstractContextManager[None]:
        """Wraps driver errors in :class:`DatabaseError` naming this database."""
        return wrap_errors(self.location)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading (one consistent snapshot; nothing is committed)."""
        with self.errors(), self._read_lock, self._reader() as session:
            yield session  # closing the session rolls back

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits together at the end, or not at all.

        On SQLite the transaction starts with ``BEGIN IMMEDIATE`` (the database's write lock
        is held from the first statement); on other databases lock the rows you decide on
        with ``with_for_update()``. Any driver error rolls everything back and is raised as
        :class:`DatabaseError`.
        """
        with self.errors(), self._write_lock, self._writer() as session, session.begin():
            yield session

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking database work ``fn(*args, **kwargs)`` off the event loop."""
        if self._closed:
            raise DatabaseError(self.location, "already closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def check(self) -> None:
        """Make sure the database can be opened and read (and, on SQLite, is not corrupt)."""
        with self.errors(), self._read_lock, self.engine.connect() as conn:
            if self.is_sqlite:
                rows = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
                if rows != ["ok"]:
                    raise DatabaseError(self.location, "is corrupt: " + "; ".join(rows[:3]))
            else:
                conn.execute(sa.text("SELECT 1"))
            conn.rollback()

    def close(self) -> None:
        """Wait for running work, then close every connection. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self.location!r})"


class Store:
    """A repository over :class:`Database` with an injectable clock (tests move time)."""

    def __init__(self, db: Database, *, clock: Clock = utc_now) -> None:
        self.db = db
        self.clock = clock

    def _now(self) -> datetime:
        return as_utc(self.clock())
