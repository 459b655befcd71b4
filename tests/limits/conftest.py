from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bot.config import LimitsSettings
from bot.limits import RateLimiter
from bot.storage import Database
from tests.storage.fakes import BACKENDS, FakeClock

Tier = LimitsSettings.Tier


MakeLimiter = Callable[..., RateLimiter]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each test that uses a database runs on SQLite and on PostgreSQL."""
    return str(request.param)


@pytest.fixture
def make_limiter(db: Database, clock: FakeClock) -> MakeLimiter:
    """``make_limiter(default=Tier(...), **other LimitsSettings fields)``."""

    def make(*, default: Tier | None = None, **fields: Any) -> RateLimiter:
        tiers = dict(fields.pop("tiers", {}))
        tiers["default"] = default or Tier()
        settings = LimitsSettings(tiers=tiers, **fields)
        return RateLimiter(db, settings, clock=clock)

    return make
