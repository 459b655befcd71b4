from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import LimitsSettings
from bot.limits import RateLimiter
from bot.storage import Database
from tests.storage.fakes import FakeClock, open_db

Tier = LimitsSettings.Tier


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "bot.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[Database]:
    database = open_db(db_path)
    yield database
    database.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


MakeLimiter = Callable[..., RateLimiter]


@pytest.fixture
def make_limiter(db: Database, clock: FakeClock) -> MakeLimiter:
    """``make_limiter(default=Tier(...), **other LimitsSettings fields)``."""

    def make(*, default: Tier | None = None, **fields: Any) -> RateLimiter:
        tiers = dict(fields.pop("tiers", {}))
        tiers["default"] = default or Tier()
        settings = LimitsSettings(tiers=tiers, **fields)
        return RateLimiter(db, settings, clock=clock)

    return make
