"""Micro-batching through the service: one pipeline call, each job delivered as alone."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot.engine import Engine, EngineError, Progress, RenderJob, RenderResult
from bot.images import read_infotext
from bot.limits import Requester
from bot.service import ImagineService
from bot.storage import Database, JobRecord, JobStatus, JobStore, prepare_database
from tests.test_service import HERE, Recorder, make_settings, request

ALICE = Requester(user_id=1, guild_id=10)
BOB = Requester(user_id=2, guild_id=10)
LONG_PROMPT = ", ".join(["1girl"] * 30)

World = tuple[ImagineService, Recorder, Database]
Factory = Callable[[int], World]


@pytest.fixture
async def make_world(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> AsyncIterator[Factory]:
    opened: list[World] = []

    def factory(images: int) -> World:
        folder = tmp_path / f"db{len(opened)}"
        folder.mkdir()
        settings = make_settings(
            tiny_model_dir, folder, ANIMAGINE_QUEUE__MICRO_BATCH_IMAGES=str(images)
        )
        db = prepare_database(settings)
        events = Recorder()
        opened.append((ImagineService(settings, db, engine, events), events, db))
        return opened[-1]

    yield factory
    for service, _, db in opened:
        await service.stop(grace=5)
        db.close()


@pytest.fixture
def calls(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The seeds of each job of every pipeline call (render() goes through render_batch)."""
    seen: list[list[int]] = []
    original = engine.render_batch

    def spy(jobs: Sequence[RenderJob], **kwargs: Any) -> list[RenderResult]:
        seen.append([len(job.seeds) for job in jobs])
        return original(jobs, **kwargs)

    monkeypatch.setattr(engine, "render_batch", spy)
    return seen


async def submit_four(service: ImagineService) -> list[int]:
    """Alice: two compatible jobs; Bob: a compatible one (two images, a longer prompt) and
    one with other steps. Fair order: a1, b1, a2, b2."""
    a1 = await service.submit(request(seed=100), ALICE, HERE)
    b1 = await service.submit(request(seed=200, count=2, prompt=LONG_PROMPT), BOB, HERE)
    a2 = await service.submit(request(seed=300, prompt="1boy, smile"), ALICE, HERE)
    b2 = await service.submit(request(seed=400, steps=3), BOB, HERE)
    return [a1.job.id, b1.job.id, a2.job.id, b2.job.id]


def finished(events: Recorder) -> list[int]:
    return [job for what, job in events.log if what == "finished"]


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


async def test_compatible_jobs_run_as_one_call_each_delivered_as_alone(
    make_world: Factory, calls: list[list[int]]
) -> None:
    service, events, db = make_world(4)
    a1, b1, a2, b2 = await submit_four(service)
    assert await service.run_burst() == 4
    assert calls == [[1, 2, 1], [1]]  # a1 + b1 + a2 in one call, then b2 alone
    assert [e for e in events.log if e[0] == "started"][:3] == [
        ("started", a1),
        ("started", b1),
        ("started", a2),
    ]
    assert finished(events) == [a1, b1, a2, b2]
    store = JobStore(db)
    for job_id, seeds in [(a1, [100]), (b1, [200, 201]), (a2, [300]), (b2, [400])]:
        assert store.get(job_id).status is JobStatus.FINISHED
        assert [i.seed for i in events.images[job_id]] == seeds
        assert [r.seed for r in store.images(job_id)] == seeds
        assert [p.step for p in events.progress[job_id]] == list(range(1, 4 if job_id == b2 else 3))
        assert service.worker.last_job_seconds[job_id]["render"] > 0
    info = read_infotext(events.images[a2][0].png)
    assert info is not None
    assert info.prompt.startswith("1boy, smile")
    assert info.params["Seed"] == "300"

    # The same requests without batching: the same images, one call per job.
    alone_service, alone_events, _ = make_world(1)
    alone_ids = await submit_four(alone_service)
    calls.clear()
    await alone_service.run_burst()
    assert calls == [[1], [2], [1], [1]]
    assert finished(alone_events) == alone_ids
    for batched, alone in zip([a1, b1, a2, b2], alone_ids, strict=True):
        for mine, theirs in zip(events.images[batched], alone_events.images[alone], strict=True):
            assert np.abs(pixels(mine.png) - pixels(theirs.png)).max() <= 2


async def test_a_queued_job_cancelled_before_its_batch_is_left_out(
    make_world: Factory, calls: list[list[int]]
) -> None:
    service, events, _ = make_world(4)
    a1, b1, a2, _b2 = await submit_four(service)
    await service.cancel(b1, BOB)
    await service.run_burst()
    assert calls == [[1, 1], [1]]
    assert ("started", b1) not in events.log
    assert events.log[0] == ("cancelled", b1)
    assert finished(events)[:2] == [a1, a2]


async def test_cancelling_one_job_of_a_running_batch_lets_the_others_finish(
    make_world: Factory,
) -> None:
    service, events, db = make_world(4)
    a1 = (await service.submit(request(seed=1, steps=30), ALICE, HERE)).job.id
    b1 = (await service.submit(request(seed=2, steps=30), BOB, HERE)).job.id
    asked = False

    def cancel_bobs(record: JobRecord, progress: Progress) -> None:
        nonlocal asked
        if record.id == b1 and not asked:
            asked = True
            asyncio.get_running_loop().create_task(service.cancel(b1, BOB))

    events.on_progress_hook = cancel_bobs
    await service.run_burst()
    assert ("cancelled", b1) in events.log
    assert finished(events) == [a1]
    assert len(events.progress[a1]) == 30
    assert len(events.progress[b1]) < 30  # no progress after the cancel
    assert JobStore(db).get(b1).status is JobStatus.CANCELLED
    assert JobStore(db).images(b1) == []


async def test_a_failed_batch_is_retried_one_job_at_a_time(
    make_world: Factory, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, events, _ = make_world(4)
    original = engine.render_batch

    def no_batches(jobs: Sequence[RenderJob], **kwargs: Any) -> list[RenderResult]:
        if len(jobs) > 1:
            raise EngineError("the GPU ran out of memory rendering 2 image(s) at 64x64")
        return original(jobs, **kwargs)

    monkeypatch.setattr(engine, "render_batch", no_batches)
    a1 = (await service.submit(request(seed=1), ALICE, HERE)).job.id
    b1 = (await service.submit(request(seed=2), BOB, HERE)).job.id
    await service.run_burst()
    assert finished(events) == [a1, b1]
    assert [what for what, _ in events.log].count("started") == 2


async def test_stopping_during_a_batch_puts_every_job_back_in_the_queue(
    make_world: Factory,
) -> None:
    service, events, db = make_world(4)
    ids = [
        (await service.submit(request(seed=n, steps=50, width=256, height=256), who, HERE)).job.id
        for n, who in enumerate((ALICE, BOB))
    ]
    service.start()
    async with asyncio.timeout(30):
        while not events.progress:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.005)
    assert service.worker.running_job_ids == tuple(ids)
    await service.stop(grace=0.01)
    assert [JobStore(db).get(i).status for i in ids] == [JobStatus.QUEUED] * 2
    assert "cancelled" not in {what for what, _ in events.log}
