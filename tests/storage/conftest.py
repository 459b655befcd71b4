from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.storage import Database
from tests.storage.fakes import FakeClock, open_db


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "bot.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[Database]:
    database = open_db(db_path)
    yield database
    database.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
