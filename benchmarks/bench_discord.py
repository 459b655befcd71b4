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

``--metrics on`` runs the bot as ``metrics.enabled`` does: job telemetry counted in a
Prometheus registry, every REST answer timed by an aiohttp trace, the operations server
(with its loop watch) on a loopback port, scraped (``/metrics`` and ``/readyz``) every
``--scrape-every`` seconds from the fake Discord's thread as Prometheus and a probe would.
``--metrics both`` runs each configuration ``--rounds`` times, alternating which goes first,
each round on a fresh database and bot over the same fake Discord and engine, and prints
both tables and one comparing them (the cost of metrics on the hot path).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
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

import aiohttp
import torch
from PIL import Image

from bot.config import Settings, load_settings
from bot.discord_app.client import AnimagineBot
from bot.discord_app.ops import BotProbes
from bot.engine import Engine
from bot.images import encode_png, read_infotext
from bot.observability.metrics import Metrics
from bot.observability.server import OpsServer
from bot.observability.telemetry import Telemetry
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
        seconds = await job_seconds(bot, job_id)
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


async def job_seconds(bot: AnimagineBot, job_id: int) -> dict[str, float]:
    """Where the job's time went; its delivery's share is recorded once the outbox has
    recorded the delivery, just after the member has the result."""
    async with asyncio.timeout(10):
        while "deliver" not in (seconds := bot.service.worker.last_job_seconds.get(job_id, {})):  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.002)
    return seconds


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


@dataclass
class Round:
    overhead: Overhead
    burst: Burst
    stalls: tuple[list[float], list[float]]  # one by one, long render + burst
    heartbeats: int
    scrapes: list[float] = field(default_factory=list)  # seconds per /metrics scrape

    @classmethod
    def merged(cls, rounds: list[Round]) -> Round:
        overhead = Overhead()
        for name in vars(overhead):
            for r in rounds:
                getattr(overhead, name).extend(getattr(r.overhead, name))
        return cls(
            overhead,
            Burst(
                [a for r in rounds for a in r.burst.acks],
                [a for r in rounds for a in r.burst.replies],
                sum(r.burst.refused for r in rounds),
            ),
            ([x for r in rounds for x in r.stalls[0]], [x for r in rounds for x in r.stalls[1]]),
            sum(r.heartbeats for r in rounds),
            [x for r in rounds for x in r.scrapes],
        )


async def scrape_loop(url: str, every: float, took: list[float]) -> None:
    """Prometheus and a readiness probe, from outside the bot's event loop."""
    async with aiohttp.ClientSession() as session:
        while True:
            started = time.perf_counter()
            async with session.get(f"{url}/metrics") as response:
                await response.read()
                assert response.status == 200
            took.append(time.perf_counter() - started)
            async with session.get(f"{url}/readyz") as response:
                await response.read()
            await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def scraped(
    remote: Remote, ops: OpsServer | None, every: float
) -> AsyncIterator[list[float]]:
    took: list[float] = []
    if ops is None:
        yield took
        return
    future = asyncio.run_coroutine_threadsafe(scrape_loop(ops.url, every, took), remote.loop)
    try:
        yield took
    finally:
        future.cancel()
        with contextlib.suppress(asyncio.CancelledError, concurrent.futures.CancelledError):
            await asyncio.wrap_future(future)


async def one_round(  # noqa: PLR0917 - one call site
    remote: Remote,
    fake: FakeDiscord,
    engine: Engine,
    settings: Settings,
    metrics_on: bool,
    burst: int,
    jobs: int,
    concurrency: int,
    scrape_every: float,
) -> Round:
    db = await asyncio.to_thread(prepare_database, settings)
    telemetry = Telemetry(Metrics()) if metrics_on else Telemetry()
    ops: OpsServer | None = None
    watch = LoopWatch()
    beats_before = len(fake.heartbeats)
    try:
        bot = AnimagineBot(
            settings,
            db,
            engine,
            guild_ready_timeout=0.05,
            stop_grace=1.0,
            submit_concurrency=concurrency,
            telemetry=telemetry,
        )
        if isinstance(telemetry.metrics, Metrics):
            probes = BotProbes(db, telemetry.metrics)
            probes.attach(bot)
            ops = OpsServer("127.0.0.1", 0, metrics=telemetry.metrics, checks=probes.checks)
            await ops.start()
        async with (
            running_client(bot, fake),
            watch.watching(),
            scraped(remote, ops, scrape_every) as scrapes,
        ):
            warm = await imagine(remote, fake, BOB_ID, "warm-up")  # first render is slow
            await remote(warm.original(is_done, timeout=60))
            started = time.monotonic()
            overhead = await overhead_phase(remote, fake, bot, jobs)
            middle = time.monotonic()
            loaded = await burst_phase(remote, fake, bot, burst)
            ended = time.monotonic()
        beats = [h for h in fake.heartbeats[beats_before:] if h.acked]
    finally:
        if ops is not None:
            await ops.stop()
        await asyncio.to_thread(db.close)
    stalls = (watch.between(started, middle), watch.between(middle, ended))
    return Round(overhead, loaded, stalls, len(beats), list(scrapes))


async def run(  # noqa: PLR0917 - one call site
    burst: int,
    jobs: int,
    threads: int,
    concurrency: int,
    mode: str = "off",
    rounds: int = 1,
    scrape_every: float = 1.0,
) -> None:
    torch.set_num_threads(threads)
    configs = {"off": [False], "on": [True], "both": [False, True]}[mode]
    results: dict[bool, list[Round]] = {on: [] for on in configs}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with quiet():
            model_dir = save_tiny_model(folder / "model")
        engine = await asyncio.to_thread(Engine.load, settings_for(model_dir, folder))
        remote = Remote()
        async with remote.fake(heartbeat_interval=1.0) as fake:
            for number in range(rounds):
                order = configs if number % 2 == 0 else configs[::-1]  # fair: alternate
                for on in order:
                    place = folder / f"round-{number}-{'on' if on else 'off'}"
                    place.mkdir()
                    results[on].append(
                        await one_round(
                            remote,
                            fake,
                            engine,
                            settings_for(model_dir, place),
                            on,
                            burst,
                            jobs,
                            concurrency,
                            scrape_every,
                        )
                    )
    collect = []
    for _ in range(5):
        before = time.perf_counter()
        gc.collect()
        collect.append(time.perf_counter() - before)
    merged = {on: Round.merged(rs) for on, rs in results.items()}
    for on, r in merged.items():
        if len(merged) > 1 or on:
            print(f"\n## metrics {'on' if on else 'off'} ({rounds} round(s))\n")
        report(r.overhead, r.burst, r.stalls, collect, r.heartbeats, burst, jobs, threads)
        if r.scrapes:
            print(
                f"Scrapes of /metrics (and /readyz) every {scrape_every:g} s: {len(r.scrapes)}, "
                f"{ms(statistics.median(r.scrapes))} ms median, {ms(max(r.scrapes))} ms max."
            )
    if len(merged) > 1:
        compare(merged[False], merged[True], burst, jobs, rounds)
        spread(results)


def spread(results: dict[bool, list[Round]]) -> None:
    """Each round's p99s, in the order they ran: how much rounds differ by themselves."""
    print("\nPer round, p99 ms (ack latency / queue reply / loop lateness in the burst):")
    for on, rounds in results.items():
        cells = [
            f"{ms(percentile(r.burst.acks, 99))} / {ms(percentile(r.burst.replies, 99))} / "
            f"{ms(percentile(r.stalls[1], 99))}"
            for r in rounds
        ]
        print(f"- metrics {'on' if on else 'off'}: " + "; ".join(cells))


def compare(off: Round, on: Round, size: int, jobs: int, rounds: int) -> None:
    """The cost of metrics on the hot path: the same measures, off and on, side by side."""
    print(f"\n## metrics off vs on, same run ({rounds} round(s) each, alternating)\n")
    print("| measure | off p50 ms | off p99 ms | off max ms | on p50 ms | on p99 ms | on max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")

    def cells(values: list[float]) -> str:
        return f"{ms(statistics.median(values))} | {ms(percentile(values, 99))} | {ms(max(values))}"

    rows = [
        (f"ack latency, burst of {size} /imagine while rendering", off.burst.acks, on.burst.acks),
        (f"queue reply, burst of {size}", off.burst.replies, on.burst.replies),
        (f"event-loop lateness, {jobs} renders one by one", off.stalls[0], on.stalls[0]),
        (f"event-loop lateness, long render + burst of {size}", off.stalls[1], on.stalls[1]),
        (f"per job ({jobs} on an idle bot), interaction -> result", off.overhead.total,
         on.overhead.total),
        ("  outside the pipeline", off.overhead.outside, on.overhead.outside),
    ]  # fmt: skip
    for name, a, b in rows:
        print(f"| {name} | {cells(a)} | {cells(b)} |")


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
    parser.add_argument(
        "--metrics",
        choices=("off", "on", "both"),
        default="off",
        help="run with metrics off, on, or both in the same run (alternating rounds)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds of each configuration")
    parser.add_argument(
        "--scrape-every", type=float, default=1.0, help="seconds between scrapes (metrics on)"
    )
    args = parser.parse_args()
    asyncio.run(
        run(
            args.burst,
            args.jobs,
            args.threads,
            args.submit_concurrency,
            args.metrics,
            args.rounds,
            args.scrape_every,
        )
    )


if __name__ == "__main__":
    main()
