"""The outbox: a finished job's delivery is a state of the job; images are kept on disk.

``jobs`` gains the delivery's state (``delivery``: ``pending``, ``delivered``, ``expired``;
NULL for jobs that ended before this revision or never had images to deliver), how many
attempts were made, when the next one is due, until when it keeps trying, how many of the
job's posts already went out (so a retry never posts one twice), the last error, and when
it was delivered. ``images`` gains the image check's verdict and the infotext (to deliver
again after a restart exactly what the first attempt would have), and ``stored_bytes``: the
size of the PNG kept in ``delivery.images_dir`` (0: none kept, or removed by retention).

Existing rows keep NULL/0: their images were never kept, so there is nothing to deliver
again. Downgrading drops the columns; the image files are left for the operator.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("delivery", sa.String(16), nullable=True))
        batch.add_column(
            sa.Column("delivery_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("delivery_posted", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("delivery_next_at", _utc(), nullable=True))
        batch.add_column(sa.Column("delivery_until", _utc(), nullable=True))
        batch.add_column(sa.Column("delivered_at", _utc(), nullable=True))
        batch.add_column(sa.Column("delivery_error", sa.Text(), nullable=True))
        batch.create_index("ix_jobs_delivery_next", ["delivery", "delivery_next_at"])
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("verdict", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("infotext", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("stored_bytes", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("stored_bytes")
        batch.drop_column("infotext")
        batch.drop_column("verdict")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_delivery_next")
        for column in (
            "delivery_error",
            "delivered_at",
            "delivery_until",
            "delivery_next_at",
            "delivery_posted",
            "delivery_attempts",
            "delivery",
        ):
            batch.drop_column(column)
