"""Declarative models of everything the bot keeps.

The SQL stays portable (SQLite by default, PostgreSQL for larger deployments): Discord ids
are ``BIGINT``, times are stored in UTC (:class:`UTCDateTime`), JSON columns use the generic
:class:`~sqlalchemy.JSON` type, and enums are ``VARCHAR`` with a ``CHECK`` constraint.
Schema changes go through Alembic revisions in ``migrations/``; a test checks that the
revisions and these models never drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from bot.storage.clock import as_utc, utc_now

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime. SQLite has no time zones, so the value is stored as naive UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JobStatus(StrEnum):
    """Where a job is in its life. ``queued`` and ``running`` are active; the rest are final."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_STATUSES


ACTIVE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})


class LimitScope(StrEnum):
    """Whose allowance a rate-limit row holds."""

    MEMBER = "member"
    SERVER = "server"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012 (SQLAlchemy reads it)


def _created() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=utc_now, nullable=False)


class GuildSettings(Base):
    """Per-server settings, including the server's overrides of the configured limits."""

    __tablename__ = "guild_settings"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Name of a configured tier that ordinary members of this server get (None: config's).
    default_tier: Mapped[str | None] = mapped_column(String(64))
    # [{"role_id": 123, "tier": "supporter"}, ...], added to the configured role tiers.
    role_tiers: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    exempt_role_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    # {"default": {"daily_quota": 50}, ...}: per-tier field overrides for this server.
    tier_overrides: Mapped[dict[str, dict[str, Any]]] = mapped_column(JSON, default=dict)
    # {"burst": 20, ...}: overrides of the configured whole-server limits.
    server_limits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # {"quality": "Light v3.1", "steps": 24, "max_steps": 30, ...}: /imagine defaults here.
    generation_defaults: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Validated by bot.moderation.guild_policy.validate_overrides: blocked tags, thresholds, ...
    moderation: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class Member(Base):
    """A member as the bot knows them in one server: ban state, tier, notes."""

    __tablename__ = "members"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    tier: Mapped[str | None] = mapped_column(String(64))
    banned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    ban_reason: Mapped[str | None] = mapped_column(Text)
    banned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # None while banned means the ban never expires.
    banned_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    banned_by: Mapped[int | None] = mapped_column(BigInteger)
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()

    def ban_active(self, now: datetime) -> bool:
        return self.banned and (self.banned_until is None or self.banned_until > now)


class Job(Base):
    """One accepted request, from queueing to its end."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_position", "status", "position"),
        Index("ix_jobs_member_status", "guild_id", "user_id", "status"),
        Index("ix_jobs_guild_status", "guild_id", "status"),
        Index("ix_jobs_delivery_next", "delivery", "delivery_next_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[JobStatus] = mapped_column(
        Enum(
            JobStatus,
            name="job_status",
            native_enum=False,
            create_constraint=True,
            length=16,
            values_callable=lambda e: [m.value for m in e],
            validate_strings=True,
        ),
        default=JobStatus.QUEUED,
    )
    # The validated request as the member gave it, and the channel's flags
    # (:meth:`bot.jobspec.JobSpec.request_row`).
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The render planned when the job was accepted (:class:`bot.jobspec.StoredPlan`); None
    # for a job queued before plans were stored (planned on first use).
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    # Discord interaction tokens live 15 minutes; the token is cleared when the job ends.
    interaction_token: Mapped[str | None] = mapped_column(Text)
    interaction_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Queue order: smaller runs first.
    position: Mapped[int] = mapped_column(BigInteger)
    # Images charged to the member and the server (0 when exempt or limits are off).
    cost: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # Start of the daily quota period the cost was counted in.
    charge_period: Mapped[datetime | None] = mapped_column(UTCDateTime())
    refunded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failure_reason: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[datetime] = _created()
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The outbox (bot.outbox): "pending" until the member has the result, then "delivered";
    # "expired" when Discord refused it for delivery.retry_hours. None: nothing to deliver.
    delivery: Mapped[str | None] = mapped_column(String(16))
    delivery_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # How many of the result's posts went out already (a retry never posts one twice).
    delivery_posted: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    delivery_next_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivery_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivery_error: Mapped[str | None] = mapped_column(Text)
    # When its posted images were deleted with the Delete button (``/history`` hides it).
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    images: Mapped[list[Image]] = relationship(
        back_populates="job", order_by="Image.index", passive_deletes=True
    )


class Image(Base):
    """One generated image of a job."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("job_id", "index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    # Hex SHA-256 of the encoded file as sent.
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    # Scores of the image classifier(s), e.g. {"nsfw": 0.02}; None when not checked.
    moderation_scores: Mapped[dict[str, float] | None] = mapped_column(JSON)
    # The image check's verdict and the infotext, to deliver again what was decided.
    verdict: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    infotext: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Bytes of the PNG kept in delivery.images_dir (0: none kept, or removed by retention).
    stored_bytes: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = _created()

    job: Mapped[Job] = relationship(back_populates="images")


class RateLimitState(Base):
    """A token bucket and a daily counter, for one member or one whole server.

    ``tokens`` images were available at unix time ``tokens_at``; the bucket refills at the
    tier's rate up to its burst. ``daily_used`` counts images in the period that began at
    ``daily_period``. Server rows use ``user_id = 0``; direct messages use ``guild_id = 0``.
    """

    __tablename__ = "rate_limit_state"

    scope: Mapped[LimitScope] = mapped_column(
        Enum(
            LimitScope,
            name="limit_scope",
            native_enum=False,
            create_constraint=True,
            length=16,
            values_callable=lambda e: [m.value for m in e],
            validate_strings=True,
        ),
        primary_key=True,
    )
    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    tokens: Mapped[float] = mapped_column(Float)
    tokens_at: Mapped[float] = mapped_column(Float)
    daily_period: Mapped[datetime] = mapped_column(UTCDateTime())
    daily_used: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


class ModerationEvent(Base):
    """Something a moderator or the moderation pipeline did or saw."""

    __tablename__ = "moderation_events"
    __table_args__ = (Index("ix_moderation_events_subject", "guild_id", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = _created()
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    # The member the event is about, and who did it (None: the bot itself).
    user_id: Mapped[int | None] = mapped_column(BigInteger)
    actor_id: Mapped[int | None] = mapped_column(BigInteger)
    # "ban", "unban", "prompt_blocked", "image_flagged", "image_deleted", ...
    kind: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
