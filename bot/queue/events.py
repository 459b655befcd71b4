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

    async def on_finished(self, job: JobRecord, images: list[OutputImage]) -> None: ...

    async def on_failed(self, job: JobRecord, reason: str) -> None: ...

    async def on_cancelled(self, job: JobRecord) -> None: ...
