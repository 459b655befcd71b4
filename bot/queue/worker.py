"""The scheduling loop: the one consumer that takes jobs from the queue.

The worker waits until the engine is warmed up, takes the next job from the queue (with
the compatible jobs the renderer picks for its micro-batch, see
:meth:`bot.queue.render.Renderer.take_compatible`), marks them running in the database and
hands them to the renderer (:mod:`bot.queue.render`: engine calls, then the output step and
the adapter's events). It answers what is running and for how long, cancels running jobs,
and stops gracefully: a job still running when the grace period ends goes back to the
queue and resumes at the next start.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bot.queue.base import QueueEntry
from bot.queue.render import Renderer
from bot.queue.state import RendererState
from bot.storage.jobs import JobRecord, JobStateError

log = logging.getLogger(__name__)


class Worker(RendererState):
    """Runs queued jobs one at a time (or one micro-batch at a time) on the renderer."""

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer
        self.db = renderer.db
        self.jobs = renderer.jobs
        self.queue = renderer.queue
        self.engine = renderer.local_engine
        self.events = renderer.events
        self.output = renderer.output
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        # Set once the engine is warmed up (compiled for the configured sizes); jobs wait.
        self.ready = asyncio.Event()
        if not self.engine.optimizations.compiled:
            self.ready.set()

    # ----------------------------------------------------------------- state

    @property
    def running_job_ids(self) -> tuple[int, ...]:
        """Every job on the engine now: one, or a micro-batch in fair order."""
        current = self.renderer.current
        return () if current is None else tuple(current.tokens)

    def remaining_seconds(self) -> float:
        """Estimated seconds until the running job (or batch) is done (0 when idle)."""
        current = self.renderer.current
        if current is None:
            return 0.0
        return max(0.0, current.estimate - (time.monotonic() - current.started))

    # ----------------------------------------------------------------- control
    def cancel(self, job_id: int) -> bool:
        """Ask a running job to stop; ``False`` if it is not running.

        Alone it stops at its next step; in a micro-batch it ends as cancelled when the
        call ends (see :meth:`bot.engine.Engine.render_batch`).
        """
        current = self.renderer.current
        if current is None or job_id not in current.tokens:
            return False
        current.cancelled.add(job_id)
        current.tokens[job_id].cancel()
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="worker")

    async def warm_up(self) -> None:
        """Compile the engine for the configured sizes on its own thread; jobs wait until
        it is done (the bot keeps answering commands meanwhile)."""
        if self.ready.is_set():
            return
        from bot.engine.optimize import warm_up

        try:
            await self.renderer.on_thread(lambda: warm_up(self.engine, self.engine.optimizations))
        finally:
            self.ready.set()

    async def _run_forever(self) -> None:
        await self.ready.wait()
        while not self._stopping:
            entry = await self.queue.get()
            if self._stopping:
                self.queue.put_front(entry)
                break
            await self.run_next(entry)

    async def run_burst(self) -> int:
        """Run every waiting job, then wait for their deliveries; returns how many ran.

        Deterministic: tests drain the queue with this instead of a background task.
        """
        await self.warm_up()
        ran = 0
        while (entry := self.queue.get_nowait()) is not None:
            ran += await self.run_next(entry)
        await self.drain()
        return ran

    async def drain(self) -> None:
        """Wait until every started delivery is done."""
        await self.renderer.drain()

    async def stop(self, grace: float = 30.0) -> None:
        """No new jobs; let the running one finish for ``grace`` seconds, else persist it
        as queued so it resumes at the next start. Deliveries in flight complete."""
        self._stopping = True
        self.renderer.stopping = True
        if self._task is not None and self.renderer.current is None:
            self._task.cancel()
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            current = self.renderer.current
            if current is not None:
                log.warning(
                    "job(s) %s did not finish in %.0f s; they resume at next start",
                    ", ".join(map(str, current.tokens)),
                    grace,
                )
                for token in current.tokens.values():
                    token.cancel()
                await self._idle.wait()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.drain()
        self.renderer.shutdown()

    # ----------------------------------------------------------------- jobs
    async def run_next(self, entry: QueueEntry) -> int:
        """Run ``entry``, with compatible jobs from the window when micro-batching is on;
        returns how many queue entries were taken (``entry`` included)."""
        companions = await self.renderer.take_compatible(entry)
        await self.run_batch([entry, *companions])
        return 1 + len(companions)

    async def run_batch(self, entries: list[QueueEntry]) -> None:
        """Run entries already taken from the queue as one engine call, in this order.

        Each must be compatible (see :meth:`Renderer.take_compatible`); one that was
        cancelled (or handled) while it waited is skipped.
        """
        jobs: list[JobRecord] = []
        for entry in entries:
            try:
                jobs.append(await self.db.run(self.jobs.mark_started, entry.job_id))
            except JobStateError:
                continue  # cancelled (or handled) while it waited
        if not jobs:
            return
        self._idle.clear()
        try:
            await self.renderer.render(jobs)
        finally:
            self.renderer.current = None
            self._idle.set()
