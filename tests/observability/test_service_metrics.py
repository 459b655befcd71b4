"""The core's telemetry counted in a real registry: outcomes, histograms, refusals, labels."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.engine import Engine
from bot.limits import Requester
from bot.observability.metrics import Metrics
from bot.observability.telemetry import Telemetry, size_label
from bot.service import Destination, ImagineService, SubmitRefused
from bot.storage import Database, prepare_database
from tests.test_service import Recorder, make_settings, request

# Ids and words that must never become a label value (nor appear in the exposition).
USER_ID = 918_273_645_501
GUILD_ID = 192_837_465_502
CHANNEL_ID = 564_738_291_503
WHO = Requester(user_id=USER_ID, guild_id=GUILD_ID)
HERE = Destination(channel_id=CHANNEL_ID)
PROMPT = "zyxwv_marmalade_lighthouse, 1girl"


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
async def world(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> AsyncIterator[tuple[ImagineService, Metrics, Database]]:
    # No classifier and fail closed: every image in a plain channel is withheld.
    settings = make_settings(
        tiny_model_dir,
        tmp_path,
        ANIMAGINE_MODERATION__CLASSIFIER__SOURCE="",
        ANIMAGINE_MODERATION__FAIL_CLOSED="true",
        ANIMAGINE_LIMITS__TIERS__DEFAULT__BURST="2",
    )
    db = prepare_database(settings)
    metrics = Metrics()
    service = ImagineService(settings, db, engine, Recorder(), telemetry=Telemetry(metrics))
    yield service, metrics, db
    await service.stop(grace=5)
    db.close()


async def test_a_job_and_refusals_are_counted_with_bounded_labels(
    world: tuple[ImagineService, Metrics, Database], caplog: pytest.LogCaptureFixture
) -> None:
    service, metrics, _ = world
    caplog.set_level(logging.INFO, logger="bot.jobs")
    before = samples(metrics)
    assert before[("animagine_jobs_total", (("outcome", "finished"),))] == 0

    await service.submit(request(prompt=PROMPT, width=64, height=64, steps=1), WHO, HERE)
    with pytest.raises(SubmitRefused):
        await service.submit(request(prompt=PROMPT, rating="explicit"), WHO, HERE)
    await service.submit(request(prompt=PROMPT), WHO, HERE)
    with pytest.raises(SubmitRefused):  # the burst of 2 is spent
        await service.submit(request(prompt=PROMPT), WHO, HERE)
    assert await service.run_burst() == 2

    after = samples(metrics)
    assert after[("animagine_jobs_total", (("outcome", "finished"),))] == 2
    assert after[("animagine_prompts_refused_total", (("reason", "rating"),))] == 1
    assert after[("animagine_requests_refused_total", (("reason", "rate"),))] == 1
    assert after[("animagine_images_withheld_total", (("reason", "check_failed"),))] == 2
    other = (("size", "other"), ("worker", "local"))  # 64x64 is not on the model card
    assert after[("animagine_render_seconds_count", other)] == 2
    assert after[("animagine_render_seconds_sum", other)] > 0
    assert after[("animagine_queue_wait_seconds_count", other)] == 2

    text = metrics.exposition().decode()
    for secret in (str(USER_ID), str(GUILD_ID), str(CHANNEL_ID), "marmalade", "1girl"):
        assert secret not in text
    labels = {value for (_, pairs) in after for _, value in pairs}
    assert labels <= {
        *("finished", "undelivered", "failed", "timed_out", "cancelled", "other", "local"),
        *("1024x1024", "1152x896", "896x1152", "1216x832", "832x1216", "1344x768"),
        *("768x1344", "1536x640", "640x1536", "0.1.0"),
        *("hard_block", "direct_message", "rating", "blocked_tags", "invalid"),
        *("sexual_unchecked", "check_failed", "rated_explicit", "rated_questionable"),
        *("banned", "disabled", "daily", "concurrent", "rate", "server_daily"),
        *("server_concurrent", "server_rate", "queue_full", "restarting"),
        *("route", "user", "shared", "global"),
    } | {v for (name, pairs) in after for key, v in pairs if key == "le"}

    events = [getattr(r, "event", None) for r in caplog.records if r.name == "bot.jobs"]
    assert events.count("job.accepted") == 2
    assert events.count("job.refused") == 2
    assert events.count("job.started") == 2
    assert events.count("job.finished") == 2
    assert events.count("job.images_withheld") == 2
    assert events.count("job.delivered") == 2
    assert all(r.job_id for r in caplog.records if getattr(r, "event", "") == "job.finished")
    assert "marmalade" not in caplog.text


async def test_cancelled_and_failed_jobs_are_counted(
    world: tuple[ImagineService, Metrics, Database],
) -> None:
    service, metrics, _ = world
    queued = await service.submit(request(prompt=PROMPT), WHO, HERE)
    await service.cancel(queued.job.id, WHO)
    doomed = await service.submit(request(prompt=PROMPT), WHO, HERE)
    service.renderer.timeout = 0.0  # every render is over its time at once
    assert doomed.job.id
    assert await service.run_burst() == 1
    after = samples(metrics)
    assert after[("animagine_jobs_total", (("outcome", "cancelled"),))] == 1
    assert after[("animagine_jobs_total", (("outcome", "timed_out"),))] == 1
    assert after[("animagine_jobs_total", (("outcome", "finished"),))] == 0


def test_worker_labels_are_capped() -> None:
    metrics = Metrics()
    names = [metrics.worker_label(f"gpu-{n}") for n in range(100)]
    assert names[:10] == [f"gpu-{n}" for n in range(10)]
    assert names[-1] == "other"
    assert len(set(names)) == 64  # 63 workers (64 labels with local), then other
    assert metrics.worker_label("gpu-3") == "gpu-3"  # a known one keeps its label


def test_sizes_are_the_model_cards_or_other() -> None:
    assert size_label(1024, 1024) == "1024x1024"
    assert size_label(832, 1216) == "832x1216"
    assert size_label(1216, 832) == "1216x832"
    assert size_label(1000, 1000) == "other"
    assert size_label("1024", 1024) == "other"
    metrics = Metrics()
    metrics.job_rendered("1344x768", "local", 4.0)
    metrics.job_rendered("4096x4096", "local", 4.0)  # not from size_label: still bounded
    values = samples(metrics)
    assert values[("animagine_render_seconds_count", (("size", "1344x768"), ("worker", "local")))]
    assert values[("animagine_render_seconds_count", (("size", "other"), ("worker", "local")))]
