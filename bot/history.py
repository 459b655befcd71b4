"""A member's own recent jobs, a page at a time (what ``/history`` shows).

Rules, decided here so that every adapter shows the same thing:

* **Only one's own jobs.** A page holds the jobs of one member (``user_id``), never anyone
  else's, whatever the scope.
* **Scope: where the member asks.** In a server, the jobs asked for in that server; in
  direct messages, the jobs asked for in direct messages. (``everywhere=True`` reads all of
  the member's jobs; the Discord adapter does not use it, because fetching images again and
  re-running go through the same "here" rules as ``/images`` and ``/imagine``.)
* **Newest first, keyset-paginated.** Jobs are ordered by id (the order they were accepted
  in); a page is read with ``before`` (older than that job) or ``after`` (newer than that
  job), never with an offset, so a job accepted while the member pages does not shift what
  they see. At most :data:`PAGE_SIZE_MAX` jobs a page.
* **Deleted jobs are gone.** A job whose images its requester or a moderator deleted (the
  Delete button: ``jobs.deleted_at``; a moderator's also an ``image_deleted`` event) or a
  moderator purged (``/mod purge``: the ``purge`` event's job ids) is not listed.
* **Age-restricted prompts stay where they belong.** A job asked for in an age-restricted
  channel, listed from a channel that is not age-restricted (a plain channel or a DM),
  shows no prompt and no negative prompt (:attr:`HistoryEntry.prompt_hidden`), as
  ``/images`` fetched there follows the plain-channel rules.

Torch-free and Discord-free; the query is synchronous (call :func:`history_page` from the
event loop: it runs on the database's threads).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from bot.request import GenerationRequest
from bot.storage import Database, JobRecord, JobStatus
from bot.storage.models import Image, Job, ModerationEvent

PAGE_SIZE_DEFAULT: Final = 5
"""Jobs a page shows by default (what fits one Discord embed with room to spare)."""
PAGE_SIZE_MAX: Final = 10
"""The most jobs one page may hold."""

DELETED_KINDS: Final = frozenset({"image_deleted", "purge"})
"""Moderation events that mean a job's posted images are gone."""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One job as its requester sees it in their history."""

    job_id: int
    status: JobStatus
    request: GenerationRequest
    seeds: tuple[int, ...]
    queued_at: datetime
    ended_at: datetime | None
    guild_id: int | None
    channel_id: int | None
    message_id: int | None
    failure_reason: str | None
    age_restricted: bool
    """Whether the job was asked for in an age-restricted channel."""
    prompt_hidden: bool
    """True when the job is age-restricted and the history is read outside such a channel:
    show neither prompt."""
    images_kept: bool
    """Whether any of its images is still kept on disk (``/images`` can send it again)."""

    @property
    def prompt(self) -> str | None:
        """The prompt as the member typed it (None: hidden here)."""
        return None if self.prompt_hidden else self.request.prompt

    @property
    def negative_prompt(self) -> str | None:
        """The member's own negative prompt (None: hidden here)."""
        return None if self.prompt_hidden else self.request.negative_prompt

    @property
    def size(self) -> str:
        """``WIDTHxHEIGHT`` as asked (before a hires pass)."""
        return f"{self.request.width}x{self.request.height}"

    @property
    def jump_url(self) -> str | None:
        """The link to the job's message (its result once finished), when it has one."""
        if self.message_id is None or self.channel_id is None:
            return None
        where = "@me" if self.guild_id is None else str(self.guild_id)
        return f"https://discord.com/channels/{where}/{self.channel_id}/{self.message_id}"

    @classmethod
    def of(cls, job: JobRecord, *, age_restricted_here: bool, images_kept: bool) -> HistoryEntry:
        request = job.request
        plan = job.plan
        seeds = tuple(plan.render.seeds) if plan is not None else _request_seeds(request)
        restricted = job.channel.age_restricted
        return cls(
            job_id=job.id,
            status=job.status,
            request=request,
            seeds=seeds,
            queued_at=job.queued_at,
            ended_at=job.finished_at or job.failed_at or job.cancelled_at,
            guild_id=job.guild_id,
            channel_id=job.channel_id,
            message_id=job.message_id,
            failure_reason=job.failure_reason,
            age_restricted=restricted,
            prompt_hidden=restricted and not age_restricted_here,
            images_kept=images_kept,
        )


def _request_seeds(request: GenerationRequest) -> tuple[int, ...]:
    return () if request.seed is None else tuple(request.seeds())


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Some of a member's jobs, newest first, and where the neighbouring pages start."""

    entries: tuple[HistoryEntry, ...]
    newer: int | None
    """Pass as ``after`` for the page of newer jobs (None: this is the newest page)."""
    older: int | None
    """Pass as ``before`` for the page of older jobs (None: nothing older)."""


def _deleted_job_ids(session: Session, user_id: int) -> set[int]:
    """The member's jobs whose posted images a moderator deleted or purged."""
    rows = session.execute(
        select(ModerationEvent.kind, ModerationEvent.job_id, ModerationEvent.details).where(
            ModerationEvent.user_id == user_id, ModerationEvent.kind.in_(sorted(DELETED_KINDS))
        )
    )
    deleted: set[int] = set()
    for kind, job_id, details in rows:
        if job_id is not None:
            deleted.add(int(job_id))
        if kind == "purge" and isinstance(details, dict):
            deleted.update(_ints(details.get("job_ids")))
    return deleted


def _ints(value: Any) -> Iterable[int]:
    if not isinstance(value, list):
        return ()
    return (v for v in value if isinstance(v, int) and not isinstance(v, bool))


def read_history(
    db: Database,
    user_id: int,
    *,
    guild_id: int | None,
    everywhere: bool = False,
    before: int | None = None,
    after: int | None = None,
    limit: int = PAGE_SIZE_DEFAULT,
    age_restricted_here: bool = False,
) -> HistoryPage:
    """A page of ``user_id``'s own jobs, newest first (see the module's rules).

    ``guild_id`` is the server asked from (None: direct messages); ``before`` gives the
    jobs older than that job id, ``after`` those newer (at most one of them); neither: the
    newest. Raises :class:`ValueError` for a page size outside 1..:data:`PAGE_SIZE_MAX` or
    both cursors.
    """
    if not 1 <= limit <= PAGE_SIZE_MAX:
        raise ValueError(f"a history page holds 1 to {PAGE_SIZE_MAX} jobs (asked for {limit})")
    if before is not None and after is not None:
        raise ValueError("give before or after, not both")
    with db.read() as session:
        base: Select[Job] = select(Job).where(Job.user_id == user_id, Job.deleted_at.is_(None))
        if not everywhere:
            base = base.where(
                Job.guild_id.is_(None) if guild_id is None else Job.guild_id == guild_id
            )
        deleted = _deleted_job_ids(session, user_id)
        if deleted:
            base = base.where(Job.id.not_in(sorted(deleted)))
        # With ``after``, the page just newer than it: the oldest ``limit`` of them, reversed.
        newer = after is not None
        query = _beyond(base, after if newer else before, newer=newer)
        rows = list(session.scalars(query.limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        if newer:
            rows.reverse()
        if not rows:
            return HistoryPage((), None, None)
        newest, oldest = rows[0].id, rows[-1].id
        if newer:
            more_newer, more_older = more, _exists(session, _beyond(base, oldest, newer=False))
        else:
            more_newer, more_older = _exists(session, _beyond(base, newest, newer=True)), more
        ids = [job.id for job in rows]
        kept = set(
            session.scalars(
                select(Image.job_id).where(Image.job_id.in_(ids), Image.stored_bytes > 0).distinct()
            )
        )
        entries = tuple(
            HistoryEntry.of(
                JobRecord.of(job),
                age_restricted_here=age_restricted_here,
                images_kept=job.status == JobStatus.FINISHED and job.id in kept,
            )
            for job in rows
        )
    return HistoryPage(entries, newest if more_newer else None, oldest if more_older else None)


def _beyond(base: Select[Job], cursor: int | None, *, newer: bool) -> Select[Job]:
    """The jobs of ``base`` newer (``newer``) or older than job ``cursor`` (None: all of
    them), nearest to the cursor first: the one keyset query behind every page and every
    "is there more" check."""
    if cursor is not None:
        base = base.where(Job.id > cursor if newer else Job.id < cursor)
    return base.order_by(Job.id.asc() if newer else Job.id.desc())


def _exists(session: Session, query: Select[Job]) -> bool:
    return session.scalar(query.with_only_columns(Job.id).limit(1)) is not None


async def history_page(
    db: Database,
    user_id: int,
    *,
    guild_id: int | None,
    everywhere: bool = False,
    before: int | None = None,
    after: int | None = None,
    limit: int = PAGE_SIZE_DEFAULT,
    age_restricted_here: bool = False,
) -> HistoryPage:
    """:func:`read_history` on the database's threads (never blocks the event loop)."""
    return await db.run(
        read_history,
        db,
        user_id,
        guild_id=guild_id,
        everywhere=everywhere,
        before=before,
        after=after,
        limit=limit,
        age_restricted_here=age_restricted_here,
    )
