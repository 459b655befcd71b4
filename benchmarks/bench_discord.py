"""The Discord layer under load: acknowledgement latency, event-loop stalls, per-job overhead.

Run from the repository root: ``python benchmarks/bench_discord.py`` (``--burst N``,
``--jobs N``). Everything is real except Discord: the bot (discord.py over loopback) talks
to the local fake Discord of the end-to-end tests, renders with a tiny random SDXL model on
the CPU and keeps its state in a fresh SQLite file. Limits are switched off so every
request is queued. Three phases:

1. **overhead**: ``--jobs`` single /imagine (64x64, 2 steps), one at a time on an idle bot;
   each job's wall time from the interaction to its finished message, split into the
   pipeline (the engine's render) and everything outside it: acknowledgement and job row
   (until the queue reply), queue hop (row written -> render starts), PNG encoding, the
   database writes after the render, and the upload of the result;
2. **burst**: one long render occupies the worker, then ``--burst`` /imagine arrive at once;
   acknowledgement latency (interaction dispatched -> callback received by Discord) and
   the time until each job's queue reply;
3. **stalls**: a 5 ms ticker on the event loop records how late it wakes, during both
   phases (the renders run on the engine's thread; this is what the gateway heartbeat and
   new interactions feel).

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import io
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

if importlib.util.find_spec("bot") is None:  # not installed: run from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.e2e.fake_discord

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # discord.py imports audioop
    import discord  # noqa: F401

import torch
from PIL import Image

from bot.config import Settings, load_settings
from bot.discord_app.client import AnimagineBot
from bot.engine import Engine
from bot.images import encode_png, read_infotext
from bot.storage import JobStore, prepare_database
from tests.e2e.fake_discord import (
    ALICE_ID,
    BOB_ID,
    DEFAULT_GUILD_ID,
    GENERAL_CHANNEL_ID,
    FakeDiscord,
    FakeMessage,
    InteractionHandle,
    running_client,
)
from tests.support.tiny_sdxl import save_tiny_model

T = TypeVar("T")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


@dataclass
class LoopWatch:
    """How late a 5 ms ticker wakes up on the event loop."""

    tick: float = 0.005
    samples: list[tuple[float, float]] = field(default_factory=list)  # (when, how late)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.tick)
            now = time.monotonic()
            self.samples.append((now, now - before - self.tick))

    def between(self, start: float, end: float) -> list[float]:
        return [late for when, late in self.samples if start <= when <= end]

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        self._task = asyncio.create_task(self._run())
        try:
            yield
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Remote:
    """The fake Discord on its own thread and event loop, as Discord is somewhere else: the
    bot's loop does only the bot's work (they still share the GIL and the CPU)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-discord")

    async def __call__(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    @contextlib.asynccontextmanager
    async def fake(self, **options: Any) -> AsyncIterator[FakeDiscord]:
        async def start() -> FakeDiscord:
            server = FakeDiscord(**options)
            await server.start()
            return server

        self.thread.start()
        try:
            server = await self(start())
            try:
                yield server
            finally:
                await self(server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            await asyncio.to_thread(self.thread.join)
            self.loop.close()


def settings_for(model_dir: Path, folder: Path) -> Settings:
    return load_settings(
        environ={
            "ANIMAGINE_MODEL__SOURCE": str(model_dir),
            "ANIMAGINE_ENGINE__DEVICE": "cpu",
            "ANIMAGINE_ENGINE__MIN_SIDE": "64",
            "ANIMAGINE_ENGINE__DEFAULT_WIDTH": "64",
            "ANIMAGINE_ENGINE__DEFAULT_HEIGHT": "64",
            "ANIMAGINE_ENGINE__DEFAULT_STEPS": "2",
            "ANIMAGINE_ENGINE__MAX_STEPS": "150",
            "ANIMAGINE_LIMITS__ENABLED": "false",
            "ANIMAGINE_QUEUE__MAX_LENGTH": "10000",
            # No image classifier, and images post unchecked: the classifier is measured
            # by the moderation benchmarks; here every result is uploaded.
            "ANIMAGINE_MODERATION__CLASSIFIER__SOURCE": "",
            "ANIMAGINE_MODERATION__FAIL_CLOSED": "false",
            "ANIMAGINE_DATABASE__URL": f"sqlite:///{folder / 'bench.db'}",
        }
    )


def is_done(message: FakeMessage) -> bool:
    return message.content.startswith("**Done**")


def ack_seconds(handle: InteractionHandle) -> float:
    assert handle.callback is not None
    return handle.callback.request.received_at - handle.dispatched_at


def queue_reply_seconds(fake: FakeDiscord, handle: InteractionHandle) -> float:
    """Dispatch -> the reply that names the job (the first edit of the thinking message)."""
    edits = [
        r
        for r in fake.requests
        if r.method == "PATCH" and handle.token in r.route and r.route.endswith("@original")
    ]
    return edits[0].received_at - handle.dispatched_at


def encode_seconds(message: FakeMessage) -> float:
    """What encoding this job's PNG costs (the same pixels and infotext, encoded again)."""
    total = 0.0
    for attachment in message.attachments:
        infotext = read_infotext(attachment.data)
        assert infotext is not None
        with Image.open(io.BytesIO(attachment.data)) as image:
            image.load()
            started = time.perf_counter()
            encode_png(image, infotext)
            total += time.perf_counter() - started
    return total


async def imagine(
    remote: Remote, fake: FakeDiscord, user: int, prompt: str, **options: object
) -> InteractionHandle:
    return await remote(
        fake.slash_command(
            DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, user, "imagine", {"prompt": prompt, **options}
        )
    )


@dataclass
class Overhead:
    total: list[float] = field(default_factory=list)
    render: list[float] = field(default_factory=list)
    submit: list[float] = field(default_factory=list)
    queue: list[float] = field(default_factory=list)
    encode: list[float] = field(default_factory=list)
    database: list[float] = field(default_factory=list)
    upload: list[float] = field(default_factory=list)
    outside: list[float] = field(default_factory=list)
    rest: list[float] = field(default_factory=list)


async def overhead_phase(
    remote: Remote, fake: FakeDiscord, bot: AnimagineBot, jobs: int
) -> Overhead:
    store = JobStore(bot.db)
    out = Overhead()
    for number in range(jobs):
        handle = await imagine(remote, fake, ALICE_ID, f"1girl, solo, number {number}")
        message = await remote(handle.original(is_done, timeout=60))
        done_at = fake.requests[-1].received_at
        job_id = next(int(c.split(":")[2]) for c in message.custom_ids)
        job = await bot.db.run(store.get, job_id)
        seconds = bot.service.worker.last_job_seconds[job_id]
        upload = bot.delivery.upload_seconds[job_id]
        encode = encode_seconds(message)
        total = done_at - handle.dispatched_at
        assert job.started_at is not None
        out.total.append(total)
        out.render.append(seconds["render"])
        out.submit.append(queue_reply_seconds(fake, handle))
        out.queue.append((job.started_at - job.queued_at).total_seconds())
        out.encode.append(encode)
        out.database.append(max(0.0, seconds["deliver"] - upload - encode))
        out.upload.append(upload)
        out.outside.append(total - seconds["render"])
        parts = out.submit[-1] + out.queue[-1] + encode + out.database[-1] + upload
        out.rest.append(total - seconds["render"] - parts)
    return out


@dataclass
class Burst:
    acks: list[float]
    replies: list[float]
    refused: int


async def burst_phase(remote: Remote, fake: FakeDiscord, bot: AnimagineBot, size: int) -> Burst:
    busy = await imagine(remote, fake, BOB_ID, "1girl, the long one", steps=150)
    await remote(busy.original(lambda m: "job #" in m.content, timeout=30))
    while bot.service.worker.running_job_id is None:  # noqa: ASYNC110 - no event to wait on
        await asyncio.sleep(0.005)
    handles = [await imagine(remote, fake, ALICE_ID, f"1girl, burst {i}") for i in range(size)]
    await remote(
        fake.wait_for(
            lambda: all(h.callback is not None for h in handles), 120, "every acknowledgement"
        )
    )
    await remote(
        fake.wait_for(
            lambda: all(
                h.original_message is not None and not h.original_message.loading for h in handles
            ),
            120,
            "every queue reply",
        )
    )
    refused = sum(1 for h in handles if h.original_message is None or h.original_message.deleted)
    replies = [queue_reply_seconds(fake, h) for h in handles if h.original_message is not None]
    await remote(busy.original(is_done, timeout=60))  # rendering goes on during the burst
    return Burst([ack_seconds(h) for h in handles], replies, refused)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


async def run(burst: int, jobs: int, threads: int, concurrency: int) -> None:
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with quiet():
            model_dir = save_tiny_model(folder / "model")
        settings = settings_for(model_dir, folder)
        engine = await asyncio.to_thread(Engine.load, settings)
        db = await asyncio.to_thread(prepare_database, settings)
        watch = LoopWatch()
        remote = Remote()
        try:
            async with remote.fake(heartbeat_interval=1.0) as fake:
                bot = AnimagineBot(
                    settings,
                    db,
                    engine,
                    guild_ready_timeout=0.05,
                    stop_grace=1.0,
                    submit_concurrency=concurrency,
                )
                async with running_client(bot, fake), watch.watching():
                    warm = await imagine(remote, fake, BOB_ID, "warm-up")  # first render is slow
                    await remote(warm.original(is_done, timeout=60))
                    started = time.monotonic()
                    overhead = await overhead_phase(remote, fake, bot, jobs)
                    middle = time.monotonic()
                    loaded = await burst_phase(remote, fake, bot, burst)
                    ended = time.monotonic()
                    beats = [h for h in fake.heartbeats if h.acked]
        finally:
            await asyncio.to_thread(db.close)
    stalls = (watch.between(started, middle), watch.between(middle, ended))
    collect = []
    for _ in range(5):
        before = time.perf_counter()
        gc.collect()
        collect.append(time.perf_counter() - before)
    report(overhead, loaded, stalls, collect, len(beats), burst, jobs, threads)


def report(  # noqa: PLR0917 - one call site
    overhead: Overhead,
    burst: Burst,
    stalls: tuple[list[float], list[float]],
    collect: list[float],
    heartbeats: int,
    size: int,
    jobs: int,
    threads: int,
) -> None:
    print(
        f"Discord layer, tiny SDXL on CPU ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch threads {threads}), fake Discord over loopback "
        "on its own thread\n"
    )
    print("| measure | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|")

    def row(name: str, values: list[float]) -> None:
        print(
            f"| {name} | {ms(statistics.median(values))} | {ms(percentile(values, 99))} | "
            f"{ms(max(values))} |"
        )

    row(f"ack latency, burst of {size} /imagine while rendering", burst.acks)
    row(f"queue reply (job row written), burst of {size}", burst.replies)
    row(f"event-loop lateness (5 ms tick), {jobs} renders one by one", stalls[0])
    row(f"event-loop lateness (5 ms tick), long render + burst of {size}", stalls[1])
    row(f"per job ({jobs} on an idle bot): total, interaction -> result", overhead.total)
    row("  in the pipeline: engine render (64x64, 2 steps)", overhead.render)
    row("  outside the pipeline, all of it", overhead.outside)
    row("    ack + checks + job row + queue reply", overhead.submit)
    row("    queue hop: row written -> render starts", overhead.queue)
    row("    PNG encoding", overhead.encode)
    row("    database after the render (image row, finished)", overhead.database)
    row("    upload of the result (fit + webhook edit)", overhead.upload)
    row("    the rest: engine's gc.collect() after each render, thread hops", overhead.rest)
    row("gc.collect() alone in this process (holds the GIL)", collect)
    print(
        f"\nLongest event-loop stall while rendering one by one: {ms(max(stalls[0]))} ms; "
        f"during the burst: {ms(max(stalls[1]))} ms. "
        f"Heartbeats answered: {heartbeats}; burst requests refused: {burst.refused}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--burst", type=int, default=200, help="/imagine in the burst")
    parser.add_argument("--jobs", type=int, default=20, help="jobs timed one by one")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--submit-concurrency", type=int, default=4, help="AnimagineBot(submit_concurrency=)"
    )
    args = parser.parse_args()
    asyncio.run(run(args.burst, args.jobs, args.threads, args.submit_concurrency))


if __name__ == "__main__":
    main()
