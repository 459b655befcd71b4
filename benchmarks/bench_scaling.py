"""Scaling out through Redis (issue 12): stand-in workers, the real protocol, the real bot.

Run from the repository root: ``python benchmarks/bench_scaling.py`` (``--workers 1 2 4 8
16``, ``--jobs-per-worker N``, ``--steps S``, ``--step-ms MS``, ``--load F``).

What is real: a ``redis-server`` started here on a free loopback port (no persistence,
stopped at the end); the bot side, :class:`~bot.service.ImagineService` with the
``redis`` backend (:class:`~bot.queue.redis_backend.RedisDispatcher`: fair queue, SQLite
rows in a temporary folder, capacity = live workers + ``queue.redis_prefetch``, results
read, PNGs checked and stored, events); the workers,
:class:`~bot.queue.remote_worker.RemoteWorker` (XAUTOCLAIM/XREADGROUP, claim renewal,
cancel flag read after every step, progress notes, result published then XACK, heartbeats)
in their own processes (forked from a server that imported the bot once). What stands in:
the engine, which sleeps ``--step-ms`` per step instead of rendering and returns a 64x64
image (encoded as PNG by the real worker code). Nothing renders; no GPU is needed.

Per worker count, two runs with a fresh key prefix and fresh workers:

* **throughput**: ``W x jobs-per-worker`` jobs submitted (from 32 members, through
  ``service.submit``) before the workers start, so the queue holds them all; then the
  workers come up and drain it: wall time from the first job a worker received to the last
  job delivered, against the ideal ``jobs x seconds-per-job / W``. (Accepting a job, the
  acknowledgement path, is measured by the burst benchmark; its CPU is shown here apart,
  *submit CPU ms/job*.) Overhead per job is ``(wall - ideal) / jobs per
  worker``: what each worker loses per job, dispatch, result handling and the per-step
  cancel checks included. The *gap* is measured by the workers: from a worker publishing a
  result to its next job reaching it (every job was already queued then).
* **latency**: jobs submitted one by one at ``--load`` (80 %) of the ideal rate, so a worker
  is normally free; the time from the job row's creation (just before ``submit``) to the
  worker receiving the job (taken when ``submit`` returns: row
  written, job queued), median and p99.

Prints a markdown table with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import json
import math
import multiprocessing
import os
import platform
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

if importlib.util.find_spec("bot") is None:  # not installed: run from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support.redis_server

from bot.config import Settings, load_settings
from bot.limits import Requester
from bot.queue import protocol
from bot.request import GenerationRequest
from bot.service import Destination, ImagineService
from bot.storage import JobRecord, prepare_database
from tests.support.redis_server import RedisServer, free_port

WORKER_COUNTS = (1, 2, 4, 8, 16)
MEMBERS = 32
SIDE = 64
HERE = Destination(channel_id=100)


# ----------------------------------------------------------------------- workers
PREFETCH: list[str] = []  # --prefetch, when given


def settings_for(url: str, prefix: str, tmp: Path) -> Settings:
    extra = {"ANIMAGINE_QUEUE__REDIS_PREFETCH": PREFETCH[0]} if PREFETCH else {}
    return load_settings(
        environ={
            **extra,
            "ANIMAGINE_ENGINE__DEVICE": "cpu",
            "ANIMAGINE_ENGINE__MIN_SIDE": str(SIDE),
            "ANIMAGINE_DATABASE__URL": f"sqlite:///{tmp / 'bot.db'}",
            "ANIMAGINE_LIMITS__ENABLED": "false",
            "ANIMAGINE_QUEUE__MAX_LENGTH": "100000",
            "ANIMAGINE_QUEUE__BACKEND": "redis",
            "ANIMAGINE_QUEUE__REDIS_URL": url,
            "ANIMAGINE_QUEUE__REDIS_PREFIX": prefix,
        }
    )


class SleepingEngine:
    """The engine's face as :class:`RemoteWorker` uses it: ``step_s`` of sleep per step,
    the progress callback (the worker's cancel check) after each, one small image a seed."""

    def __init__(self, step_s: float) -> None:
        from PIL import Image

        self.step_s = step_s
        self.placement = SimpleNamespace(device=SimpleNamespace(type="cpu"))
        self.image = Image.new("RGB", (SIDE, SIDE), (200, 120, 160))

    def gpu_memory_used(self) -> int | None:
        return None  # no GPU: the heartbeat says so, as a CPU engine's does

    def render_batch(
        self,
        renders: Any,
        *,
        on_progress: Any,
        cancels: Any,
        init_image: Any = None,
        preview_every: Any = None,
    ) -> Any:
        from bot.engine import JobCancelled, Progress, RenderedImage, RenderResult
        from bot.images import Infotext

        started = time.perf_counter()
        steps = renders[0].steps
        for step in range(1, steps + 1):
            time.sleep(self.step_s)
            for callback in on_progress:
                callback(Progress(step, steps, "base"))
            if all(token.cancelled for token in cancels):
                raise JobCancelled()
        seconds = (time.perf_counter() - started) / len(renders)
        return [
            RenderResult(
                [
                    RenderedImage(
                        self.image.resize(render.output_size)
                        if render.output_size != (SIDE, SIDE)
                        else self.image,
                        seed,
                        Infotext(render.prompt, render.negative_prompt, {"Seed": str(seed)}),
                    )
                    for seed in render.seeds
                ],
                seconds,
            )
            for render in renders
        ]


def worker_main(url: str, prefix: str, name: str, step_s: float, out: str) -> None:
    """One stand-in worker process: the real RemoteWorker loop, times written to ``out``."""
    from bot.queue.remote_worker import RemoteWorker

    class TimedWorker(RemoteWorker):
        records: list[dict[str, float]]

        async def _serve(self, entry_id: Any, raw: bytes | str) -> None:
            received = time.time()
            self._published = 0.0
            await super()._serve(entry_id, raw)
            for job_id, _render in protocol.read_jobs(raw):
                self.records.append({"job": job_id, "recv": received, "pub": self._published})

        async def _publish(self, results: list[protocol.Result], entry_id: Any) -> None:
            self._published = time.time()
            await super()._publish(results, entry_id)

    async def main() -> None:
        from bot.queue.redis_backend import connect

        settings = settings_for(url, prefix, Path(out).parent)
        redis = await connect(url)
        worker = TimedWorker(settings, SleepingEngine(step_s), redis, name=name)  # type: ignore[arg-type]
        worker.records = []
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stopping.set)
        try:
            await worker.run()
        finally:
            await redis.aclose()
            cpu = resource.getrusage(resource.RUSAGE_SELF)
            report = {"records": worker.records, "cpu": cpu.ru_utime + cpu.ru_stime}
            await asyncio.to_thread(Path(out).write_text, json.dumps(report), encoding="utf-8")

    asyncio.run(main())


# ----------------------------------------------------------------------- the bot
class Events:
    """JobEvents that note when each job was delivered."""

    def __init__(self) -> None:
        self.finished: dict[int, float] = {}
        self.failed: dict[int, str] = {}
        self.done = asyncio.Event()
        self.expected = 0

    def _check(self) -> None:
        if len(self.finished) + len(self.failed) >= self.expected:
            self.done.set()

    async def on_started(self, job: JobRecord) -> None:
        return None

    async def on_progress(self, job: JobRecord, progress: Any) -> None:
        return None

    async def on_finished(self, job: JobRecord, images: list[Any]) -> None:
        self.finished[job.id] = time.time()
        self._check()

    async def on_failed(self, job: JobRecord, reason: str) -> None:
        self.failed[job.id] = reason
        self._check()

    async def on_cancelled(self, job: JobRecord) -> None:
        self.failed[job.id] = "cancelled"
        self._check()

    async def on_undelivered(self, job: JobRecord, reason: str) -> None:
        return None


BOT_ENGINE = SimpleNamespace(
    # The bot never renders with the Redis backend: it checks prompt lengths (a no-op
    # here) and reads prompts with the CLIP tokenizer shipped with the policy.
    encoder=SimpleNamespace(check=lambda prompt, negative: None, tokenizers=None)
)


HAIR = ("long", "short", "blonde", "black", "silver", "pink", "twin tails", "ponytail")
EYES = ("blue", "red", "green", "purple", "yellow", "heterochromia")
SCENES = ("outdoors, cherry blossoms", "classroom", "night sky, stars", "beach, ocean",
          "city street, rain", "forest, sunlight", "library, books", "cafe, coffee")  # fmt: skip


def prompt_for(i: int) -> str:
    """A different prompt per job, as members write them (the policy's checks run on
    each, none is a repeat the bot has seen)."""
    return (
        f"{'1girl' if i % 3 else '1boy'}, solo, {HAIR[i % len(HAIR)]} hair, "
        f"{EYES[i // len(HAIR) % len(EYES)]} eyes, {SCENES[i // 7 % len(SCENES)]}, "
        f"looking at viewer, {'smile' if i % 5 else 'open mouth'}, upper body"
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0


@dataclass
class Run:
    workers: int
    jobs: int = 0
    seconds: float = 0.0
    ideal_s: float = 0.0
    gaps_ms: list[float] = field(default_factory=list)
    inside_ms: list[float] = field(default_factory=list)  # receive -> publish, per job
    waits_ms: list[float] = field(default_factory=list)  # latency run: row -> receive
    bot_cpu_ms: float = 0.0  # bot process CPU per job: dispatch and results (throughput run)
    submit_cpu_ms: float = 0.0  # bot process CPU per job to accept it (submit)
    worker_cpu_ms: float = 0.0  # worker processes' CPU per job (throughput run)
    failed: int = 0


async def one_run(  # noqa: PLR0917
    ctx: Any,
    server: RedisServer,
    tmp: Path,
    workers: int,
    jobs: int,
    args: Any,
    *,
    pace_s: float | None,
) -> tuple[float, dict[int, float], list[dict[str, float]], float, float, int, float]:
    """Start ``workers`` stand-ins and a bot on a fresh prefix, run ``jobs`` jobs; returns
    (wall seconds, job id -> row created, worker records, bot CPU s, worker CPU s, failed,
    submit CPU s)."""
    prefix = f"bench{free_port()}"
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=tmp))
    settings = settings_for(server.url, prefix, folder)
    db = prepare_database(settings)
    events = Events()
    service = ImagineService(settings, db, BOT_ENGINE, events)  # type: ignore[arg-type]
    procs = [
        ctx.Process(
            target=worker_main,
            args=(server.url, prefix, f"w{i}", args.step_ms / 1000, str(folder / f"w{i}.json")),
        )
        for i in range(workers)
    ]
    created: dict[int, float] = {}

    async def submit_all() -> None:
        first = time.time()
        for i in range(jobs):
            if pace_s is not None:
                await asyncio.sleep(max(0.0, first + i * pace_s - time.time()))
            who = Requester(user_id=1 + i % MEMBERS, guild_id=10)
            request = GenerationRequest(
                prompt=prompt_for(i), width=SIDE, height=SIDE, steps=args.steps, seed=i
            )
            submitted = await service.submit(request, who, HERE)
            created[submitted.job.id] = time.time()  # the row is written, the job queued

    try:
        await service.restore()
        service.start()
        events.expected = jobs
        dispatcher = service.worker
        if pace_s is None:
            # Throughput: the queue is filled first (each submit's own cost, the policy and
            # the rows, is the acknowledgement path: the burst benchmark's), then the
            # workers come up and drain it; the clock starts at the first job received.
            cpu0 = time.process_time()
            await submit_all()
            submit_cpu = time.process_time() - cpu0
            cpu0 = time.process_time()
            for p in procs:
                p.start()
        else:
            for p in procs:
                p.start()
            deadline = time.monotonic() + 60
            while len(getattr(dispatcher, "live_workers", [])) < workers:
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {len(dispatcher.live_workers)} of {workers} workers up")  # type: ignore[union-attr]
                await asyncio.sleep(0.05)
            submit_cpu = 0.0
            cpu0 = time.process_time()
            await submit_all()
        await asyncio.wait_for(events.done.wait(), 180 + jobs * args.steps * args.step_ms / 1000)
        last = max(events.finished.values(), default=time.time())
        bot_cpu = time.process_time() - cpu0
    finally:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(30)
        # The dispatcher's stop can wait on a read of Redis that never returns (seen here
        # after the workers left): bounded, so one run cannot hang the benchmark.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(service.stop(grace=5), 10)
        db.close()
    records: list[dict[str, float]] = []
    worker_cpu = 0.0
    for i in range(workers):
        path = folder / f"w{i}.json"
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            worker_cpu += data["cpu"]
            records += [{**r, "worker": i} for r in data["records"]]
    # from the first job a worker received to the last one delivered
    wall = last - min(r["recv"] for r in records) if records else 0.0
    return wall, created, records, bot_cpu, worker_cpu, len(events.failed), submit_cpu


async def measure(ctx: Any, server: RedisServer, tmp: Path, workers: int, args: Any) -> Run:
    job_s = args.steps * args.step_ms / 1000
    jobs = workers * args.jobs_per_worker
    run = Run(workers, jobs=jobs, ideal_s=jobs * job_s / workers)
    # Throughput: every job submitted at once.
    wall, created, records, bot_cpu, worker_cpu, failed, submit_cpu = await one_run(
        ctx, server, tmp, workers, jobs, args, pace_s=None
    )
    run.submit_cpu_ms = submit_cpu / jobs * 1000
    run.seconds, run.failed = wall, failed
    run.bot_cpu_ms = bot_cpu / jobs * 1000
    run.worker_cpu_ms = worker_cpu / jobs * 1000
    by_worker: dict[int, list[dict[str, float]]] = {}
    for r in records:
        by_worker.setdefault(int(r["worker"]), []).append(r)
        run.inside_ms.append((r["pub"] - r["recv"]) * 1000)
    for rows in by_worker.values():
        rows.sort(key=lambda r: r["recv"])
        for prev, nxt in itertools.pairwise(rows):
            if created.get(int(nxt["job"]), math.inf) <= prev["pub"]:
                run.gaps_ms.append((nxt["recv"] - prev["pub"]) * 1000)
    # Latency: one job every 1/(load x ideal rate) seconds, so a worker is normally free.
    pace = job_s / workers / args.load
    _, created, records, _, _, failed, _ = await one_run(
        ctx, server, tmp, workers, jobs, args, pace_s=pace
    )
    run.failed += failed
    run.waits_ms = [(r["recv"] - created[int(r["job"])]) * 1000 for r in records]
    return run


def machine(redis_version: str) -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{cpu}, {os.cpu_count()} cores; {platform.python_implementation()} "
        f"{platform.python_version()}; redis-server {redis_version}"
    )


HEADER = (
    "| workers | jobs | wall s | ideal s | jobs/s | ideal jobs/s | % of ideal "
    "| overhead ms/job | gap p50 ms | gap p99 ms | in-job extra ms | row→start p50 ms "
    "| row→start p99 ms | bot CPU ms/job | submit CPU ms/job | worker CPU ms/job | failed |"
)


def row(run: Run, job_s: float) -> str:
    rate = run.jobs / run.seconds
    ideal_rate = run.workers / job_s
    per_worker = run.jobs / run.workers
    overhead = (run.seconds - run.ideal_s) / per_worker * 1000
    extra = statistics.median(run.inside_ms) - job_s * 1000 if run.inside_ms else 0.0
    return (
        f"| {run.workers} | {run.jobs} | {run.seconds:.2f} | {run.ideal_s:.2f} | {rate:.1f} "
        f"| {ideal_rate:.1f} | {rate / ideal_rate * 100:.1f} | {overhead:.1f} "
        f"| {pct(run.gaps_ms, 0.5):.1f} | {pct(run.gaps_ms, 0.99):.1f} | {extra:.1f} "
        f"| {pct(run.waits_ms, 0.5):.1f} | {pct(run.waits_ms, 0.99):.1f} "
        f"| {run.bot_cpu_ms:.1f} | {run.submit_cpu_ms:.1f} | {run.worker_cpu_ms:.1f} "
        f"| {run.failed} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=list(WORKER_COUNTS))
    parser.add_argument("--jobs-per-worker", type=int, default=20)
    # The default stand-in job is a real one's length: 28 steps of the 832x1216 SDXL render
    # the GPU benchmark timed at 1.137 s an image on an H200 (BENCHMARKS.md), ~40 ms a step.
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--step-ms", type=float, default=40.0)
    parser.add_argument("--load", type=float, default=0.8, help="latency run: share of ideal")
    parser.add_argument("--prefetch", type=int, help="queue.redis_prefetch (default: config's)")
    args = parser.parse_args()
    if args.prefetch is not None:
        PREFETCH.append(str(args.prefetch))
    job_s = args.steps * args.step_ms / 1000

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["bot.queue.remote_worker", "bot.engine.engine"])
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as name:
        tmp = Path(name)
        if shutil.which("redis-server") is None:
            raise SystemExit("redis-server is not installed (Debian package redis-server)")
        server = RedisServer(tmp)
        server.start()
        try:
            print(f"Machine: {machine(server.version())}")
            prefetch = settings_for(server.url, "x", tmp).queue.redis_prefetch
            print(
                f"Stand-in job: {args.steps} steps x {args.step_ms:g} ms = {job_s * 1000:g} ms; "
                f"{args.jobs_per_worker} jobs per worker; latency run at {args.load:.0%} of "
                f"ideal; queue.redis_prefetch {prefetch}; "
                "workers: one process each\n"
            )
            print(HEADER)
            print("|" + "---|" * HEADER.count(" | ") + "---|")
            for workers in args.workers:
                run = asyncio.run(measure(ctx, server, tmp, workers, args))
                print(row(run, job_s), flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
