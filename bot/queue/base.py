"""The queue interface between accepting a job and running it.

The durable record of every job is its database row; a queue backend only orders the jobs
that wait. The embedded backend (:class:`bot.queue.fair.FairQueue`) keeps that order in
memory and is rebuilt from the database at start; a Redis-backed backend can implement the
same interface for workers on other machines without touching the Discord layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.errors import ReadableError


class QueueFull(ReadableError):
    """The queue holds as many jobs as it may."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            "the queue is full ({limit} jobs waiting); try again in a few minutes", limit=limit
        )
        self.limit = limit


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One waiting job, as the queue needs to know it."""

    job_id: int
    owner: str  # fairness key: one member in one server (or in DMs)
    priority: int = 0  # higher is served first; equal priorities share round-robin
    units: float = 1.0  # estimated work, for ETAs


class JobQueue(Protocol):
    """Orders waiting jobs: fair across owners, priority classes first."""

    max_length: int

    def __len__(self) -> int: ...

    def put(self, entry: QueueEntry, *, force: bool = False) -> None:
        """Add a job behind the others; raises :class:`QueueFull` unless ``force``."""

    def put_front(self, entry: QueueEntry) -> None:
        """Add a job ahead of all others (an interrupted job resuming); never refused."""

    async def get(self) -> QueueEntry:
        """Wait for and take the next job to run."""

    def get_nowait(self) -> QueueEntry | None:
        """Take the next job, or ``None`` when none waits."""

    def remove(self, job_id: int) -> bool:
        """Take a waiting job out (cancelled); ``False`` when it was not waiting."""

    def order(self) -> list[QueueEntry]:
        """Every waiting job in the order they will run."""
