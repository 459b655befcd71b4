"""Shared fixtures: a tiny SDXL model on disk, an engine on the CPU, a migrated database
(SQLite in tmp_path; the storage and limits suites also run each test on a real PostgreSQL
server) and a clock that moves only when told to."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import settings as hypothesis_settings
from sqlalchemy.engine import make_url

from bot.config import Settings, load_settings
from bot.engine import Engine
from bot.storage import Database
from tests.storage.fakes import FakeClock, open_db, sqlite_url
from tests.support.postgres_server import PostgresServer
from tests.support.tiny_sdxl import save_tiny_model

# The same examples on every run: CI is judged on one run, so a property test must not turn
# red by drawing a new example there. Explore locally with --hypothesis-seed=random.
hypothesis_settings.register_profile("repeatable", derandomize=True)
hypothesis_settings.load_profile("repeatable")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread: tiny models gain nothing from more, and on a shared CPU
    torch's spinning thread pool makes them 10-20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SDXL model in diffusers layout with float32 and fp16 variant files."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


def tiny_settings(model_dir: Path, **env: str) -> Settings:
    """Settings for the tiny model on the CPU, small sizes allowed."""
    environ = {
        "ANIMAGINE_MODEL__SOURCE": str(model_dir),
        "ANIMAGINE_ENGINE__DEVICE": "cpu",
        "ANIMAGINE_ENGINE__MIN_SIDE": "64",
        "ANIMAGINE_ENGINE__DEFAULT_WIDTH": "128",
        "ANIMAGINE_ENGINE__DEFAULT_HEIGHT": "128",
        "ANIMAGINE_ENGINE__DEFAULT_STEPS": "3",
        # No live previews unless a test gives a TAESD folder (never the hub).
        "ANIMAGINE_PREVIEWS__SOURCE": "",
        **env,
    }
    return load_settings(environ=environ)


@pytest.fixture(scope="session")
def engine(tiny_model_dir: Path) -> Engine:
    return Engine.load(tiny_settings(tiny_model_dir))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the whole session, started the first time a test asks
    (a couple of seconds); fails with how to install PostgreSQL when it is missing."""
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def backend() -> str:
    """The database :func:`db_url` and :func:`db` use: ``sqlite`` here. The storage and
    limits suites override this fixture to run each of their tests on ``postgresql`` too
    (``tests/storage/conftest.py``); everything else stays on SQLite."""
    return "sqlite"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where an SQLite :func:`db` keeps its file (in a folder the database layer creates)."""
    return tmp_path / "state" / "bot.db"


@pytest.fixture(scope="session")
def postgres_migrated(postgres_server: PostgresServer) -> str:
    """The name of a database on the session's server migrated to the newest schema, to copy
    (every test's :func:`db_url` on PostgreSQL is a copy: fast, and each test has its own)."""
    from bot.storage import upgrade

    name = postgres_server.create_database("migrated")
    upgrade(postgres_server.url(name))
    return name


def _postgres_database(request: pytest.FixtureRequest, *, migrated: bool) -> Iterator[str]:
    server: PostgresServer = request.getfixturevalue("postgres_server")
    template = request.getfixturevalue("postgres_migrated") if migrated else "template0"
    name = server.take_database(template)
    yield server.url(name)
    server.drop_database(name)


@pytest.fixture
def db_url(request: pytest.FixtureRequest, backend: str, db_path: Path) -> Iterator[str]:
    """The URL of this test's own database, for :func:`open_db` (which migrates it as the
    bot does at start): the SQLite file :func:`db_path`, or a new database on the session's
    PostgreSQL server (a copy of one already migrated)."""
    if backend == "sqlite":
        yield sqlite_url(db_path)
    else:
        assert backend == "postgresql", backend
        yield from _postgres_database(request, migrated=True)


@pytest.fixture
def empty_db_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a database never migrated (an SQLite file not created yet, or an empty
    PostgreSQL database), for the migration tests."""
    if backend == "sqlite":
        yield sqlite_url(tmp_path / "empty.db")
    else:
        assert backend == "postgresql", backend
        yield from _postgres_database(request, migrated=False)


@pytest.fixture
def make_db_url(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> Iterator[Callable[[], str]]:
    """``make_db_url()``: the URL of one more database of this test's backend, new and
    migrated to the newest schema (for tests that need several)."""
    made: list[str] = []
    server: PostgresServer | None = None

    def make() -> str:
        nonlocal server
        if backend == "sqlite":
            url = sqlite_url(tmp_path / f"extra-{len(made) + 1}.db")
            open_db(url).close()
        else:
            server = request.getfixturevalue("postgres_server")
            name = server.take_database(request.getfixturevalue("postgres_migrated"))
            url = server.url(name)
        made.append(url)
        return url

    yield make
    if server is not None:
        for url in made:
            server.drop_database(make_url(url).database or "")


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """The bot's database at :func:`db_url`, migrated as at start-up."""
    database = open_db(db_url)
    yield database
    database.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
