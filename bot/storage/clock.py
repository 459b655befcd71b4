"""Time as the storage and limit code sees it: aware UTC datetimes from an injectable clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
"""Returns the current time as an aware datetime; tests pass a fake one."""


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """``moment`` converted to UTC; naive datetimes are refused (they hide bugs)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: pass an aware datetime (UTC)")
    return moment.astimezone(UTC)
