"""Jobs remember when their posted images were deleted (the Delete button).

``jobs.deleted_at`` is set when the requester, or a moderator, deletes a job's result with
its Delete button, so ``/history`` no longer lists it. A member deleting their own images is
not a moderation event (no ``moderation_events`` row), which is why the job itself records it.
Existing rows keep NULL. Downgrading drops the column.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("deleted_at")
