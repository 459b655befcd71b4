"""The output step: what happens to a finished job's pixels before an adapter sees them.

Each image is rated by the image classifier (the WD14 tagger) and judged against the
channel's policy (:func:`bot.moderation.image_verdict`), encoded as a PNG with its infotext,
and recorded as an image row (with a moderation event when the verdict calls for one). A
quarantined image's bytes are dropped here and never leave the core.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Protocol

from PIL import Image

from bot.engine import RenderedImage
from bot.images import encode_png
from bot.moderation import RatingScores, image_verdict
from bot.planning import Plan
from bot.queue.events import OutputImage
from bot.storage.database import Database
from bot.storage.jobs import JobRecord, JobStore
from bot.storage.members import MemberStore

log = logging.getLogger(__name__)


class Classifier(Protocol):
    """Rates an image (the WD14 tagger in production); synchronous, run in a thread."""

    def rate(self, image: Image.Image) -> RatingScores: ...

    @property
    def problem(self) -> str | None:
        """Why the image-side hard block cannot work with this classifier, or None."""
        ...


class ImageOutput:
    """Rates, encodes and records the images of finished jobs."""

    def __init__(
        self,
        db: Database,
        jobs: JobStore,
        classifier: Classifier | None = None,
        classifier_error: str | None = None,
    ) -> None:
        self.db = db
        self.jobs = jobs
        self.members = MemberStore(db)
        self.classifier = classifier
        self.classifier_error = classifier_error or (
            None if classifier is not None else "no image classifier is configured"
        )

    async def rate(self, image: Image.Image) -> tuple[RatingScores | None, str | None]:
        """The classifier's scores, off the event loop and off the engine's thread."""
        if self.classifier is None:
            return None, self.classifier_error
        try:
            return await asyncio.to_thread(self.classifier.rate, image), None
        except Exception as exc:
            log.warning("image classifier failed: %s", exc)
            return None, str(exc)

    async def images(
        self, job: JobRecord, plan: Plan, rendered: list[RenderedImage]
    ) -> list[OutputImage]:
        """Rate, encode and record each image of a finished ``job``, in order."""
        outputs: list[OutputImage] = []
        for index, item in enumerate(rendered):
            scores, error = await self.rate(item.image)
            verdict = image_verdict(
                scores, plan.channel, plan.policy, error=error, minors=plan.decision.minors
            )
            png = await asyncio.to_thread(encode_png, item.image, item.infotext)
            digest = hashlib.sha256(png).hexdigest()
            if verdict.quarantined:
                png = b""  # never uploaded, never forwarded: do not even keep the bytes
            if verdict.hard_block:
                log.warning(
                    "job %s, image %d: hard block from the image check (%s)",
                    job.id,
                    index + 1,
                    verdict.reason,
                )
            width, height = item.image.size
            row = await self.db.run(
                self.jobs.add_image,
                job.id,
                index=index,
                seed=item.seed,
                width=width,
                height=height,
                content_hash=digest,
                moderation_scores=None if scores is None else scores.as_dict(),
                verdict=verdict.as_row(),
                infotext={
                    "prompt": item.infotext.prompt,
                    "negative_prompt": item.infotext.negative_prompt,
                    "params": dict(item.infotext.params),
                },
            )
            if verdict.event_kind is not None:
                await self.db.run(
                    self.members.record_event,
                    verdict.event_kind,
                    guild_id=job.guild_id,
                    user_id=job.user_id,
                    reason=str(verdict.reason),
                    job_id=job.id,
                    image_id=row.id,
                    details={
                        "prompt": plan.job.prompt,
                        "seed": item.seed,
                        **({} if scores is None else {"scores": scores.as_dict()}),
                    },
                )
            outputs.append(
                OutputImage(
                    index,
                    item.seed,
                    width,
                    height,
                    png,
                    item.infotext,
                    digest,
                    verdict,
                    scores,
                    row.id,
                )
            )
        return outputs
