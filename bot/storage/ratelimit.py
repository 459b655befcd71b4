"""Rate-limit rows: token buckets and daily counters, read and locked portably.

The policy (tiers, costs, decisions) is in :mod:`bot.limits`; this module only knows rows.
A bucket stores ``tokens`` as of unix time ``tokens_at``; its level at ``now`` is
``min(burst, tokens + (now - tokens_at) / refill_seconds)``. Stored tokens may exceed the
burst after a refund; the cap applies when reading, so a refund never needs the tier.
A new row starts full (``tokens_at = 0``) with nothing used today.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.orm import Session

from bot.storage.database import insert_missing
from bot.storage.models import LimitScope, RateLimitState

SERVER_USER_ID = 0
"""``user_id`` of a server-wide row."""
DIRECT_GUILD_ID = 0
"""``guild_id`` used for direct messages, which belong to no server."""


def member_key(guild_id: int | None, user_id: int) -> tuple[LimitScope, int, int]:
    return (LimitScope.MEMBER, DIRECT_GUILD_ID if guild_id is None else guild_id, user_id)


def server_key(guild_id: int) -> tuple[LimitScope, int, int]:
    return (LimitScope.SERVER, guild_id, SERVER_USER_ID)


_STATES = (
    select(RateLimitState)
    .where(
        RateLimitState.guild_id == bindparam("guild_id"),
        or_(
            and_(
                RateLimitState.scope == LimitScope.MEMBER,
                RateLimitState.user_id == bindparam("user_id"),
            ),
            and_(
                RateLimitState.scope == LimitScope.SERVER,
                RateLimitState.user_id == SERVER_USER_ID,
            ),
        ),
    )
    .order_by(RateLimitState.scope.desc())  # "server" before "member": the lock order
)
_LOCK_STATES = _STATES.with_for_update()


def _fetch(
    session: Session, guild_id: int | None, user_id: int, *, lock: bool
) -> tuple[RateLimitState | None, RateLimitState | None]:
    gid = DIRECT_GUILD_ID if guild_id is None else guild_id
    member = server = None
    rows = session.scalars(
        _LOCK_STATES if lock else _STATES,
        {"guild_id": gid, "user_id": user_id},
        execution_options={"populate_existing": True},
    )
    for row in rows:
        if row.scope is LimitScope.MEMBER:
            member = row
        elif guild_id is not None:
            server = row
    return member, server


def read_states(
    session: Session, guild_id: int | None, user_id: int
) -> tuple[RateLimitState | None, RateLimitState | None]:
    """The member's row and (in a server) the server's row, unlocked; None if never written."""
    return _fetch(session, guild_id, user_id, lock=False)


def lock_states(
    session: Session, guild_id: int | None, user_id: int, *, period: datetime
) -> tuple[RateLimitState, RateLimitState | None]:
    """The member's row and (in a server) the server's row, created if missing, locked until
    the transaction ends.

    On SQLite the transaction already holds the database's write lock (``BEGIN IMMEDIATE``);
    on PostgreSQL missing rows are created with ``ON CONFLICT DO NOTHING`` and all are then
    locked with ``SELECT ... FOR UPDATE``, server row first.
    """
    member, server = _fetch(session, guild_id, user_id, lock=True)
    if member is not None and (guild_id is None or server is not None):
        return member, server
    if member is None:
        _create(session, member_key(guild_id, user_id), period)
    if guild_id is not None and server is None:
        _create(session, server_key(guild_id), period)
    member, server = _fetch(session, guild_id, user_id, lock=True)
    assert member is not None
    return member, server


def _create(session: Session, key: tuple[LimitScope, int, int], period: datetime) -> None:
    scope, guild_id, user_id = key
    values = {
        "scope": scope.value,
        "guild_id": guild_id,
        "user_id": user_id,
        "tokens": 0.0,
        "tokens_at": 0.0,  # long ago: the bucket is full
        "daily_period": period,
        "daily_used": 0,
    }
    insert_missing(session, RateLimitState, values)


def refund_state(row: RateLimitState, cost: int, charge_period: datetime | None) -> None:
    """Give ``cost`` images back to a bucket, and to the day's count if still that day."""
    row.tokens += cost
    if charge_period is not None and row.daily_period == charge_period:
        row.daily_used = max(0, row.daily_used - cost)
