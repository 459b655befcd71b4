"""Initial schema: guild settings, members, jobs, images, rate-limit state, moderation events.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "guild_settings",
        sa.Column("guild_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("default_tier", sa.String(length=64), nullable=True),
        sa.Column("role_tiers", sa.JSON(), nullable=False),
        sa.Column("exempt_role_ids", sa.JSON(), nullable=False),
        sa.Column("tier_overrides", sa.JSON(), nullable=False),
        sa.Column("server_limits", sa.JSON(), nullable=False),
        sa.Column("generation_defaults", sa.JSON(), nullable=False),
        sa.Column("moderation", sa.JSON(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("guild_id", name=op.f("pk_guild_settings")),
    )
    op.create_table(
        "members",
        sa.Column("guild_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=True),
        sa.Column("banned", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("ban_reason", sa.Text(), nullable=True),
        sa.Column("banned_at", _utc(), nullable=True),
        sa.Column("banned_until", _utc(), nullable=True),
        sa.Column("banned_by", sa.BigInteger(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("guild_id", "user_id", name=op.f("pk_members")),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "finished",
                "failed",
                "cancelled",
                name="job_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("interaction_token", sa.Text(), nullable=True),
        sa.Column("interaction_expires_at", _utc(), nullable=True),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("charge_period", _utc(), nullable=True),
        sa.Column("refunded_at", _utc(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("queued_at", _utc(), nullable=False),
        sa.Column("started_at", _utc(), nullable=True),
        sa.Column("finished_at", _utc(), nullable=True),
        sa.Column("failed_at", _utc(), nullable=True),
        sa.Column("cancelled_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index("ix_jobs_status_position", "jobs", ["status", "position"])
    op.create_index("ix_jobs_member_status", "jobs", ["guild_id", "user_id", "status"])
    op.create_index("ix_jobs_guild_status", "jobs", ["guild_id", "status"])
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("moderation_scores", sa.JSON(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_images_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("job_id", "index", name=op.f("uq_images_job_id_index")),
    )
    op.create_index(op.f("ix_images_content_hash"), "images", ["content_hash"])
    op.create_index(op.f("ix_images_job_id"), "images", ["job_id"])
    op.create_table(
        "rate_limit_state",
        sa.Column(
            "scope",
            sa.Enum(
                "member",
                "server",
                name="limit_scope",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("guild_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("tokens_at", sa.Float(), nullable=False),
        sa.Column("daily_period", _utc(), nullable=False),
        sa.Column("daily_used", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("scope", "guild_id", "user_id", name=op.f("pk_rate_limit_state")),
    )
    op.create_table(
        "moderation_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("actor_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("image_id", sa.Integer(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_moderation_events_image_id_images"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_moderation_events_job_id_jobs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_moderation_events")),
    )
    op.create_index(
        "ix_moderation_events_subject", "moderation_events", ["guild_id", "user_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_moderation_events_subject", table_name="moderation_events")
    op.drop_table("moderation_events")
    op.drop_table("rate_limit_state")
    op.drop_index(op.f("ix_images_job_id"), table_name="images")
    op.drop_index(op.f("ix_images_content_hash"), table_name="images")
    op.drop_table("images")
    op.drop_index("ix_jobs_guild_status", table_name="jobs")
    op.drop_index("ix_jobs_member_status", table_name="jobs")
    op.drop_index("ix_jobs_status_position", table_name="jobs")
    op.drop_table("jobs")
    op.drop_table("members")
    op.drop_table("guild_settings")
