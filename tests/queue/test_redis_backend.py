"""The Redis backend against a real redis-server and real worker processes (tiny model).

Each test has its own key prefix; the server is shared by the session. Workers are
``python -m bot worker`` processes, killed and restarted as a GPU machine would be.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from bot.engine import Engine
from bot.limits import Requester
from bot.queue import protocol
from bot.queue.redis_backend import RedisDispatcher, RedisUnavailable, list_workers
from bot.request import ImagePrompt
from bot.service import Destination, ImagineService
from bot.storage import Database, JobStatus, JobStore, prepare_database
from tests.support.redis_server import RedisServer, free_port
from tests.test_service import Recorder, make_settings, request

ALICE = Requester(user_id=1, guild_id=10)
BOB = Requester(user_id=2, guild_id=10)
HERE = Destination(channel_id=100)
ROOT = Path(__file__).resolve().parents[2]

# A job long enough to act on while it renders (about 1.5-3 s on one CPU core).
LONG = {"width": 256, "height": 256, "steps": 40, "count": 2}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


class Workers:
    """Worker processes of one test, sharing one config file."""

    def __init__(self, tmp_path: Path, model_dir: Path, url: str, prefix: str) -> None:
        self.dir = tmp_path
        self.model_dir = model_dir
        self.config = tmp_path / "worker.toml"
        self.config.write_text(
            f'[model]\nsource = "{model_dir}"\n\n[engine]\ndevice = "cpu"\n\n'
            f'[queue]\nbackend = "redis"\nredis_url = "{url}"\nredis_prefix = "{prefix}"\n'
            "redis_claim_timeout_s = 1.5\nredis_heartbeat_s = 0.3\nredis_max_attempts = 2\n",
            encoding="utf-8",
        )
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, *names: str, args: tuple[str, ...] = ()) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        for name in names:
            with (self.dir / f"{name}.log").open("wb") as log:
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "bot", "worker", "--config", str(self.config)]  # noqa: RUF005
                    + ["--name", name, *args],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )

    def log(self, name: str) -> str:
        return (self.dir / f"{name}.log").read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class World:
    def __init__(
        self, tmp_path: Path, model_dir: Path, engine: Engine, server: RedisServer, **env: str
    ) -> None:
        self.tmp_path = tmp_path
        self.engine = engine
        self.server = server
        self.prefix = f"t{free_port()}"
        self.settings = make_settings(
            model_dir,
            tmp_path,
            ANIMAGINE_QUEUE__BACKEND="redis",
            ANIMAGINE_QUEUE__REDIS_URL=server.url,
            ANIMAGINE_QUEUE__REDIS_PREFIX=self.prefix,
            ANIMAGINE_QUEUE__REDIS_PREFETCH="0",
            ANIMAGINE_QUEUE__REDIS_CLAIM_TIMEOUT_S="1.5",
            ANIMAGINE_QUEUE__REDIS_HEARTBEAT_S="0.3",
            **env,
        )
        self.db: Database = prepare_database(self.settings)
        self.workers = Workers(tmp_path, model_dir, server.url, self.prefix)
        self.events = Recorder()
        self.service = ImagineService(self.settings, self.db, engine, self.events)

    @property
    def dispatcher(self) -> RedisDispatcher:
        assert isinstance(self.service.worker, RedisDispatcher)
        return self.service.worker

    async def close(self) -> None:
        await self.service.stop(grace=5)
        self.workers.stop()
        self.db.close()

    async def open(self) -> None:
        await self.service.restore()
        self.service.start()

    async def restart_bot(self) -> None:
        await self.service.stop(grace=5)
        self.events = Recorder()
        self.service = ImagineService(self.settings, self.db, self.engine, self.events)
        await self.open()

    async def until(self, check: Any, what: str, limit: float = 60.0) -> None:
        deadline = time.monotonic() + limit
        while not check():
            if time.monotonic() > deadline:
                logs = {n: self.workers.log(n)[-2000:] for n in self.workers.processes}
                raise AssertionError(f"timed out waiting for {what}; worker logs: {logs}")
            await asyncio.sleep(0.05)

    async def live(self, count: int) -> None:
        await self.until(lambda: len(self.dispatcher.live_workers) == count, f"{count} workers")

    async def beats(self) -> dict[str, protocol.Heartbeat]:
        assert self.dispatcher.redis is not None
        beats = await list_workers(self.dispatcher.redis, self.dispatcher.keys)
        return {b.name: b for b in beats}


@pytest.fixture
async def world(
    tmp_path: Path, tiny_model_dir: Path, engine: Engine, redis_server: RedisServer
) -> AsyncIterator[World]:
    w = World(tmp_path, tiny_model_dir, engine, redis_server)
    try:
        yield w
    finally:
        await w.close()


@pytest.fixture
async def batching_world(
    tmp_path: Path, tiny_model_dir: Path, engine: Engine, redis_server: RedisServer
) -> AsyncIterator[World]:
    """A world whose bot puts up to 4 compatible images in one worker's pipeline call."""
    w = World(
        tmp_path, tiny_model_dir, engine, redis_server, ANIMAGINE_QUEUE__MICRO_BATCH_IMAGES="4"
    )
    try:
        yield w
    finally:
        await w.close()


def finished(w: World) -> list[int]:
    return [job for kind, job in w.events.log if kind == "finished"]


async def test_two_workers_keep_the_fair_order_and_deliver_each_job_once(world: World) -> None:
    await world.open()
    # Queued while no worker is up: nothing is handed out (no prefetch), so the workers get
    # the jobs in fair order when they come.
    a = [await world.service.submit(request(seed=i), ALICE, HERE) for i in range(3)]
    b = await world.service.submit(request(seed=9), BOB, HERE)
    await asyncio.sleep(0.5)
    assert world.dispatcher.inflight == {}
    world.workers.start("w1", "w2")
    await world.service.run_burst()
    store = JobStore(world.db)
    rows = [store.get(s.job.id) for s in [*a, b]]
    assert all(r.status is JobStatus.FINISHED for r in rows)
    by_start = sorted(rows, key=lambda r: (r.started_at, r.id))
    # Round-robin across members holds across workers: Bob's one job is not behind Alice's 3.
    assert [r.id for r in by_start] == [a[0].job.id, b.job.id, a[1].job.id, a[2].job.id]
    assert sorted(finished(world)) == sorted(r.id for r in rows)
    images = world.events.images[b.job.id]
    assert [i.seed for i in images] == [9]
    assert images[0].png.startswith(b"\x89PNG")
    assert [i.seed for i in store.images(b.job.id)] == [9]
    await asyncio.sleep(0.7)  # the next heartbeats
    beats = await world.beats()
    assert sum(beat.jobs_done for beat in beats.values()) == 4
    assert {beats[n].gpu for n in beats} == {"cpu"}
    # A worker that comes back late with a result for a delivered job: dropped by job id.
    assert world.dispatcher.redis is not None
    late = protocol.Result(b.job.id, "finished", "w-late", images=[], seconds=1.0)
    await world.dispatcher.redis.xadd(
        world.dispatcher.keys.results, {"m": protocol.result_message(late)}
    )
    await world.until(
        lambda: world.dispatcher.redis is not None and not world.dispatcher.inflight, "drop"
    )
    await asyncio.sleep(0.5)
    assert finished(world).count(b.job.id) == 1
    assert len(store.images(b.job.id)) == 1


async def test_a_killed_worker_job_is_finished_by_the_other_and_delivered_once(
    world: World,
) -> None:
    world.workers.start("w1", "w2")
    await world.open()
    await world.live(2)
    job = (await world.service.submit(request(seed=3, **LONG), ALICE, HERE)).job
    await world.until(lambda: job.id in world.events.progress, "the first progress")
    holder = await holder_of(world, job.id)
    other = "w2" if holder == "w1" else "w1"
    os.kill(world.workers.processes[holder].pid, signal.SIGKILL)
    killed_at = time.monotonic()
    await world.until(lambda: job.id in finished(world), "the job to finish elsewhere")
    assert time.monotonic() - killed_at < 20
    await asyncio.sleep(0.5)
    assert finished(world) == [job.id]
    assert [i.seed for i in world.events.images[job.id]] == [3, 4]
    assert (await world.beats())[other].jobs_done == 1
    assert JobStore(world.db).get(job.id).status is JobStatus.FINISHED


async def test_a_remote_cancel_stops_the_worker_within_a_step(world: World) -> None:
    world.workers.start("w1")
    await world.open()
    await world.live(1)
    job = (await world.service.submit(request(**LONG), ALICE, HERE)).job
    await world.until(lambda: job.id in world.events.progress, "the first progress")
    await world.service.cancel(job.id, ALICE)
    asked = time.monotonic()
    await world.until(lambda: ("cancelled", job.id) in world.events.log, "the cancel")

    async def idle() -> bool:
        beat = (await world.beats()).get("w1")
        return beat is not None and beat.state == "idle" and beat.job_id is None

    while not await idle():
        assert time.monotonic() - asked < 1.5, "the worker kept rendering a cancelled job"
        await asyncio.sleep(0.05)
    assert (await world.beats())["w1"].jobs_done == 0
    assert JobStore(world.db).get(job.id).status is JobStatus.CANCELLED
    assert JobStore(world.db).images(job.id) == []
    assert ("finished", job.id) not in world.events.log


async def test_redis_restarted_mid_queue_loses_no_job(world: World) -> None:
    world.workers.start("w1", "w2")
    await world.open()
    await world.live(2)
    jobs = [(await world.service.submit(request(seed=i, **LONG), ALICE, HERE)).job for i in (1, 2)]
    jobs += [(await world.service.submit(request(seed=7), BOB, HERE)).job]
    await world.until(lambda: jobs[0].id in world.events.progress, "the first progress")
    world.server.restart()
    await world.until(lambda: len(finished(world)) == 3, "every job after the restart", 90)
    await asyncio.sleep(1.0)
    assert sorted(finished(world)) == sorted(j.id for j in jobs)
    store = JobStore(world.db)
    assert [len(store.images(j.id)) for j in jobs] == [2, 2, 1]


async def test_results_finished_while_the_bot_was_down_are_delivered_when_it_is_back(
    world: World,
) -> None:
    world.workers.start("w1", "w2")
    await world.open()
    await world.live(2)
    jobs = [(await world.service.submit(request(seed=i, **LONG), ALICE, HERE)).job for i in (1, 5)]
    await world.until(lambda: len(world.dispatcher.running_job_ids) == 2, "both jobs running")
    await world.service.stop(grace=5)
    store = JobStore(world.db)
    assert [store.get(j.id).status for j in jobs] == [JobStatus.RUNNING] * 2

    async def both_done() -> bool:
        beats = await world.beats()
        return sum(b.jobs_done for b in beats.values()) == 2

    from bot.queue.redis_backend import connect

    probe = await connect(world.server.url)
    world.dispatcher.redis = probe
    deadline = time.monotonic() + 60
    while not await both_done():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    await probe.aclose()
    world.dispatcher.redis = None
    await world.restart_bot()
    await world.until(lambda: len(finished(world)) == 2, "delivery after the restart")
    assert sorted(finished(world)) == sorted(j.id for j in jobs)
    assert [[i.seed for i in world.events.images[j.id]] for j in jobs] == [[1, 2], [5, 6]]
    assert [store.get(j.id).status for j in jobs] == [JobStatus.FINISHED] * 2


async def test_unreachable_redis_is_a_one_line_error(world: World, tmp_path: Path) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    config = tmp_path / "down.toml"
    config.write_text(
        f'[model]\nsource = "nowhere"\n\n[queue]\nbackend = "redis"\nredis_url = "{closed}"\n',
        encoding="utf-8",
    )
    # The three commands at once (each imports the bot: seconds apiece).
    running = {
        command: subprocess.Popen(  # noqa: ASYNC220 - the CLI is what is tested
            [sys.executable, "-m", "bot", "--config", str(config), command],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in ("worker", "workers", "run")
    }
    for process in running.values():
        _out, err = process.communicate(timeout=90)
        assert process.returncode == 1
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith(f"error: cannot reach Redis at {closed}")
    world.settings = world.settings.model_copy(
        update={"queue": world.settings.queue.model_copy(update={"redis_url": closed})}
    )
    service = ImagineService(world.settings, world.db, world.engine, Recorder())
    with pytest.raises(RedisUnavailable, match="cannot reach Redis at"):
        await service.restore()


async def test_a_worker_of_another_protocol_version_is_refused(world: World) -> None:
    await world.open()
    assert world.dispatcher.redis is not None
    await world.dispatcher.redis.set(f"{world.prefix}:protocol", "999")
    await world.dispatcher.stop()  # the bot would rewrite its version
    world.workers.start("old")
    process = world.workers.processes["old"]
    assert process.wait(60) == 1
    log = world.workers.log("old")
    assert "this worker is refused: protocol version 999 is not supported" in log


async def stand_in_beat(w: World, name: str, state: str = "idle") -> None:
    """A heartbeat as a worker sends it (a stand-in that takes no job)."""
    assert w.dispatcher.redis is not None
    beat = protocol.Heartbeat(name, "stand-in", "cpu", "tiny", state, 0, time.time())
    await w.dispatcher.redis.set(w.dispatcher.keys.worker(name), protocol.heartbeat_message(beat))


async def test_queue_positions_and_etas_count_the_workers_that_are_up(world: World) -> None:
    await world.open()
    jobs = [(await world.service.submit(request(seed=i), ALICE, HERE)).job for i in range(6)]
    one = world.dispatcher.durations.estimate(jobs[0].spec.shape.work_units)
    # No worker is up: the ETAs read as if one were, each job behind the one before.
    status = await world.service.status(ALICE)
    assert [q.position for q in status.mine] == [1, 2, 3, 4, 5, 6]
    assert [round(q.eta_seconds / one, 3) for q in status.mine] == [1, 2, 3, 4, 5, 6]
    assert round(status.eta_empty_seconds / one, 3) == 6
    # Two workers come up (stand-ins that take no job): the first two jobs are handed out,
    # the other four are shared by both workers, so the queue is done in half the time.
    await stand_in_beat(world, "s1")
    await stand_in_beat(world, "s2")
    await world.until(lambda: len(world.dispatcher.inflight) == 2, "two jobs handed out")
    status = await world.service.status(ALICE)
    assert [q.position for q in status.mine] == [0, 0, 1, 2, 3, 4]
    assert [round(q.eta_seconds / one, 3) for q in status.mine] == [1, 1, 2, 2, 3, 3]
    assert round(status.eta_empty_seconds / one, 3) == 3
    # One says it is draining: it is no longer counted, and the ETAs grow again.
    await stand_in_beat(world, "s2", "draining")
    await world.until(lambda: len(world.dispatcher.live_workers) == 1, "one live worker")
    status = await world.service.status(ALICE)
    assert [round(q.eta_seconds / one, 3) for q in status.mine] == [1, 2, 3, 4, 5, 6]
    # A worker of another protocol version is listed but not counted.
    old = protocol.Heartbeat("old", "h", "cpu", "tiny", "idle", 0, time.time(), version=999)
    assert world.dispatcher.redis is not None
    await world.dispatcher.redis.set(
        world.dispatcher.keys.worker("old"), protocol.heartbeat_message(old)
    )
    await world.until(lambda: len(world.dispatcher.workers) == 3, "three heartbeats")
    status = await world.service.status(ALICE)
    assert round(status.eta_empty_seconds / one, 3) == 6


async def test_a_job_lost_on_too_many_workers_in_a_row_fails_with_a_refund(world: World) -> None:
    await world.open()
    redis = world.dispatcher.redis
    assert redis is not None
    keys = world.dispatcher.keys
    await stand_in_beat(world, "crashy")
    job = (await world.service.submit(request(seed=4), ALICE, HERE)).job
    await world.until(lambda: job.id in world.dispatcher.inflight, "the job handed out")
    # Two workers take the job in turn and die on it (they never renew nor acknowledge).
    taken = await redis.xreadgroup("workers", "crashy-1", {keys.jobs: ">"}, count=1)
    assert len(taken[0][1]) == 1
    await asyncio.sleep(1.7)  # past the claim timeout
    again = await redis.xautoclaim(keys.jobs, "workers", "crashy-2", 1500, "0-0", count=1)
    assert len(again[1]) == 1
    await redis.delete(keys.worker("crashy"))
    await asyncio.sleep(1.7)
    # The third worker (queue.redis_max_attempts = 2) does not render it a third time: the
    # job fails with the reason, the member gets the cost back, and the worker goes on.
    world.workers.start("w1")
    await world.until(lambda: ("failed", job.id) in world.events.log, "the job to fail")
    assert "stopped 2 times in a row" in world.events.reasons[job.id]
    row = JobStore(world.db).get(job.id)
    assert row.status is JobStatus.FAILED
    assert row.refunded_at is not None
    assert JobStore(world.db).images(job.id) == []
    assert await redis.xlen(keys.jobs) == 0
    after = (await world.service.submit(request(seed=8), ALICE, HERE)).job
    await world.until(lambda: after.id in finished(world), "the next job")
    assert ("finished", job.id) not in world.events.log
    await asyncio.sleep(0.7)  # the next heartbeats
    assert (await world.beats())["w1"].jobs_done == 1


async def holder_of(w: World, job_id: int) -> str:
    """The worker whose heartbeat says it renders ``job_id``."""
    deadline = time.monotonic() + 10
    while True:
        holders = [n for n, b in (await w.beats()).items() if b.job_id == job_id]
        if holders:
            return holders[0]
        assert time.monotonic() < deadline, "no worker says it renders the job"
        await asyncio.sleep(0.05)


async def test_sigterm_mid_render_hands_the_job_back_after_the_grace_period(
    world: World,
) -> None:
    world.workers.start("w1", "w2", args=("--grace", "0.2"))
    await world.open()
    await world.live(2)
    job = (await world.service.submit(request(seed=3, **LONG), ALICE, HERE)).job
    await world.until(lambda: job.id in world.events.progress, "the first progress")
    holder = await holder_of(world, job.id)
    other = "w2" if holder == "w1" else "w1"
    process = world.workers.processes[holder]
    process.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    await world.until(lambda: process.poll() is not None, "the worker to exit", 20)
    assert process.returncode == 0
    # Handed back, not left to the claim timeout: the other worker starts it at once.
    await world.until(lambda: job.id in finished(world), "the job to finish elsewhere")
    await asyncio.sleep(0.7)
    assert finished(world) == [job.id]
    assert ("failed", job.id) not in world.events.log
    assert [i.seed for i in world.events.images[job.id]] == [3, 4]
    beats = await world.beats()
    assert holder not in beats  # gone from the list when it exits
    assert beats[other].jobs_done == 1
    assert f"job(s) {job.id} handed back for another worker" in world.workers.log(holder)
    assert time.monotonic() - stopped_at < 30


async def test_sigterm_lets_the_job_in_hand_finish_and_takes_no_new_one(world: World) -> None:
    world.workers.start("w1")
    await world.open()
    await world.live(1)
    job = (await world.service.submit(request(seed=5, **LONG), ALICE, HERE)).job
    await world.until(lambda: job.id in world.events.progress, "the first progress")
    process = world.workers.processes["w1"]
    process.send_signal(signal.SIGTERM)
    # Draining: the bot no longer counts it, so the next job is not handed to it.
    await world.until(lambda: not world.dispatcher.live_workers, "the worker to drain")
    assert [b.state for b in world.dispatcher.workers] == ["draining"]
    later = (await world.service.submit(request(seed=6), BOB, HERE)).job
    await world.until(lambda: process.poll() is not None, "the worker to exit", 30)
    assert process.returncode == 0
    await world.until(lambda: job.id in finished(world), "the job in hand")
    assert [i.seed for i in world.events.images[job.id]] == [5, 6]
    assert JobStore(world.db).get(later.id).status is JobStatus.QUEUED
    assert "handed back" not in world.workers.log("w1")
    # Another worker picks up where it left off.
    world.workers.start("w2")
    await world.until(lambda: later.id in finished(world), "the next job on a new worker")
    assert finished(world) == [job.id, later.id]


async def test_compatible_jobs_go_to_one_worker_as_one_micro_batch(batching_world: World) -> None:
    w = batching_world
    await w.open()
    # Queued while one (stand-in) worker is up: the bot takes the next job in fair order
    # and the compatible ones from the window, and hands them out as one message.
    jobs = [(await w.service.submit(request(seed=s), who, HERE)).job for s, who in
            [(1, ALICE), (2, BOB), (3, ALICE)]]  # fmt: skip
    odd = (await w.service.submit(request(seed=4, steps=3), BOB, HERE)).job  # not compatible
    await stand_in_beat(w, "stand-in")
    await w.until(lambda: len(w.dispatcher.inflight) == 3, "the batch handed out")
    redis = w.dispatcher.redis
    assert redis is not None
    entries = await redis.xrange(w.dispatcher.keys.jobs)
    assert len(entries) == 1
    batch = protocol.read_jobs(entries[0][1][b"m"])
    assert [job_id for job_id, _ in batch] == [jobs[0].id, jobs[1].id, jobs[2].id]
    assert w.dispatcher.handed_out == 1  # a micro-batch takes one worker's place
    # A real worker takes it: one pipeline call, each job delivered with its own image.
    await redis.delete(w.dispatcher.keys.worker("stand-in"))
    w.workers.start("w1")
    await w.service.run_burst()
    assert sorted(finished(w)) == sorted([*(j.id for j in jobs), odd.id])
    assert [[i.seed for i in w.events.images[j.id]] for j in jobs] == [[1], [2], [3]]
    assert all(JobStore(w.db).get(j.id).status is JobStatus.FINISHED for j in jobs)
    await asyncio.sleep(0.7)  # the next heartbeat
    assert (await w.beats())["w1"].jobs_done == 4


async def test_a_password_protected_redis_is_reached_and_the_password_never_shown(
    tmp_path: Path,
) -> None:
    from bot.queue.redis_backend import connect

    server = RedisServer(tmp_path, args=("--requirepass", "s3cret-pass"))
    server.start()
    try:
        good = f"redis://:s3cret-pass@127.0.0.1:{server.port}/0"
        client = await connect(good)
        assert await client.ping()
        await client.aclose()
        for url in (
            f"redis://:wrong-pass@127.0.0.1:{server.port}/0",
            f"redis://127.0.0.1:{server.port}/0",
        ):
            with pytest.raises(RedisUnavailable) as caught:
                await connect(url)
            message = str(caught.value)
            assert "\n" not in message
            assert "wrong-pass" not in message
            assert "s3cret-pass" not in message
            assert message.startswith("cannot reach Redis at redis://")
    finally:
        server.stop()


async def test_a_worker_logged_in_as_a_restricted_acl_user_renders(world: World) -> None:
    """The ACL the README gives GPU workers is enough for a worker's whole round."""
    await world.open()
    redis = world.dispatcher.redis
    assert redis is not None
    user = f"gpu{free_port()}"
    await redis.execute_command(
        "ACL", "SETUSER", user, "on", ">worker-pass", f"~{world.prefix}:*",
        "+@stream", "+get", "+mget", "+set", "+del", "+exists", "+ping",
    )  # fmt: skip
    try:
        url = f"redis://{user}:worker-pass@127.0.0.1:{world.server.port}/0"
        world.workers = Workers(world.tmp_path, world.workers.model_dir, url, world.prefix)
        world.workers.start("acl-worker")
        await world.live(1)
        job = (await world.service.submit(request(seed=11), ALICE, HERE)).job
        await world.until(lambda: job.id in finished(world), "the job from the ACL worker")
        assert [i.seed for i in world.events.images[job.id]] == [11]
        assert "NOPERM" not in world.workers.log("acl-worker")
    finally:
        world.workers.stop()
        await redis.execute_command("ACL", "DELUSER", user)


def _solid_png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (64, 64), color).save(out, format="PNG")
    return out.getvalue()


async def test_image_prompts_render_on_a_remote_worker_from_their_own_input(
    world: World,
) -> None:
    """img2img over Redis: the input travels with the job (protocol 3), and the worker
    renders from it: two jobs alike but for their input images give different pixels."""
    await world.open()
    vault = world.service.outbox.vault
    jobs = []
    for color in ((230, 40, 40), (40, 40, 230)):
        prompt = ImagePrompt(source=vault.keep_input(_solid_png(color)), strength=0.5)
        req = request(seed=5).model_copy(update={"image": prompt})
        jobs.append((await world.service.submit(req, ALICE, HERE)).job)
    world.workers.start("w1")
    await world.service.run_burst()
    store = JobStore(world.db)
    assert [store.get(j.id).status for j in jobs] == [JobStatus.FINISHED] * 2
    red, blue = (world.events.images[j.id][0] for j in jobs)
    assert red.png.startswith(b"\x89PNG")
    assert red.png != blue.png
    assert "Denoising strength: 0.5" in red.infotext.to_text()
