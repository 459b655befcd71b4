"""Jobs store their plan: a nullable JSON ``plan`` column on ``jobs``.

A job is planned once, when it is accepted (:func:`bot.planning.plan_job`): its final
prompts after wildcards, presets and emphasis, one seed per image, size, steps, sampler and
hires pass (:class:`bot.jobspec.StoredPlan`); the worker renders that plan.

Existing rows are carried over with ``plan`` NULL, not planned here: planning reads the
settings and the wildcard folder, which a migration does not have (and must not guess).
A row without a plan is planned once, on first use, by the same function as a new job
(the renderer calls :func:`bot.planning.plan_job` and stores the result with
:meth:`bot.storage.jobs.JobStore.set_plan`); until then its shape (ETA, micro-batching)
is read from its stored request, as before this revision. Downgrading drops the column:
the stored requests are untouched, so an older bot plans them again as it always did.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("plan", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("plan")
