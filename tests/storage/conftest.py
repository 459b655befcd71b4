"""The storage suite runs each test that uses a database on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

from tests.storage.fakes import BACKENDS


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
