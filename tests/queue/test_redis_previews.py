"""Live previews through Redis: a real redis-server, a real :class:`RemoteWorker` (in this
process, on the tiny model with a tiny random TAESD) and the bot's dispatcher.

The worker runs in-process (not ``python -m bot worker``) so its engine, loaded once for
the module as ``serve`` loads it (the model, then TAESD by
:func:`bot.queue.remote_worker.load_previews`), is shared by the tests: each test stays a
few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.config import Settings
from bot.engine import Engine
from bot.limits import Requester
from bot.moderation.classifier import Tagger
from bot.queue import protocol
from bot.queue.redis_backend import RedisDispatcher, connect
from bot.queue.remote_worker import RemoteWorker, load_previews
from bot.service import Destination, ImagineService
from bot.storage import Database, JobStatus, JobStore, prepare_database
from tests.support.redis_server import RedisServer, free_port
from tests.support.tiny_sdxl import save_tiny_taesd
from tests.support.tiny_tagger import save_tiny_tagger
from tests.test_service import Recorder, make_settings, request

ALICE = Requester(user_id=1, guild_id=10)
PLAIN = Destination(channel_id=100)  # not age-restricted
JOB = {"width": 64, "height": 64, "steps": 6}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def taesd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_taesd(tmp_path_factory.mktemp("taesd"))


def settings_for(model_dir: Path, tmp_path: Path, taesd: Path, url: str, **env: str) -> Settings:
    return make_settings(
        model_dir,
        tmp_path,
        ANIMAGINE_PREVIEWS__SOURCE=str(taesd),
        ANIMAGINE_PREVIEWS__INTERVAL_S="0",  # a preview at every step the engine can
        ANIMAGINE_PREVIEWS__MAX_SIDE="64",
        ANIMAGINE_QUEUE__BACKEND="redis",
        ANIMAGINE_QUEUE__REDIS_URL=url,
        ANIMAGINE_QUEUE__REDIS_PREFIX=f"p{free_port()}",
        ANIMAGINE_QUEUE__REDIS_PREFETCH="1",  # a job is handed out before a worker is up
        ANIMAGINE_QUEUE__REDIS_CLAIM_TIMEOUT_S="3",
        ANIMAGINE_QUEUE__REDIS_HEARTBEAT_S="0.3",
        **env,
    )


@pytest.fixture(scope="module")
def worker_engine(
    tiny_model_dir: Path, taesd_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Engine:
    """The worker's engine, loaded as ``serve`` loads it: the model, then TAESD."""
    settings = settings_for(
        tiny_model_dir, tmp_path_factory.mktemp("w"), taesd_dir, "redis://localhost:1"
    )
    engine = Engine.load(settings)
    loading = load_previews(engine, settings)
    assert loading is not None
    loading.join(30)
    assert engine.previewer is not None
    engine.previewer.max_share = 1e9  # a shared CI CPU: never off by itself here
    return engine


class World:
    """The bot (service + Redis dispatcher) and one in-process worker."""

    def __init__(
        self, settings: Settings, tmp_path: Path, engines: tuple[Engine, Engine], rating: str
    ) -> None:
        self.settings = settings
        engine, self.worker_engine = engines
        self.db: Database = prepare_database(settings)
        self.events = Recorder()
        # Every preview (and result) gets this rating, whatever it looks like.
        self.tagger = Tagger.load(str(save_tiny_tagger(tmp_path / "tagger", scores={rating: 0.9})))
        self.service = ImagineService(
            settings, self.db, engine, self.events, classifier=self.tagger
        )
        self.worker: RemoteWorker | None = None
        self._worker_task: asyncio.Task[None] | None = None

    @property
    def dispatcher(self) -> RedisDispatcher:
        assert isinstance(self.service.worker, RedisDispatcher)
        return self.service.worker

    async def open(self) -> None:
        await self.service.restore()
        self.service.start()

    async def start_worker(self) -> None:
        redis = await connect(self.settings.queue.redis_url)
        self.worker = RemoteWorker(self.settings, self.worker_engine, redis, name="w1")
        self._worker_task = asyncio.create_task(self.worker.run())

    async def close(self) -> None:
        await self.service.stop(grace=5)
        if self.worker is not None and self._worker_task is not None:
            self.worker.stopping.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._worker_task, 10)
            await self.worker.redis.aclose()
        self.db.close()

    async def until(self, check: Any, what: str, limit: float = 30.0) -> None:
        deadline = time.monotonic() + limit
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    async def handed_out(self, job_id: int) -> protocol.JobBatch:
        """The job's message as the bot sent it to Redis."""
        await self.until(lambda: job_id in self.dispatcher.inflight, "the job handed out")
        return protocol.read_job_batch(self.dispatcher.inflight[job_id])

    async def render(self, **changes: Any) -> tuple[int, protocol.JobBatch]:
        """One job submitted, handed out, rendered by the worker and delivered."""
        submitted = await self.service.submit(request(**{**JOB, **changes}), ALICE, PLAIN)
        job_id = submitted.job.id
        sent = await self.handed_out(job_id)
        if self.worker is None:
            await self.start_worker()
        await self.until(lambda: ("finished", job_id) in self.events.log, "the job finished")
        await self.dispatcher.drain()
        assert JobStore(self.db).get(job_id).status is JobStatus.FINISHED
        return job_id, sent

    def previews(self, job_id: int) -> list[Image.Image]:
        return [p.preview for p in self.events.progress.get(job_id, []) if p.preview is not None]


def make_world(request: pytest.FixtureRequest, rating: str, **env: str) -> World:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    server: RedisServer = request.getfixturevalue("redis_server")
    settings = settings_for(
        request.getfixturevalue("tiny_model_dir"),
        tmp_path,
        request.getfixturevalue("taesd_dir"),
        server.url,
        **env,
    )
    engines = (request.getfixturevalue("engine"), request.getfixturevalue("worker_engine"))
    return World(settings, tmp_path, engines, rating)


@pytest.fixture
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    w = make_world(request, "general")
    try:
        yield w
    finally:
        await w.close()


@pytest.fixture
async def flagging_world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    """A world whose image check rates every image explicit."""
    w = make_world(request, "explicit")
    try:
        yield w
    finally:
        await w.close()


@pytest.fixture
async def previews_off_world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    """A bot with previews off (``previews.enabled = false``); its worker has TAESD."""
    w = make_world(request, "general", ANIMAGINE_PREVIEWS__ENABLED="false")
    try:
        yield w
    finally:
        await w.close()


async def test_a_remote_workers_previews_reach_the_adapter_checked(world: World) -> None:
    await world.open()
    job_id, sent = await world.render()
    assert sent.previews == {job_id: 0.0}  # the bot decided, and said so with the job
    previews = world.previews(job_id)
    assert previews, "a preview went worker -> Redis -> bot -> image check -> adapter"
    for image in previews:
        assert image.mode == "RGB"
        assert max(image.size) <= 64
    assert world.service.renderer.preview_check_seconds  # each went through the check
    steps = [p.step for p in world.events.progress[job_id]]
    assert steps[-1] == JOB["steps"]  # the text progress flowed as well
    assert len(world.events.images[job_id]) == 1


class SlowTagger:
    """The tagger, taking its time: previews come faster than they are checked."""

    def __init__(self, tagger: Tagger, seconds: float) -> None:
        self.tagger = tagger
        self.seconds = seconds

    def rate(self, image: Image.Image) -> Any:
        time.sleep(self.seconds)
        return self.tagger.rate(image)

    @property
    def problem(self) -> str | None:
        return self.tagger.problem


async def test_previews_that_come_while_one_is_in_the_check_are_dropped(world: World) -> None:
    world.service.renderer.output.classifier = SlowTagger(world.tagger, 0.3)
    await world.open()
    job_id, _sent = await world.render(steps=10)
    assert world.dispatcher.redis is not None
    entries: Any = await world.dispatcher.redis.xrange(world.dispatcher.keys.progress)
    notes = [protocol.read_progress(fields[b"m"]) for _id, fields in entries]
    sent = [n for n in notes if n.job_id == job_id and n.preview is not None]
    checked = world.service.renderer.preview_check_seconds
    assert len(sent) >= 5  # the worker sent one at (nearly) every step
    assert 1 <= len(checked) < len(sent)  # one at a time was checked, the others dropped
    assert len(world.previews(job_id)) == len(checked)


async def test_a_preview_the_image_check_flags_is_not_passed_on_in_a_plain_channel(
    flagging_world: World,
) -> None:
    world = flagging_world
    await world.open()
    job_id, sent = await world.render()
    assert sent.previews == {job_id: 0.0}
    assert world.previews(job_id) == []
    assert world.events.progress[job_id], "the text progress still flows"
    assert world.service.renderer.preview_check_seconds  # they came, and were checked


async def test_a_server_that_turned_previews_off_gets_none_from_a_worker(world: World) -> None:
    await world.open()
    await world.service.admin.set_defaults(ALICE.guild_id or 0, {"previews": False})
    job_id, sent = await world.render()
    assert sent.previews == {}  # the job message carries no interval: none rendered
    assert world.events.progress[job_id]
    assert world.previews(job_id) == []
    assert world.service.renderer.preview_check_seconds == []


async def test_a_bot_with_previews_off_gets_none_from_a_worker_that_has_taesd(
    previews_off_world: World,
) -> None:
    world = previews_off_world
    await world.open()
    job_id, sent = await world.render()
    assert sent.previews == {}
    assert world.previews(job_id) == []
    assert world.service.renderer.preview_check_seconds == []


async def test_the_engines_auto_off_holds_on_the_worker(world: World) -> None:
    previewer = world.worker_engine.previewer
    assert previewer is not None
    previewer.max_share = 1e-9  # any decode costs too much: off after the first
    try:
        await world.open()
        job_id, sent = await world.render(steps=8)
        assert sent.previews == {job_id: 0.0}
        assert not previewer.on
        assert "over" in (previewer.off_reason or "")
        assert len(world.previews(job_id)) <= 1  # the decode that turned them off, at most
        # The worker goes on rendering, without previews.
        second, _ = await world.render()
        assert world.previews(second) == []
    finally:
        previewer.max_share = 1e9
        previewer.off_reason = None


def test_a_worker_whose_taesd_is_missing_renders_without_previews(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from bot.engine import RenderJob

    settings = settings_for(
        tiny_model_dir,
        tmp_path,
        tmp_path / "no-taesd-here",
        "redis://localhost:1",
        ANIMAGINE_MODEL__OFFLINE="true",
    )
    engine = Engine.load(settings)
    with caplog.at_level(logging.INFO):
        loading = load_previews(engine, settings)
        assert loading is not None
        loading.join(30)
    assert engine.previewer is None  # no previews, never a failed worker
    assert "live previews off" in caplog.text
    job = RenderJob(
        prompt="1girl",
        negative_prompt="",
        width=64,
        height=64,
        steps=2,
        cfg=5.0,
        sampler="Euler a",
        seeds=(1,),
    )
    assert len(engine.render_batch([job], preview_every=[0.0])[0].images) == 1
    off = settings_for(
        tiny_model_dir, tmp_path, tmp_path, "redis://x", ANIMAGINE_PREVIEWS__ENABLED="false"
    )
    assert load_previews(engine, off) is None  # [previews] off: nothing to load
