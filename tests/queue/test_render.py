"""Which waiting jobs the renderer takes into the next job's micro-batch (nothing renders)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.engine import Engine
from bot.limits import Requester
from bot.queue.render import stored_batch_shape
from bot.request import HiresOptions
from bot.service import ImagineService
from bot.storage import Database, JobStore, prepare_database
from tests.test_service import HERE, Recorder, make_settings, request

ALICE = Requester(user_id=1, guild_id=10)
BOB = Requester(user_id=2, guild_id=10)
CAROL = Requester(user_id=3, guild_id=10)

Factory = Callable[..., ImagineService]


@pytest.fixture
async def make_service(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> AsyncIterator[Factory]:
    opened: list[tuple[ImagineService, Database]] = []

    def factory(images: int = 4, window: int = 4) -> ImagineService:
        settings = make_settings(
            tiny_model_dir,
            tmp_path,
            ANIMAGINE_QUEUE__MICRO_BATCH_IMAGES=str(images),
            ANIMAGINE_QUEUE__MICRO_BATCH_WINDOW=str(window),
        )
        db = prepare_database(settings)
        service = ImagineService(settings, db, engine, Recorder())
        opened.append((service, db))
        return service

    yield factory
    for service, db in opened:
        await service.stop(grace=5)
        db.close()


async def submit(service: ImagineService, who: Requester, **changes: Any) -> int:
    return (await service.submit(request(**changes), who, HERE)).job.id


async def taken(service: ImagineService) -> tuple[int, list[int]]:
    """Take the next job as the worker does; (its id, the ids batched with it)."""
    entry = service.queue.get_nowait()
    assert entry is not None
    companions = await service.worker.renderer.take_compatible(entry)
    return entry.job_id, [c.job_id for c in companions]


def waiting(service: ImagineService) -> list[int]:
    return [e.job_id for e in service.queue.order()]


async def test_only_jobs_within_the_window_of_the_fair_order_join(make_service: Factory) -> None:
    service = make_service(images=8, window=2)
    a1, a2 = await submit(service, ALICE), await submit(service, ALICE)
    b1, c1 = await submit(service, BOB), await submit(service, CAROL)
    assert waiting(service) == [a1, b1, c1, a2]
    # a2 is compatible too, but three places behind: it keeps its turn.
    assert await taken(service) == (a1, [b1, c1])
    assert waiting(service) == [a2]


async def test_incompatible_jobs_keep_their_place_and_images_stay_within_the_limit(
    make_service: Factory,
) -> None:
    service = make_service(images=4, window=4)
    a1 = await submit(service, ALICE, count=2)
    b1 = await submit(service, BOB, count=3)  # does not fit beside a1's two images
    a2 = await submit(service, ALICE, steps=3)  # other steps
    c1 = await submit(service, CAROL, prompt="1boy, " * 30)  # other prompt length: fine
    b2 = await submit(service, BOB)
    assert waiting(service) == [a1, b1, c1, a2, b2]
    assert await taken(service) == (a1, [c1, b2])
    assert waiting(service) == [b1, a2]


async def test_a_job_cancelled_while_it_waits_is_never_batched(make_service: Factory) -> None:
    service = make_service()
    a1, b1, c1 = [await submit(service, who) for who in (ALICE, BOB, CAROL)]
    await service.cancel(b1, BOB)
    # Cancelled in the database but still in the queue (the cancel raced the worker).
    JobStore(service.db).mark_cancelled(c1, "cancelled")
    assert await taken(service) == (a1, [])


async def test_micro_batching_off_takes_nothing(make_service: Factory) -> None:
    service = make_service(images=1)
    a1, b1 = await submit(service, ALICE), await submit(service, BOB)
    assert await taken(service) == (a1, [])
    assert waiting(service) == [b1]


async def test_batch_shape_reads_size_steps_cfg_sampler_and_hires_not_prompts(
    make_service: Factory,
) -> None:
    service = make_service()
    store = JobStore(service.db)

    async def shape(**changes: Any) -> Any:
        return stored_batch_shape(store.get(await submit(service, ALICE, **changes)))

    base = await shape()
    assert base is not None
    assert base[1] == 1
    assert (await shape(prompt="1boy, solo, " * 20, seed=9))[0] == base[0]
    assert (await shape(count=3))[1] == 3
    for change in (
        {"width": 128},
        {"steps": 3},
        {"cfg": 5.0},
        {"sampler": "DDIM"},
        {"hires": HiresOptions(scale=1.5)},
    ):
        assert (await shape(**change))[0] != base[0], change
    unreadable = dataclasses.replace(store.get(1), request_data={"request": {"width": "wide"}})
    assert stored_batch_shape(unreadable) is None
