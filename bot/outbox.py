"""The outbox: a finished image is never lost on its way to the member.

When a job finishes, its PNGs (with their infotext and the image check's verdicts) are
written to ``delivery.images_dir`` (``<job id>/<index>.png``, atomically) and the job is
marked finished with its delivery *pending*, in one transaction: delivery is a state of the
job, in the database, and survives restarts. Then the adapter (:class:`~bot.queue.events.
JobEvents`, the Discord layer) tries to deliver; it answers with an :class:`Attempt`.

* delivered: the job's delivery is *delivered*; withheld images' files are removed (the
  moderation log has had them).
* not now (Discord answered 5xx or 429, timed out, or could not be reached): the next
  attempt is due after ``retry_first_s`` doubling to ``retry_max_s`` with jitter (half to
  all of that, so retries of many jobs spread out), never sooner than Discord's
  ``retry-after``. ``posted`` says how many of the result's posts went out: a retry never
  posts one twice.
* after ``retry_hours`` (or refused for good: nowhere to post), the delivery *expires*: the
  member is told once (:meth:`~bot.queue.events.JobEvents.on_undelivered`), and the images
  stay fetchable (``/images``) until retention removes them.

Why files and not the database: PNGs are 1-2 MiB each; kept as files they do not bloat
SQLite (or PostgreSQL) and its backups, retention is a file removal, and the size cap is the
sum of ``images.stored_bytes``. The database remains the record of what is kept.

Retention runs every ``retention_interval_s``: kept images older than ``keep_days`` are
removed, then the oldest while all of them take more than ``keep_mib``; images of a
delivery still pending are never removed. Should the disk refuse a file (full, read-only),
the error is logged loudly and the job is delivered from memory (lost if the bot stops
before it is delivered): an accepted job is never dropped for it.

This module knows nothing of Discord.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bot.images import Infotext
from bot.logs import job_context
from bot.moderation.image_check import RatingScores, Verdict
from bot.observability.telemetry import Telemetry
from bot.queue.events import Attempt, OutputImage
from bot.storage import DatabaseError, JobNotFoundError, JobRecord, JobStore
from bot.storage.clock import utc_now as utcnow
from bot.waiting import wait_event

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.queue.events import JobEvents
    from bot.storage import Database

log = logging.getLogger(__name__)

MIB: Final = 1024 * 1024
_AT_ONCE: Final = 4  # retries delivered at once
_LONGEST_NAP_S: Final = 60.0  # the loop looks at the database at least this often


def images_folder(settings: Settings) -> Path:
    """``delivery.images_dir``, or by default an ``images`` folder beside the SQLite
    database (``data/images`` for an in-memory or a server database)."""
    if settings.delivery.images_dir:
        return Path(settings.delivery.images_dir).expanduser()
    from sqlalchemy.engine import make_url

    url = make_url(settings.database.url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).expanduser().parent / "images"
    return Path("data/images")


def _write_atomically(final: Path, data: bytes) -> None:
    """Write ``data`` to ``final`` through a partial file beside it: a crash leaves the old
    file or none, never half of one. Raises :class:`OSError` (disk full, read-only, ...)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f".{final.name}.{os.getpid()}.partial")
    try:
        with partial.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        partial.replace(final)
    except OSError:
        partial.unlink(missing_ok=True)
        raise


class ImageVault:
    """The kept PNGs: ``<folder>/<job id>/<index>.png``; and the input images of img2img
    jobs (an attachment, or the result a Vary starts from): ``<folder>/inputs/<sha256>.png``,
    named by their content (the same image stored twice is one file), referenced from the
    job's request (:class:`~bot.request.ImagePrompt`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def inputs(self) -> Path:
        return self.folder / "inputs"

    def input_path(self, name: str) -> Path:
        from bot.request import INPUT_NAME

        if not INPUT_NAME.fullmatch(name):  # a stored name, never a path
            raise ValueError(f"not an input image name: {name!r}")
        return self.inputs / name

    def keep_input(self, png: bytes) -> str:
        """Store an input image (PNG bytes) durably; returns its name. Raises
        :class:`OSError`."""
        import hashlib

        name = f"{hashlib.sha256(png).hexdigest()}.png"
        final = self.input_path(name)
        if final.exists():
            os.utime(final)  # fresh again: retention counts from its latest use
            return name
        _write_atomically(final, png)
        return name

    def read_input(self, name: str) -> bytes | None:
        try:
            return self.input_path(name).read_bytes()
        except (OSError, ValueError):
            return None

    def input_names(self) -> list[tuple[str, float]]:
        """Every stored input image: its name and when it was last stored (epoch s)."""
        from bot.request import INPUT_NAME

        found: list[tuple[str, float]] = []
        try:
            entries = list(os.scandir(self.inputs))
        except OSError:
            return found
        for entry in entries:
            if INPUT_NAME.fullmatch(entry.name):
                with contextlib.suppress(OSError):
                    found.append((entry.name, entry.stat().st_mtime))
        return found

    def remove_input(self, name: str) -> None:
        self.input_path(name).unlink(missing_ok=True)

    def path(self, job_id: int, index: int) -> Path:
        return self.folder / str(job_id) / f"{index}.png"

    def keep(self, job_id: int, index: int, png: bytes) -> int:
        """Write one PNG atomically (a crash leaves the old file or none, never half of
        one); returns its size. Raises :class:`OSError` (disk full, read-only, ...)."""
        _write_atomically(self.path(job_id, index), png)
        return len(png)

    def read(self, job_id: int, index: int) -> bytes | None:
        try:
            return self.path(job_id, index).read_bytes()
        except OSError:
            return None

    def remove(self, job_id: int, index: int) -> None:
        self.path(job_id, index).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.path(job_id, index).parent.rmdir()  # only when empty


class Outbox:
    """Keeps finished images, delivers them through ``events`` until the member has them."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        jobs: JobStore,
        events: JobEvents,
        *,
        rng: random.Random | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.settings = settings.delivery
        self.db = db
        self.jobs = jobs
        self.events = events
        self.telemetry = telemetry or Telemetry()
        self.vault = ImageVault(images_folder(settings))
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._memory: dict[int, list[OutputImage]] = {}  # jobs whose files the disk refused
        self._in_hand: set[int] = set()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(_AT_ONCE)
        self._tasks: list[asyncio.Task[None]] = []
        self._attempts: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------- keeping
    def deadline(self) -> datetime:
        """Until when a delivery starting now is tried."""
        return utcnow() + timedelta(hours=self.settings.retry_hours)

    async def keep(self, job: JobRecord, images: list[OutputImage]) -> None:
        """Write the images that may leave the bot (quarantined ones have no bytes)."""
        for image in images:
            if not image.png:
                continue
            try:
                size = await asyncio.to_thread(self.vault.keep, job.id, image.index, image.png)
            except OSError as exc:
                log.error(  # noqa: TRY400 - one loud line; the job goes on from memory
                    "job %s: cannot keep its images in %s (%s): delivering them from memory; "
                    "they are lost if the bot stops before they are delivered",
                    job.id,
                    self.vault.folder,
                    exc.strerror or exc,
                )
                self._memory[job.id] = images
                return
            if image.image_id is not None:
                await self.db.run(self.jobs.set_stored, image.image_id, size)

    async def load(self, job: JobRecord) -> list[OutputImage] | None:
        """The job's images as delivered the first time, read back from the disk; None
        when an image that should have been kept is gone."""
        remembered = self._memory.get(job.id)
        if remembered is not None:
            return remembered
        rows = await self.db.run(self.jobs.images, job.id)
        images: list[OutputImage] = []
        for row in rows:
            if row.verdict is None or row.infotext is None:
                return None  # finished before the outbox: never kept
            verdict = Verdict.from_row(row.verdict)
            png = b""
            if row.stored_bytes:
                read = await asyncio.to_thread(self.vault.read, job.id, row.index)
                if read is None:
                    return None
                png = read
            elif verdict.posted:
                return None  # removed by retention, or never written (withheld ones are
                # not kept once their delivery is settled; quarantined ones never)
            info = row.infotext
            images.append(
                OutputImage(
                    row.index,
                    row.seed,
                    row.width,
                    row.height,
                    png,
                    Infotext(
                        str(info.get("prompt", "")),
                        str(info.get("negative_prompt", "")),
                        {str(k): str(v) for k, v in dict(info.get("params") or {}).items()},
                    ),
                    row.content_hash,
                    verdict,
                    None
                    if row.moderation_scores is None
                    else RatingScores.from_dict(row.moderation_scores),
                    row.id,
                )
            )
        return images

    # ----------------------------------------------------------------- delivering
    async def deliver(self, job: JobRecord, images: list[OutputImage]) -> None:
        """One attempt now; its outcome decides what comes next (see the module)."""
        if job.id in self._in_hand:
            return
        self._in_hand.add(job.id)
        with job_context(job_id=job.id, guild_id=job.guild_id, channel_id=job.channel_id):
            await self._attempt(job, images)

    async def _attempt(self, job: JobRecord, images: list[OutputImage]) -> None:
        try:
            try:
                outcome = await self.events.on_finished(job, images)
            except Exception as exc:
                log.exception("job %s: its delivery failed", job.id)
                outcome = Attempt.later(f"{type(exc).__name__}: {exc}", posted=job.delivery_posted)
            await self._record(job, images, Attempt.done() if outcome is None else outcome)
        except DatabaseError:
            # The outcome is not recorded: the job stays pending and is tried again (an
            # attempt that went out is then skipped by its recorded posts where it can be).
            log.exception("job %s: could not record its delivery", job.id)
        finally:
            self._in_hand.discard(job.id)

    async def _record(self, job: JobRecord, images: list[OutputImage], outcome: Attempt) -> None:
        if outcome.delivered:
            await self.db.run(self.jobs.settle_delivery, job.id, "delivered")
            self.telemetry.delivered(job)
            await self._settled(job, images)
            return
        now = utcnow()
        until = job.delivery_until or now
        if outcome.final or now >= until:
            why = outcome.error or "Discord did not take it"
            log.warning("job %s: delivery given up after %d attempt(s): %s",
                        job.id, job.delivery_attempts + 1, why)  # fmt: skip
            await self._give_up(job, images, why)
            return
        delay = self.backoff(job.delivery_attempts + 1, outcome.retry_after)
        next_at = min(now + timedelta(seconds=delay), until)
        log.info("job %s: delivery attempt %d did not go through (%s); next in %.0f s",
                 job.id, job.delivery_attempts + 1, outcome.error, delay)  # fmt: skip
        await self.db.run(
            self.jobs.delivery_attempted,
            job.id,
            posted=outcome.posted,
            next_at=next_at,
            error=outcome.error or "not delivered",
        )
        self._wake.set()

    async def _give_up(self, job: JobRecord, images: list[OutputImage], why: str) -> None:
        """The delivery expires: what it kept is settled, and the member is told once."""
        record = await self.db.run(self.jobs.settle_delivery, job.id, "expired", error=why)
        self.telemetry.undelivered(record, why)
        await self._settled(record, images)
        try:
            await self.events.on_undelivered(record, why)
        except Exception:
            log.exception("job %s: could not tell the member", job.id)

    async def _settled(self, job: JobRecord, images: list[OutputImage]) -> None:
        """A settled delivery keeps only what the member may fetch again."""
        self._memory.pop(job.id, None)
        for image in images:
            if image.png and not image.verdict.posted:
                await asyncio.to_thread(self.vault.remove, job.id, image.index)
                if image.image_id is not None:
                    await self.db.run(self.jobs.set_stored, image.image_id, 0)

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before attempt ``attempt + 1``: exponential, capped, with jitter, and
        never sooner than ``retry_after``."""
        ceiling = self.ceiling(attempt)
        delay: float = ceiling * self.rng.uniform(0.5, 1.0)
        return max(delay, retry_after or 0.0)

    def ceiling(self, attempt: int) -> float:
        """The backoff's ceiling after attempt ``attempt``."""
        grown = self.settings.retry_first_s * 2.0 ** min(attempt - 1, 40)
        return float(min(self.settings.retry_max_s, grown))

    def schedule(self) -> list[float]:
        """Seconds after the first failure at which each retry is due, at most (no jitter):
        what ``retry_hours`` means in attempts (for BENCHMARKS.md and ``doctor``)."""
        total, at, attempt = self.settings.retry_hours * 3600, 0.0, 1
        times: list[float] = []
        while True:
            at += self.ceiling(attempt)
            if at >= total:
                times.append(total)
                return times
            times.append(at)
            attempt += 1

    # ----------------------------------------------------------------- the loops
    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._retry_loop(), name="outbox-retries"),
            asyncio.create_task(self._retention_loop(), name="outbox-retention"),
        ]

    async def stop(self, grace: float = 10.0) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._attempts:
            await asyncio.wait(list(self._attempts), timeout=grace)

    async def _retry_loop(self) -> None:
        """Pending deliveries whose time has come are tried again (after a restart too)."""
        while True:
            try:
                nap = await self.retry_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the outbox could not look for due deliveries")
                nap = 5.0
            self._wake.clear()
            await wait_event(self._wake, nap)

    async def retry_due(self) -> float:
        """Start every due delivery; returns the seconds until the next one is due."""
        pending = await self.db.run(self.jobs.pending_deliveries)
        now = utcnow()
        nap = _LONGEST_NAP_S
        for job in pending:
            if job.id in self._in_hand:
                continue
            due = job.delivery_next_at or now
            if due > now:
                nap = min(nap, (due - now).total_seconds())
                continue
            self._in_hand.add(job.id)  # claimed now: the next look does not start it again
            task = asyncio.create_task(self._retry(job), name=f"outbox-{job.id}")
            self._attempts.add(task)
            task.add_done_callback(self._attempts.discard)
        return max(0.05, nap)

    async def _retry(self, job: JobRecord) -> None:
        async with self._slots:
            self._in_hand.discard(job.id)
            try:
                job = await self.db.run(self.jobs.get, job.id)
            except JobNotFoundError:
                return
            if job.delivery != "pending":
                return
            with job_context(job_id=job.id, guild_id=job.guild_id, channel_id=job.channel_id):
                images = await self.load(job)
                if images is None:
                    why = "its images were lost before they could be delivered"
                    log.error("job %s: %s", job.id, why)
                    await self._give_up(job, [], why)
                    return
                if job.delivery_attempts:
                    self.telemetry.delivery_retried(job)
                await self.deliver(job, images)

    async def _retention_loop(self) -> None:
        while True:
            try:
                removed = await self.retention_once()
                if removed:
                    log.info("retention removed %d kept image(s)", removed)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention failed; trying again later")
            await asyncio.sleep(self.settings.retention_interval_s)

    async def inputs_retention_once(self, now: datetime | None = None) -> int:
        """Remove stored input images older than ``keep_days`` that no job still needs (one
        queued, running, or whose delivery is pending). Returns how many were removed."""
        now = now or utcnow()
        stored = await asyncio.to_thread(self.vault.input_names)
        if not stored:
            return 0
        needed = await self.db.run(self.jobs.input_images_in_use)
        cutoff = (now - timedelta(days=self.settings.keep_days)).timestamp()
        removed = 0
        for name, stored_at in stored:
            if name in needed or stored_at >= cutoff:
                continue
            await asyncio.to_thread(self.vault.remove_input, name)
            removed += 1
        return removed

    async def retention_once(self, now: datetime | None = None) -> int:
        """Remove kept images past ``keep_days``, then the oldest while over ``keep_mib``;
        never those of a pending delivery; then old input images no job needs
        (:meth:`inputs_retention_once`). Returns how many kept images were removed."""
        now = now or utcnow()
        inputs = await self.inputs_retention_once(now)
        if inputs:
            log.info("retention removed %d input image(s)", inputs)
        rows = await self.db.run(self.jobs.stored_images)
        cutoff = now - timedelta(days=self.settings.keep_days)
        total = sum(image.stored_bytes for image, _ in rows)
        cap = self.settings.keep_mib * MIB
        removed = 0
        for image, delivery in rows:  # oldest first
            if delivery == "pending":
                continue
            if image.created_at >= cutoff and total <= cap:
                continue
            await asyncio.to_thread(self.vault.remove, image.job_id, image.index)
            await self.db.run(self.jobs.set_stored, image.id, 0)
            total -= image.stored_bytes
            removed += 1
        return removed
