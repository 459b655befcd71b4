"""Live previews on the wire: a job's optional ``preview_every`` and a progress note's
optional ``preview`` (a small WebP), each validated and capped; their encoding and decoding
(:mod:`bot.queue.previews`)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot.queue import protocol
from bot.queue.previews import decode_preview, encode_preview
from tests.queue.test_protocol import render


def webp(size: tuple[int, int] = (48, 64)) -> bytes:
    data = encode_preview(Image.new("RGB", size, (200, 120, 40)))
    assert data is not None
    return data


def job_data(**fields: Any) -> str:
    data = json.loads(protocol.job_message([(1, render())]))
    data["jobs"][0].update(fields)
    return json.dumps(data)


def note_data(**fields: Any) -> str:
    data = json.loads(protocol.progress_message(1, "w1", 3, 10, "base"))
    data.update(fields)
    return json.dumps(data)


def test_each_job_carries_its_own_preview_interval() -> None:
    jobs = [(7, render((1,))), (9, render((5,))), (11, render((6,)))]
    batch = protocol.read_job_batch(protocol.job_message(jobs, previews={7: 2.5, 9: None}))
    assert batch.jobs == jobs
    assert batch.previews == {7: 2.5}  # None or absent: no previews for that job
    assert protocol.read_job_batch(protocol.job_message(jobs)).previews == {}
    # A message without the field is as it was before it (an older bot's).
    assert "preview_every" not in protocol.job_message(jobs)
    assert protocol.read_job_batch(job_data(preview_every=None)).previews == {}
    assert protocol.read_job_batch(job_data(preview_every=0)).previews == {1: 0.0}


@pytest.mark.parametrize("value", ["3", True, [], {}, -1, 601, 1e308])
def test_a_bad_preview_interval_is_refused(value: object) -> None:
    with pytest.raises(protocol.ProtocolError, match="preview_every"):
        protocol.read_job_batch(job_data(preview_every=value))


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity"])
def test_a_preview_interval_that_is_not_a_finite_number_is_refused(raw: str) -> None:
    text = protocol.job_message([(1, render())], previews={1: 123.0}).replace("123.0", raw)
    with pytest.raises(protocol.ProtocolError, match="preview_every"):
        protocol.read_job_batch(text)


def test_the_bot_refuses_to_send_a_preview_interval_out_of_range() -> None:
    for bad in (-0.5, 601.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="preview interval"):
            protocol.job_message([(1, render())], previews={1: bad})


def test_a_progress_note_carries_a_small_webp_preview() -> None:
    preview = webp()
    note = protocol.read_progress(
        protocol.progress_message(4, "w1", 3, 10, "base", preview=preview)
    )
    assert note.preview == preview
    assert (note.job_id, note.step, note.total, note.phase) == (4, 3, 10, "base")
    assert protocol.read_progress(protocol.progress_message(4, "w1", 3, 10, "base")).preview is None
    assert protocol.read_progress(note_data(preview=None)).preview is None
    image = decode_preview(preview)
    assert image is not None
    assert (image.mode, image.size) == ("RGB", (48, 64))


def test_an_oversized_preview_is_refused_on_both_sides() -> None:
    big = webp()[:12] + b"\0" * protocol.MAX_PREVIEW_BYTES
    with pytest.raises(ValueError, match="at most"):
        protocol.progress_message(1, "w1", 3, 10, "base", preview=big)
    encoded = base64.b64encode(big).decode("ascii")
    with pytest.raises(protocol.ProtocolError):
        protocol.read_progress(note_data(preview=encoded))
    # just over the bytes, within the characters: the decoded size is checked too
    edge = base64.b64encode(webp()[:12] + b"\0" * (protocol.MAX_PREVIEW_BYTES - 11)).decode()
    with pytest.raises(protocol.ProtocolError, match="preview"):
        protocol.read_progress(note_data(preview=edge))
    assert decode_preview(big) is None


@pytest.mark.parametrize(
    "value",
    [
        123,
        True,
        ["x"],
        "not base64!",
        base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode(),  # a PNG, not a WebP
        base64.b64encode(b"RIFF").decode(),
    ],
)
def test_a_preview_that_is_not_a_base64_webp_is_refused(value: object) -> None:
    with pytest.raises(protocol.ProtocolError, match="preview"):
        protocol.read_progress(note_data(preview=value))


def test_a_progress_note_over_its_size_limit_is_refused() -> None:
    with pytest.raises(protocol.ProtocolError, match="over the limit"):
        protocol.read_progress(note_data(phase="b" * protocol.MAX_PROGRESS_BYTES))


def test_a_preview_is_made_to_fit_or_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    fitted = encode_preview(Image.fromarray(noise, "RGB"))  # noise: the worst case
    assert fitted is not None
    assert len(fitted) <= protocol.MAX_PREVIEW_BYTES
    image = decode_preview(fitted)
    assert image is not None
    assert image.size[0] < 1024  # coarser and smaller, never over the limit
    assert encode_preview(Image.new("RGB", (protocol.MAX_PREVIEW_SIDE + 1, 8))) is None
    monkeypatch.setattr("bot.queue.previews.MAX_PREVIEW_BYTES", 100)
    assert encode_preview(Image.fromarray(noise[:256, :256], "RGB")) is None  # sent without


def test_a_received_preview_larger_than_allowed_or_broken_is_dropped() -> None:
    wide = io.BytesIO()
    Image.new("RGB", (protocol.MAX_PREVIEW_SIDE + 1, 4)).save(wide, format="WEBP")
    assert len(wide.getvalue()) < protocol.MAX_PREVIEW_BYTES  # small in bytes, not in pixels
    assert decode_preview(wide.getvalue()) is None
    assert decode_preview(webp()[:20]) is None  # truncated
    assert decode_preview(b"GIF89a" + b"\0" * 20) is None
