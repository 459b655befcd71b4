"""The bot's durable state: SQLAlchemy models, database access, migrations, repositories.

Nothing here knows Discord. Start-up calls :func:`prepare_database`; the event loop reaches
the (synchronous) repositories through :meth:`Database.run`.
"""

from bot.storage.clock import Clock, utc_now
from bot.storage.database import Database, DatabaseError, create_engine
from bot.storage.jobs import (
    ImageRecord,
    JobNotFoundError,
    JobRecord,
    JobStateError,
    JobStore,
    NewJob,
)
from bot.storage.members import GuildRecord, GuildStore, MemberRecord, MemberStore
from bot.storage.migrate import (
    SchemaVersion,
    SchemaVersionError,
    check_schema_version,
    current,
    downgrade,
    head,
    prepare_database,
    upgrade,
)
from bot.storage.models import JobStatus

__all__ = [
    "Clock",
    "Database",
    "DatabaseError",
    "GuildRecord",
    "GuildStore",
    "ImageRecord",
    "JobNotFoundError",
    "JobRecord",
    "JobStateError",
    "JobStatus",
    "JobStore",
    "MemberRecord",
    "MemberStore",
    "NewJob",
    "SchemaVersion",
    "SchemaVersionError",
    "check_schema_version",
    "create_engine",
    "current",
    "downgrade",
    "head",
    "prepare_database",
    "upgrade",
    "utc_now",
]
