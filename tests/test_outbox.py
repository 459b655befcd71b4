"""The outbox (bot.outbox): a finished image is kept until the member has it, delivered again
after failures and restarts, given up on (once, with the member told) after its time, and
removed by retention. The service and the tiny engine are real; the adapter is a recorder
that refuses deliveries the way the Discord layer reports a Discord outage."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.engine import Engine
from bot.outbox import Outbox, images_folder
from bot.queue.events import Attempt, OutputImage
from bot.service import ImagineService, NotAllowed
from bot.storage import Database, JobRecord, JobStatus, JobStore, prepare_database
from bot.storage.clock import utc_now
from tests.test_service import ALICE, BOB, HERE, Recorder, make_settings, request

FAST = {
    "ANIMAGINE_DELIVERY__RETRY_FIRST_S": "0.1",
    "ANIMAGINE_DELIVERY__RETRY_MAX_S": "0.4",
    # No image classifier here: post unchecked images (fail closed would withhold them,
    # and withheld images are not kept past their delivery).
    "ANIMAGINE_MODERATION__FAIL_CLOSED": "false",
}


class Outage(Recorder):
    """Refuses deliveries (as during a Discord outage) until :attr:`down` is cleared."""

    def __init__(self, *, posts: int = 1) -> None:
        super().__init__()
        self.down = True
        self.attempts: dict[int, list[int]] = {}  # job id -> delivery_posted at each attempt
        self.posts = posts  # posts a result takes; the first goes out before the outage bites

    async def on_finished(self, job: JobRecord, images: list[OutputImage]) -> Attempt | None:  # type: ignore[override]
        self.attempts.setdefault(job.id, []).append(job.delivery_posted)
        if self.down:
            return Attempt.later("HTTP 503", posted=min(1, self.posts - 1), retry_after=None)
        await super().on_finished(job, images)
        return Attempt.done(self.posts)


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, engine: Engine, events: Recorder, *, start: bool = True, **options: Any
) -> AsyncIterator[tuple[ImagineService, Database]]:
    """A service over a fresh database, restored (and started), stopped on exit."""
    db = prepare_database(settings)
    service = ImagineService(settings, db, engine, events, **options)
    await service.restore()
    if start:
        service.start()
    try:
        yield service, db
    finally:
        await service.stop(grace=5)
        db.close()


def settings_for(tiny_model_dir: Path, tmp_path: Path, **env: str) -> Settings:
    return make_settings(tiny_model_dir, tmp_path, **{**FAST, **env})


async def until(check: object, what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.fixture
def db_and_settings(tiny_model_dir: Path, tmp_path: Path) -> tuple[Settings, Database]:
    settings = settings_for(tiny_model_dir, tmp_path)
    return settings, prepare_database(settings)


async def test_a_result_refused_during_an_outage_is_delivered_once_after_it(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> None:
    settings = settings_for(tiny_model_dir, tmp_path)
    events = Outage(posts=2)
    async with serving(settings, engine, events) as (service, db):
        job = (await service.submit(request(seed=3, count=2), ALICE, HERE)).job
        store = JobStore(db)
        await until(lambda: len(events.attempts.get(job.id, [])) >= 3, "three attempts")
        row = store.get(job.id)
        assert row.status is JobStatus.FINISHED
        assert row.delivery == "pending"
        assert row.delivery_attempts >= 2
        assert row.delivery_posted == 1  # the post that went out is not posted again
        folder = images_folder(settings)
        assert sorted(p.name for p in (folder / str(job.id)).iterdir()) == ["0.png", "1.png"]
        events.down = False
        await until(lambda: store.get(job.id).delivery == "delivered", "the delivery")
        await asyncio.sleep(0.5)  # no attempt after it
        assert events.log.count(("finished", job.id)) == 1
        row = store.get(job.id)
        assert row.delivery == "delivered"
        assert row.delivered_at is not None
        assert row.interaction_token is None
        # Each retry skipped the post that was out.
        assert events.attempts[job.id][0] == 0
        assert set(events.attempts[job.id][1:]) == {1}
        images = events.images[job.id]
        assert [i.seed for i in images] == [3, 4]
        assert images[0].png == (folder / str(job.id) / "0.png").read_bytes()


async def test_a_pending_delivery_resumes_after_a_restart_from_the_kept_files(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> None:
    settings = settings_for(tiny_model_dir, tmp_path)
    db = prepare_database(settings)
    down = Outage()
    service = ImagineService(settings, db, engine, down)
    await service.restore()
    service.start()
    job = (await service.submit(request(seed=9), ALICE, HERE)).job
    await until(lambda: len(down.attempts.get(job.id, [])) >= 1, "the first attempt")
    first = (images_folder(settings) / str(job.id) / "0.png").read_bytes()
    await service.stop(grace=5)
    assert JobStore(db).get(job.id).delivery == "pending"
    # A new process: the same database and folder; Discord is back.
    up = Recorder()
    again = ImagineService(settings, db, engine, up)
    try:
        await again.restore()
        again.start()
        await until(
            lambda: JobStore(db).get(job.id).delivery == "delivered",
            "the delivery after the restart",
        )
        assert up.images[job.id][0].png == first
        assert up.images[job.id][0].seed == 9
        assert up.images[job.id][0].verdict.posted
        assert [kind for kind, _ in up.log] == ["finished"]  # not rendered again
    finally:
        await again.stop(grace=5)
        db.close()


async def test_after_its_time_the_member_is_told_once_and_can_fetch_the_images(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> None:
    settings = settings_for(tiny_model_dir, tmp_path, ANIMAGINE_DELIVERY__RETRY_HOURS="0.0004")
    events = Outage()
    async with serving(settings, engine, events) as (service, db):
        job = (await service.submit(request(seed=5), ALICE, HERE)).job
        await until(lambda: ("undelivered", job.id) in events.log, "the delivery to expire")
        await asyncio.sleep(0.6)
        assert events.log.count(("undelivered", job.id)) == 1
        assert events.reasons[job.id] == "HTTP 503"
        row = JobStore(db).get(job.id)
        assert row.delivery == "expired"
        assert row.delivery_error == "HTTP 503"
        attempts = len(events.attempts[job.id])
        assert attempts >= 3
        await asyncio.sleep(0.6)
        assert len(events.attempts[job.id]) == attempts  # no attempt after it expired
        # Still kept: the member fetches them; nobody else can.
        fetched, images = await service.kept_images(ALICE, job.id)
        assert fetched.id == job.id
        assert [i.seed for i in images] == [5]
        assert images[0].png.startswith(b"\x89PNG")
        latest, _ = await service.kept_images(ALICE)
        assert latest.id == job.id
        with pytest.raises(NotAllowed, match="not one of yours"):
            await service.kept_images(BOB, job.id)


async def test_retention_removes_old_images_then_the_oldest_over_the_cap(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> None:
    settings = settings_for(tiny_model_dir, tmp_path, ANIMAGINE_DELIVERY__KEEP_DAYS="2")
    events = Recorder()
    async with serving(settings, engine, events, start=False) as (service, db):
        jobs = [(await service.submit(request(seed=i), ALICE, HERE)).job for i in range(3)]
        await service.run_burst()
        store = JobStore(db)
        sizes = [store.images(j.id)[0].stored_bytes for j in jobs]
        assert all(size > 0 for size in sizes)
        outbox = service.outbox
        assert await outbox.retention_once() == 0
        # Over the size cap: the oldest go first until the rest fit.
        outbox.settings = outbox.settings.model_copy(update={"keep_mib": 1})
        cap = 1024 * 1024
        if sum(sizes) <= cap:  # tiny PNGs: make the cap bite by pretending they are large
            for job in jobs:
                image = store.images(job.id)[0]
                store.set_stored(image.id, cap // 2 + 1)
        assert await outbox.retention_once() == 2
        kept = [store.images(j.id)[0].stored_bytes > 0 for j in jobs]
        assert kept == [False, False, True]
        assert not (images_folder(settings) / str(jobs[0].id)).exists()
        with pytest.raises(NotAllowed, match="no longer kept"):
            await service.kept_images(ALICE, jobs[0].id)
        # Past keep_days: the last one goes too.
        later = utc_now() + timedelta(days=3)
        assert await outbox.retention_once(now=later) == 1
        with pytest.raises(NotAllowed, match="no finished job whose images are still kept"):
            await service.kept_images(ALICE)


async def test_a_pending_delivery_is_never_removed_by_retention(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> None:
    settings = settings_for(tiny_model_dir, tmp_path, ANIMAGINE_DELIVERY__KEEP_DAYS="1")
    events = Outage()
    async with serving(settings, engine, events) as (service, db):
        job = (await service.submit(request(seed=2), ALICE, HERE)).job
        await until(lambda: len(events.attempts.get(job.id, [])) >= 1, "an attempt")
        assert await service.outbox.retention_once(now=utc_now() + timedelta(days=30)) == 0
        assert JobStore(db).images(job.id)[0].stored_bytes > 0


async def test_a_disk_that_refuses_the_files_still_delivers_from_memory(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the images folder should be", encoding="utf-8")
    settings = settings_for(
        tiny_model_dir, tmp_path, ANIMAGINE_DELIVERY__IMAGES_DIR=str(blocked / "images")
    )
    events = Outage()
    async with serving(settings, engine, events) as (service, db):
        job = (await service.submit(request(seed=8), ALICE, HERE)).job
        await until(lambda: len(events.attempts.get(job.id, [])) >= 2, "a retry")
        assert "cannot keep its images" in caplog.text
        events.down = False
        await until(lambda: JobStore(db).get(job.id).delivery == "delivered", "the delivery")
        assert [i.seed for i in events.images[job.id]] == [8]


def test_backoff_doubles_with_jitter_up_to_its_cap_and_waits_for_retry_after(
    db_and_settings: tuple[Settings, Database],
) -> None:
    settings, db = db_and_settings
    outbox = Outbox(settings, db, JobStore(db), Recorder(), rng=random.Random(7))  # type: ignore[arg-type]
    first, cap = settings.delivery.retry_first_s, settings.delivery.retry_max_s
    for attempt in range(1, 12):
        ceiling = min(cap, first * 2 ** (attempt - 1))
        delays = [outbox.backoff(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert outbox.backoff(1, retry_after=30.0) == 30.0
    db.close()


def test_the_default_schedule_tries_for_six_hours(
    db_and_settings: tuple[Settings, Database],
) -> None:
    settings, db = db_and_settings
    defaults = settings.model_copy(update={"delivery": type(settings.delivery)()})
    outbox = Outbox(defaults, db, JobStore(db), Recorder())  # type: ignore[arg-type]
    times = outbox.schedule()
    assert times[-1] == 6 * 3600
    assert times[:3] == [2.0, 6.0, 14.0]
    assert all(b - a <= 300.0 for a, b in itertools.pairwise(times))
    db.close()


async def test_withheld_images_are_not_kept_once_the_delivery_is_settled(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> None:
    # No classifier and fail_closed (the default): plain-channel images are withheld.
    settings = make_settings(
        tiny_model_dir, tmp_path, **{k: v for k, v in FAST.items() if "FAIL" not in k}
    )
    events = Recorder()
    async with serving(settings, engine, events, start=False) as (service, db):
        job = (await service.submit(request(seed=1), ALICE, HERE)).job
        await service.run_burst()
        assert events.images[job.id][0].withheld
        assert JobStore(db).get(job.id).delivery == "delivered"
        assert JobStore(db).images(job.id)[0].stored_bytes == 0
        assert not (images_folder(settings) / str(job.id)).exists()
        _, visible = await service.kept_images(ALICE, job.id)
        assert visible == []


class BrokenTagger:
    """An image classifier whose thread dies on every image until it is fixed."""

    problem = None

    def __init__(self) -> None:
        self.broken = True

    def rate(self, image: object) -> object:
        if self.broken:
            raise RuntimeError("the tagger's session died")
        from bot.moderation import RatingScores

        return RatingScores(general=0.99, sensitive=0.0, questionable=0.0, explicit=0.0)


async def test_a_classifier_that_breaks_fails_the_job_with_a_refund_and_the_bot_goes_on(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> None:
    # fail_closed (the default): unrated images are withheld in a plain channel
    settings = make_settings(tiny_model_dir, tmp_path)
    events = Recorder()
    tagger = BrokenTagger()
    async with serving(settings, engine, events, classifier=tagger, start=False) as (service, db):  # type: ignore[arg-type]
        job = (await service.submit(request(seed=1), ALICE, HERE)).job
        await service.run_burst()
        row = JobStore(db).get(job.id)
        assert row.status is JobStatus.FAILED
        assert row.refunded_at is not None
        assert "the image check broke down" in events.reasons[job.id]
        assert "the tagger's session died" in events.reasons[job.id]
        assert ("finished", job.id) not in events.log
        tagger.broken = False  # it comes back: the next job is served as usual
        after = (await service.submit(request(seed=2), ALICE, HERE)).job
        await service.run_burst()
        assert ("finished", after.id) in events.log
        assert JobStore(db).get(after.id).delivery == "delivered"


async def test_a_database_that_refuses_the_result_leaves_the_job_running_for_the_next_start(
    tiny_model_dir: Path,
    tmp_path: Path,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from bot.storage import DatabaseError

    settings = settings_for(tiny_model_dir, tmp_path)
    db = prepare_database(settings)
    events = Recorder()
    service = ImagineService(settings, db, engine, events)
    await service.restore()

    def locked(*_args: object, **_kwargs: object) -> JobRecord:
        raise DatabaseError("bot.db", "database is locked")

    monkeypatch.setattr(service.jobs, "mark_finished", locked)
    monkeypatch.setattr("bot.queue.render._FINISH_TRIES", 2)
    try:
        job = (await service.submit(request(seed=3), ALICE, HERE)).job
        await service.run_burst()
        assert "its result could not be recorded (database bot.db: database is locked)" in (
            caplog.text
        )
        assert JobStore(db).get(job.id).status is JobStatus.RUNNING  # kept, not dropped
    finally:
        await service.stop(grace=5)
    monkeypatch.undo()
    # The next start renders it again and delivers it.
    again = Recorder()
    service = ImagineService(settings, db, engine, again)
    try:
        assert await service.restore() == 1
        await service.run_burst()
        assert ("finished", job.id) in again.log
        assert JobStore(db).get(job.id).status is JobStatus.FINISHED
    finally:
        await service.stop(grace=5)
        db.close()


def test_input_images_are_stored_by_content_and_never_by_path(tmp_path: Path) -> None:
    from bot.outbox import ImageVault

    vault = ImageVault(tmp_path / "images")
    name = vault.keep_input(b"\x89PNG one")
    assert vault.keep_input(b"\x89PNG one") == name  # the same image: one file
    assert vault.read_input(name) == b"\x89PNG one"
    assert [n for n, _ in vault.input_names()] == [name]
    with pytest.raises(ValueError, match="not an input image name"):
        vault.input_path("../../bot.db")
    assert vault.read_input("../x.png") is None


async def test_retention_keeps_inputs_a_job_needs_and_removes_old_unused_ones(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> None:
    from bot.request import ImagePrompt

    settings = settings_for(tiny_model_dir, tmp_path, ANIMAGINE_DELIVERY__KEEP_DAYS="1")
    async with serving(settings, engine, Recorder(), start=False) as (service, db):
        vault = service.outbox.vault
        used = vault.keep_input(b"\x89PNG used")
        unused = vault.keep_input(b"\x89PNG unused")
        queued = request(seed=3).model_copy(
            update={"image": ImagePrompt(source=used, strength=0.4)}
        )
        await service.submit(queued, ALICE, HERE)
        assert JobStore(db).input_images_in_use() == {used}
        later = utc_now() + timedelta(days=2)
        assert await service.outbox.inputs_retention_once(now=utc_now()) == 0  # fresh
        assert await service.outbox.inputs_retention_once(now=later) == 1
        assert vault.read_input(used) is not None
        assert vault.read_input(unused) is None
