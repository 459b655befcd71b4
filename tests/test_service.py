"""The core service without Discord: accept, queue fairly, render, deliver, cancel, resume."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bot import planning
from bot.config import Settings
from bot.engine import Engine, Progress
from bot.images import read_infotext
from bot.limits import Requester
from bot.queue.events import OutputImage
from bot.request import GenerationRequest, RequestError, validate_request
from bot.service import Destination, ImagineService, NotAllowed, SubmitRefused
from bot.storage import Database, JobRecord, JobStatus, JobStore, prepare_database
from tests.conftest import tiny_settings

ALICE = Requester(user_id=1, guild_id=10)
BOB = Requester(user_id=2, guild_id=10)
HERE = Destination(channel_id=100)


class Recorder:
    """JobEvents that remember what happened, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []
        self.images: dict[int, list[OutputImage]] = {}
        self.reasons: dict[int, str] = {}
        self.progress: dict[int, list[Progress]] = {}
        self.on_progress_hook: Callable[[JobRecord, Progress], None] | None = None

    async def on_started(self, job: JobRecord) -> None:
        self.log.append(("started", job.id))

    async def on_progress(self, job: JobRecord, progress: Progress) -> None:
        self.progress.setdefault(job.id, []).append(progress)
        if self.on_progress_hook is not None:
            self.on_progress_hook(job, progress)

    async def on_finished(self, job: JobRecord, images: list[OutputImage]) -> None:
        self.log.append(("finished", job.id))
        self.images[job.id] = images

    async def on_undelivered(self, job: JobRecord, reason: str) -> None:
        self.log.append(("undelivered", job.id))
        self.reasons[job.id] = reason

    async def on_failed(self, job: JobRecord, reason: str) -> None:
        self.log.append(("failed", job.id))
        self.reasons[job.id] = reason

    async def on_cancelled(self, job: JobRecord) -> None:
        self.log.append(("cancelled", job.id))


def make_settings(tiny_model_dir: Path, tmp_path: Path, **env: str) -> Settings:
    defaults = {
        "ANIMAGINE_DATABASE__URL": f"sqlite:///{tmp_path / 'bot.db'}",
        "ANIMAGINE_LIMITS__TIERS__DEFAULT__BURST": "20",
        "ANIMAGINE_LIMITS__TIERS__DEFAULT__MAX_CONCURRENT_JOBS": "10",
    }
    return tiny_settings(tiny_model_dir, **{**defaults, **env})


@pytest.fixture
async def world(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> AsyncIterator[tuple[ImagineService, Recorder, Database]]:
    settings = make_settings(tiny_model_dir, tmp_path)
    db = prepare_database(settings)
    events = Recorder()
    service = ImagineService(settings, db, engine, events)
    yield service, events, db
    await service.stop(grace=5)
    db.close()


def request(**changes: Any) -> GenerationRequest:
    base: dict[str, Any] = {"prompt": "1girl, solo", "width": 64, "height": 64, "steps": 2}
    return GenerationRequest(**{**base, **changes})


async def test_accepted_job_is_written_before_it_is_queued_and_delivers_a_png(
    world: tuple[ImagineService, Recorder, Database],
) -> None:
    service, events, db = world
    submitted = await service.submit(request(seed=5, count=2), ALICE, HERE)
    stored = JobStore(db).get(submitted.job.id)
    assert stored.status is JobStatus.QUEUED
    assert stored.request.seed == 5
    assert submitted.position == 1
    assert submitted.eta_seconds > 0
    assert await service.run_burst() == 1
    assert events.log == [("started", submitted.job.id), ("finished", submitted.job.id)]
    images = events.images[submitted.job.id]
    assert [i.seed for i in images] == [5, 6]
    info = read_infotext(images[1].png)
    assert info is not None
    assert info.params["Seed"] == "6"
    assert info.prompt.startswith("1girl, solo, masterpiece")
    assert JobStore(db).get(submitted.job.id).status is JobStatus.FINISHED
    assert [r.seed for r in JobStore(db).images(submitted.job.id)] == [5, 6]
    assert [p.step for p in events.progress[submitted.job.id]] == [1, 2]


async def test_bad_request_is_refused_before_anything_is_written(
    world: tuple[ImagineService, Recorder, Database],
) -> None:
    service, _, db = world
    with pytest.raises(RequestError, match="steps must be between"):
        await service.submit(request(steps=500), ALICE, HERE)
    assert JobStore(db).queued() == []
    allowance = await service.allowance(ALICE)
    assert allowance.member.available_now == 20


async def test_members_take_turns(world: tuple[ImagineService, Recorder, Database]) -> None:
    service, events, _ = world
    alice = [(await service.submit(request(), ALICE, HERE)).job.id for _ in range(3)]
    bob = (await service.submit(request(), BOB, HERE)).job.id
    assert [(q.job.id, q.position) for q in (await service.status(BOB)).mine] == [(bob, 2)]
    await service.run_burst()
    finished = [job for what, job in events.log if what == "finished"]
    assert finished == [alice[0], bob, alice[1], alice[2]]


async def test_cancel_while_queued_refunds_and_only_the_owner_may(
    world: tuple[ImagineService, Recorder, Database],
) -> None:
    service, events, _ = world
    job = (await service.submit(request(count=3), ALICE, HERE)).job
    assert (await service.allowance(ALICE)).member.available_now == 17
    with pytest.raises(NotAllowed, match="only the member who asked"):
        await service.cancel(job.id, BOB)
    cancelled = await service.cancel(job.id, ALICE)
    assert cancelled.status is JobStatus.CANCELLED
    assert events.log == [("cancelled", job.id)]
    assert (await service.allowance(ALICE)).member.available_now == 20
    assert await service.run_burst() == 0
    with pytest.raises(NotAllowed, match="already cancelled"):
        await service.cancel(job.id, ALICE)


async def test_cancel_while_running_stops_the_job(
    world: tuple[ImagineService, Recorder, Database],
) -> None:
    service, events, db = world
    job = (await service.submit(request(steps=30, width=128, height=128), ALICE, HERE)).job
    asked = False

    def cancel_at_step_2(record: JobRecord, progress: Progress) -> None:
        nonlocal asked
        if progress.step >= 2 and not asked:
            asked = True
            asyncio.get_running_loop().create_task(service.cancel(record.id, BOB, moderator=True))

    events.on_progress_hook = cancel_at_step_2
    await service.run_burst()
    assert events.log == [("started", job.id), ("cancelled", job.id)]
    assert JobStore(db).get(job.id).status is JobStatus.CANCELLED
    assert len(events.progress[job.id]) < 30


async def test_limits_refusal_says_which_limit(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> None:
    settings = make_settings(tiny_model_dir, tmp_path, ANIMAGINE_LIMITS__TIERS__DEFAULT__BURST="2")
    db = prepare_database(settings)
    service = ImagineService(settings, db, engine, Recorder())
    try:
        await service.submit(request(count=2), ALICE, HERE)
        with pytest.raises(SubmitRefused) as info:
            await service.submit(request(), ALICE, HERE)
        refusal = info.value.refusal
        assert refusal is not None
        assert refusal.limit == "rate"
        assert refusal.retry_at_unix is not None
        assert len(JobStore(db).queued()) == 1
    finally:
        db.close()


async def test_queue_full_is_refused_without_charging(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> None:
    settings = make_settings(tiny_model_dir, tmp_path, ANIMAGINE_QUEUE__MAX_LENGTH="1")
    db = prepare_database(settings)
    service = ImagineService(settings, db, engine, Recorder())
    try:
        await service.submit(request(), ALICE, HERE)
        with pytest.raises(SubmitRefused, match="the queue is full"):
            await service.submit(request(), BOB, HERE)
        assert (await service.allowance(BOB)).member.available_now == 20
    finally:
        db.close()


async def test_restart_resumes_the_interrupted_job_first_then_the_queue(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> None:
    settings = make_settings(tiny_model_dir, tmp_path)
    db = prepare_database(settings)
    first = ImagineService(settings, db, engine, Recorder())
    ids = [(await first.submit(request(), who, HERE)).job.id for who in (ALICE, ALICE, BOB)]
    JobStore(db).mark_started(ids[1])  # the process died while rendering this one
    db.close()

    db = prepare_database(settings)
    events = Recorder()
    second = ImagineService(settings, db, engine, events)
    try:
        assert await second.restore() == 3
        await second.run_burst()
        assert [job for what, job in events.log if what == "finished"] == [ids[1], ids[0], ids[2]]
    finally:
        db.close()


async def test_a_stuck_job_times_out_fails_and_is_refunded(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> None:
    settings = make_settings(tiny_model_dir, tmp_path, ANIMAGINE_QUEUE__JOB_TIMEOUT_S="0.2")
    db = prepare_database(settings)
    events = Recorder()
    service = ImagineService(settings, db, engine, events)
    try:
        job = (await service.submit(request(steps=50, width=256, height=256), ALICE, HERE)).job
        await service.run_burst()
        assert events.log[-1] == ("failed", job.id)
        assert "longer than 0.2 s" in events.reasons[job.id]
        assert JobStore(db).get(job.id).refunded_at is not None
        assert (await service.allowance(ALICE)).member.available_now == 20
    finally:
        db.close()


async def test_background_worker_runs_jobs_and_stops_gracefully(
    world: tuple[ImagineService, Recorder, Database],
) -> None:
    service, events, _ = world
    service.start()
    job = (await service.submit(request(), ALICE, HERE)).job
    for _ in range(200):
        if ("finished", job.id) in events.log:
            break
        await asyncio.sleep(0.05)
    assert ("finished", job.id) in events.log
    await service.stop(grace=5)
    with pytest.raises(SubmitRefused, match="restarting"):
        await service.submit(request(), ALICE, HERE)


async def test_etas_after_a_restart_come_from_measured_job_times(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> None:
    settings = make_settings(tiny_model_dir, tmp_path, ANIMAGINE_QUEUE__INITIAL_STEP_SECONDS="600")
    db = prepare_database(settings)
    first = ImagineService(settings, db, engine, Recorder())
    await first.submit(request(width=256, height=256), ALICE, HERE)
    await first.run_burst()
    measured = first.worker.durations.seconds_per_unit
    assert measured < 100
    db.close()

    db = prepare_database(settings)
    second = ImagineService(settings, db, engine, Recorder())
    try:
        await second.restore()
        assert second.worker.durations.seconds_per_unit < 100
        submitted = await second.submit(request(width=256, height=256), BOB, HERE)
        assert submitted.eta_seconds < 60
    finally:
        db.close()


async def test_jobs_wait_for_the_warm_up_and_commands_are_answered_meanwhile(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch

    from bot.engine.optimize import set_attention_backend

    settings = make_settings(
        tiny_model_dir,
        tmp_path,
        ANIMAGINE_ENGINE__SPEED__APPLY_ON_CPU="true",
        ANIMAGINE_ENGINE__SPEED__COMPILE_BACKEND="eager",
        ANIMAGINE_ENGINE__SPEED__COMPILE_VAE="false",
        ANIMAGINE_ENGINE__SPEED__WARMUP_SIZES='["64x64"]',
    )
    compiled = Engine.load(settings)
    assert compiled.optimizations.compiled
    db = prepare_database(settings)
    events = Recorder()
    service = ImagineService(settings, db, compiled, events)
    try:
        service.start()
        assert service.warming_up
        job = (await service.submit(request(), ALICE, HERE)).job  # accepted during warm-up
        status = await service.status(ALICE)
        assert status.mine[0].job.id == job.id
        assert status.warming_up
        for _ in range(600):
            if ("finished", job.id) in events.log:
                break
            await asyncio.sleep(0.05)
        assert not service.warming_up
        assert ("finished", job.id) in events.log
    finally:
        await service.stop(grace=5)
        db.close()
        torch.compiler.set_stance("default")
        torch._dynamo.reset()
        set_attention_backend("auto")


async def test_a_prompt_too_long_is_refused_before_it_is_queued(
    world: tuple[ImagineService, Recorder, Database],
) -> None:
    from bot.prompts import PromptError

    service, _, db = world
    long_prompt = ", ".join(f"tag {i}" for i in range(400))
    with pytest.raises(PromptError, match="chunks of 75 tokens; the limit is 8"):
        await service.submit(request(prompt=long_prompt), ALICE, HERE)
    assert JobStore(db).queued() == []
    assert (await service.allowance(ALICE)).member.available_now == 20


async def test_a_job_is_planned_once_when_accepted_and_the_adapters_plan_is_reused(
    world: tuple[ImagineService, Recorder, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, events, db = world
    builds: list[str] = []
    build_for = planning.build_for

    def counted(request: GenerationRequest, *args: Any, **kwargs: Any) -> Any:
        builds.append(request.prompt)
        return build_for(request, *args, **kwargs)

    monkeypatch.setattr("bot.planning.build_for", counted)
    spec = planning.plan_job(
        validate_request(request(seed=3), service.settings.engine), service.settings, HERE.channel
    )
    assert builds == ["1girl, solo"]
    reused = (await service.submit(request(seed=3), ALICE, HERE, planned=spec)).job
    assert JobStore(db).get(reused.id).spec == spec
    # A plan made for another channel is not trusted: planned again, once.
    other = Destination(channel_id=100, age_restricted=True)
    replanned = (await service.submit(request(seed=3), BOB, other, planned=spec)).job
    assert JobStore(db).get(replanned.id).channel.age_restricted
    fresh = (await service.submit(request(prompt="1boy"), ALICE, HERE)).job
    assert builds == ["1girl, solo", "1girl, solo", "1boy"]
    await service.run_burst()  # rendered from the stored plans: nothing built again
    assert builds == ["1girl, solo", "1girl, solo", "1boy"]
    assert [job for what, job in events.log if what == "finished"] == [
        reused.id,
        replanned.id,
        fresh.id,
    ]


async def test_a_job_queued_before_plans_were_stored_is_planned_once_on_first_use(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> None:
    settings = make_settings(tiny_model_dir, tmp_path)
    db = prepare_database(settings)
    first = ImagineService(settings, db, engine, Recorder())
    job = (await first.submit(request(seed=11, count=2), ALICE, HERE)).job
    planned = JobStore(db).get(job.id).plan
    assert planned is not None
    with db.transaction() as session:  # as the migration leaves a row queued before it
        session.execute(text("UPDATE jobs SET plan = NULL"))
    db.close()

    db = prepare_database(settings)
    events = Recorder()
    second = ImagineService(settings, db, engine, events)
    try:
        assert JobStore(db).get(job.id).plan is None
        assert await second.restore() == 1
        await second.run_burst()
        assert events.log[-1] == ("finished", job.id)
        assert JobStore(db).get(job.id).plan == planned
        assert [image.seed for image in events.images[job.id]] == [11, 12]
    finally:
        db.close()
