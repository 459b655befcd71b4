"""What the adapters hear about jobs: the events, and the images a finished job hands over.

The Discord layer (:mod:`bot.discord_app.delivery`), the CLI and tests implement
:class:`JobEvents`; the worker calls them. Nothing here knows how a job runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.engine import Progress
from bot.images import Infotext
from bot.moderation import RatingScores, Verdict
from bot.storage.jobs import JobRecord


@dataclass(frozen=True, slots=True)
class Attempt:
    """What the adapter says of one delivery attempt."""

    delivered: bool
    posted: int = 0  # the result's posts that are out, in total (a retry skips them)
    retry_after: float | None = None  # what Discord asked to wait, if it said
    error: str = ""
    final: bool = False  # refused for good (nowhere to post): no retry

    @classmethod
    def done(cls, posted: int = 0) -> Attempt:
        return cls(True, posted)

    @classmethod
    def later(cls, error: str, *, posted: int = 0, retry_after: float | None = None) -> Attempt:
        return cls(False, posted, retry_after, error)

    @classmethod
    def refused(cls, error: str, *, posted: int = 0) -> Attempt:
        return cls(False, posted, None, error, final=True)


@dataclass(frozen=True)
class OutputImage:
    """One finished image, encoded, with what the reply shows about it.

    ``verdict`` says whether the channel may see it: an adapter never uploads an image whose
    verdict is ``withhold`` to the member's channel. A quarantined image (a hard block, or
    a sexual image nobody could check for minors) goes nowhere at all: its ``png`` is
    empty, the bytes never leave the worker.
    """

    index: int
    seed: int
    width: int
    height: int
    png: bytes
    infotext: Infotext
    content_hash: str
    verdict: Verdict
    scores: RatingScores | None = None
    image_id: int | None = None

    @property
    def withheld(self) -> bool:
        return not self.verdict.posted


class JobEvents(Protocol):
    """What an adapter (the Discord layer, a test) hears about jobs. Never blocks long."""

    async def on_started(self, job: JobRecord) -> None: ...

    async def on_progress(self, job: JobRecord, progress: Progress) -> None: ...

    async def on_finished(self, job: JobRecord, images: list[OutputImage]) -> Attempt | None:
        """Deliver the result (called again by the outbox after a failed attempt, with the
        same images: ``job.delivery_posted`` posts are already out). ``None`` means
        delivered."""

    async def on_undelivered(self, job: JobRecord, reason: str) -> None:
        """The result could not be delivered for ``delivery.retry_hours`` (or anywhere):
        tell the member once, wherever possible."""

    async def on_failed(self, job: JobRecord, reason: str) -> None: ...

    async def on_cancelled(self, job: JobRecord) -> None: ...
