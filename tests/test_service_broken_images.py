"""A broken image never reaches a member: the worker fails its job with the reason and
refunds it, through the real service, worker and storage, with a tiny SDXL model whose VAE
is damaged (``tests/support/broken_sdxl.py``); and out-of-range weights are refused before
anything is queued or charged."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.engine import Engine, RenderJob, RenderResult
from bot.request import RequestError
from bot.service import ImagineService
from bot.storage import JobStatus, JobStore, prepare_database
from tests.support.broken_sdxl import Damage, save_broken_model
from tests.test_service import ALICE, HERE, Recorder, make_settings, request


@pytest.mark.parametrize(
    ("damage", "problem"), [("nan", "NaN or infinite"), ("flat", "one flat colour")]
)
async def test_a_broken_image_fails_its_job_and_is_refunded(
    tmp_path: Path, damage: Damage, problem: str
) -> None:
    model = save_broken_model(tmp_path / "broken", damage)
    settings = make_settings(model, tmp_path)
    engine = Engine.load(settings)
    db = prepare_database(settings)
    events = Recorder()
    service = ImagineService(settings, db, engine, events)
    try:
        before = (await service.allowance(ALICE)).member.available_now
        job = (await service.submit(request(count=2), ALICE, HERE)).job
        assert (await service.allowance(ALICE)).member.available_now == before - 2
        await service.run_burst()
        assert events.log == [("started", job.id), ("failed", job.id)]
        assert job.id not in events.images  # nothing delivered, not even one image
        assert events.reasons[job.id].startswith("image 1 of 2 came out broken and was not posted")
        assert problem in events.reasons[job.id]
        stored = JobStore(db).get(job.id)
        assert stored.status is JobStatus.FAILED
        assert stored.refunded_at is not None
        assert JobStore(db).images(job.id) == []
        assert (await service.allowance(ALICE)).member.available_now == before
    finally:
        db.close()


async def test_out_of_range_weights_are_refused_before_queueing(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> None:
    settings = make_settings(tiny_model_dir, tmp_path)
    db = prepare_database(settings)
    service = ImagineService(settings, db, engine, Recorder())
    try:
        for prompt, message in [
            ("(1girl:" + "9" * 400 + ")", r"by a number too large to use \(not finite\)"),
            ("(1girl:70000)", r"weights .1girl. by 7e\+04 \(after nesting\); weights must be"),
            ("(1girl:-2)", "weights '1girl' by -2"),
        ]:
            with pytest.raises(RequestError, match=message):
                await service.submit(request(prompt=prompt), ALICE, HERE)
        with pytest.raises(RequestError, match="the negative prompt weights"):
            await service.submit(request(negative_prompt="(((bad:3)))"), ALICE, HERE)
        for blank in ("\x00", "\x00\x01\x1f", " \t\u200b\x7f "):
            with pytest.raises(RequestError, match="the prompt is empty"):
                await service.submit(request(prompt=blank), ALICE, HERE)
        assert JobStore(db).active() == []  # nothing queued, nothing charged
        fine = await service.submit(request(prompt="(1girl:1.4), ((smile)), [blush]"), ALICE, HERE)
        assert fine.job.status is JobStatus.QUEUED
    finally:
        db.close()


async def test_in_a_micro_batch_each_job_with_a_broken_image_fails_and_is_refunded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = save_broken_model(tmp_path / "broken", "nan")
    settings = make_settings(
        model,
        tmp_path,
        ANIMAGINE_QUEUE__MICRO_BATCH_IMAGES="4",
        ANIMAGINE_QUEUE__MICRO_BATCH_WINDOW="4",
    )
    engine = Engine.load(settings)
    db = prepare_database(settings)
    events = Recorder()
    service = ImagineService(settings, db, engine, events)
    calls: list[int] = []
    original = engine.render_batch

    def counting(jobs: Sequence[RenderJob], **options: Any) -> list[RenderResult]:
        calls.append(len(jobs))
        return original(jobs, **options)

    monkeypatch.setattr(engine, "render_batch", counting)
    try:
        jobs = [
            (await service.submit(request(prompt=f"1girl, {n}"), ALICE, HERE)).job
            for n in ("a", "b")
        ]
        await service.run_burst()
        assert calls == [2]  # one call for both: each failed on its own result
        for job in jobs:
            assert ("failed", job.id) in events.log
            assert events.reasons[job.id].startswith("the image came out broken")
            assert JobStore(db).get(job.id).refunded_at is not None
        assert events.images == {}
    finally:
        db.close()
