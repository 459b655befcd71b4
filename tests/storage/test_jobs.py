"""The job repository: queue order, status changes with their times, images."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bot.engine.job import RenderJob
from bot.jobspec import JobSpec, StoredPlan
from bot.moderation import ChannelContext
from bot.request import GenerationRequest, HiresOptions
from bot.shape import JobShape
from bot.storage import (
    Database,
    JobNotFoundError,
    JobStateError,
    JobStatus,
    JobStore,
    NewJob,
)
from tests.storage.fakes import START, FakeClock


@pytest.fixture
def store(db: Database, clock: FakeClock) -> JobStore:
    return JobStore(db, clock=clock)


def _spec(*, planned: bool = True) -> JobSpec:
    request = GenerationRequest(
        prompt="1girl, smile", negative_prompt="lowres", seed=7, count=2, hires=HiresOptions()
    )
    render = RenderJob(
        "1girl, smile, masterpiece",
        "lowres, bad anatomy",
        896,
        1152,
        28,
        7.0,
        "Euler a",
        (7, 8),
        HiresOptions(),
        (("Quality preset", "Standard v3.1"), ("Rating", "safe")),
    )
    plan = StoredPlan(render=render, rating="safe") if planned else None
    return JobSpec(request=request, channel=ChannelContext(True, is_thread=True), plan=plan)


def test_the_job_spec_is_kept_and_read_back_typed(store: JobStore) -> None:
    spec = _spec()
    job = store.add(NewJob.of(spec, channel_id=20, interaction_token="tok"), user_id=1, guild_id=10)
    store.set_message(job.id, 30)
    again = store.get(job.id)
    assert again.spec == spec
    assert again.request == spec.request
    assert again.channel == ChannelContext(True, is_thread=True)
    assert again.plan == spec.plan
    assert again.plan is not None
    assert again.plan.render.seeds == (7, 8)
    assert again.plan.render.hires == HiresOptions()
    assert again.spec.shape == spec.plan.render.shape
    assert (again.guild_id, again.channel_id, again.user_id, again.message_id) == (10, 20, 1, 30)
    assert again.interaction_token == "tok"
    assert again.status is JobStatus.QUEUED
    assert again.queued_at == START
    assert "tok" not in repr(again)


def test_a_job_without_a_plan_is_planned_once_and_keeps_its_request(store: JobStore) -> None:
    unplanned = _spec(planned=False)
    job = store.add(NewJob.of(unplanned), user_id=1)
    assert job.plan is None
    # Its shape comes from the request until it is planned.
    assert job.spec.shape == JobShape(
        count=2, width=896, height=1152, hires=True, hires_scale=1.5, hires_strength=0.55
    )
    planned = store.set_plan(job.id, _spec())
    assert planned.plan == _spec().plan
    assert store.get(job.id).spec == _spec()


def test_jobs_run_in_the_order_they_were_queued(store: JobStore) -> None:
    ids = [store.add(NewJob({"n": n}), user_id=n).id for n in range(5)]
    assert [j.id for j in store.queued()] == ids
    store.mark_started(ids[0])
    assert [j.id for j in store.queued()] == ids[1:]
    assert store.queued()[1].id == ids[2]
    assert [j.id for j in store.active()] == ids


def test_status_changes_record_their_times(store: JobStore, clock: FakeClock) -> None:
    first = store.add(NewJob({}), user_id=1)
    t_start = clock.advance(5)
    running = store.mark_started(first.id)
    assert running.status is JobStatus.RUNNING
    assert running.started_at == t_start
    t_end = clock.advance(20)
    done = store.mark_finished(first.id)
    assert done.status is JobStatus.FINISHED
    assert done.finished_at == t_end

    second = store.add(NewJob({}), user_id=1)
    failed = store.mark_failed(second.id, "CUDA out of memory")
    assert failed.status is JobStatus.FAILED
    assert failed.failure_reason == "CUDA out of memory"
    assert failed.failed_at == clock.now

    third = store.add(NewJob({}), user_id=1)
    cancelled = store.mark_cancelled(third.id, "cancelled by the member")
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.cancelled_at == clock.now


def test_impossible_transitions_are_refused(store: JobStore) -> None:
    job = store.add(NewJob({}), user_id=1)
    with pytest.raises(JobStateError, match="queued"):
        store.mark_finished(job.id)
    store.mark_cancelled(job.id)
    with pytest.raises(JobStateError, match="cancelled"):
        store.mark_started(job.id)
    with pytest.raises(JobNotFoundError):
        store.mark_started(9999)


def test_images_are_stored_in_order(store: JobStore) -> None:
    job = store.add(NewJob({}), user_id=1)
    for index in (1, 0):
        store.add_image(
            job.id,
            index=index,
            seed=2**40 + index,
            width=896,
            height=1152,
            content_hash=f"{index:064x}",
            moderation_scores={"nsfw": 0.01 * index},
        )
    images = store.images(job.id)
    assert [i.index for i in images] == [0, 1]
    assert images[1].seed == 2**40 + 1
    assert images[1].moderation_scores == {"nsfw": 0.01}
    assert (images[0].width, images[0].height) == (896, 1152)


def test_message_id_can_be_set_later(store: JobStore) -> None:
    job = store.add(NewJob({}), user_id=1)
    store.set_message(job.id, 12345)
    assert store.get(job.id).message_id == 12345


async def test_store_is_usable_from_the_event_loop(db: Database, store: JobStore) -> None:
    job = await db.run(store.add, NewJob({"prompt": "x"}), user_id=7)
    started = await db.run(store.mark_started, job.id)
    assert started.status is JobStatus.RUNNING


def test_interrupted_running_jobs_go_back_to_the_queue_in_order(store: JobStore) -> None:
    first, second, third = (store.add(NewJob({"n": n}), user_id=n).id for n in range(3))
    store.mark_started(first)
    store.mark_started(second)
    resumed = store.requeue_interrupted()
    assert [j.id for j in resumed] == [first, second]
    assert all(j.status is JobStatus.QUEUED and j.started_at is None for j in resumed)
    assert [j.id for j in store.queued()] == [first, second, third]
    assert store.requeue_interrupted() == []


def test_requeue_puts_one_running_job_back(store: JobStore) -> None:
    job = store.add(NewJob({"n": 1}), user_id=1).id
    with pytest.raises(JobStateError):
        store.requeue(job)
    store.mark_started(job)
    assert store.requeue(job).status is JobStatus.QUEUED
    assert [j.id for j in store.queued()] == [job]


def test_the_stored_job_and_its_storage_import_no_torch() -> None:
    code = (
        "import sys\n"
        "import bot.jobspec, bot.planning, bot.storage, bot.storage.migrate\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
