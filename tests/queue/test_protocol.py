"""The wire protocol with remote workers: JSON only, every size bounded, versions checked."""

from __future__ import annotations

import base64
import json
import pickle

import pytest

from bot.engine.job import RenderJob
from bot.queue import protocol


def render(seeds: tuple[int, ...] = (1,), **changes: object) -> RenderJob:
    base: dict[str, object] = {
        "prompt": "1girl, solo",
        "negative_prompt": "lowres",
        "width": 832,
        "height": 1216,
        "steps": 28,
        "cfg": 5.0,
        "sampler": "Euler a",
        "seeds": seeds,
    }
    return RenderJob(**{**base, **changes})  # type: ignore[arg-type]


def test_a_micro_batch_travels_whole_and_in_order() -> None:
    jobs = [(7, render((1,))), (9, render((5, 6), prompt="1boy"))]
    back = protocol.read_jobs(protocol.job_message(jobs))
    assert back == jobs


def test_a_pickle_is_never_read() -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, ...]:
            return (print, ("pwned",))

    with pytest.raises(protocol.ProtocolError, match="not JSON"):
        protocol.read_jobs(pickle.dumps(Boom()))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"jobs": []}, r"expected 1\.\.8 jobs"),
        ({"jobs": [{"job_id": 1}] * 9}, r"expected 1\.\.8 jobs"),
        ({"kind": "result"}, "expected a job message"),
        ({"v": 999}, "protocol version 999 is not supported"),
    ],
)
def test_malformed_job_messages_are_refused(change: dict[str, object], match: str) -> None:
    data = json.loads(protocol.job_message([(1, render())]))
    data.update(change)
    with pytest.raises(protocol.ProtocolError, match=match):
        protocol.read_jobs(json.dumps(data))


def test_every_size_read_back_is_bounded() -> None:
    data = json.loads(protocol.job_message([(1, render())]))
    data["jobs"][0]["prompt"] = "x" * (protocol.MAX_TEXT + 1)
    with pytest.raises(protocol.ProtocolError, match="prompt"):
        protocol.read_jobs(json.dumps(data))
    many = [(i, render((i, i + 1))) for i in range(5)]  # 10 images in 5 jobs
    with pytest.raises(ValueError, match=r"1\.\.8 jobs"):
        protocol.job_message([(i, render()) for i in range(9)])
    raw = json.loads(protocol.job_message(many[:4]))
    raw["jobs"].append(raw["jobs"][0])
    with pytest.raises(protocol.ProtocolError, match="more than 8 images"):
        protocol.read_jobs(json.dumps(raw))
    with pytest.raises(protocol.ProtocolError, match="over the limit"):
        protocol.read_jobs(b" " * (protocol.MAX_MESSAGE_BYTES + 1))
    huge = protocol.Result(1, "finished", "w", seconds=1.0)
    message = json.loads(protocol.result_message(huge))
    big = base64.b64encode(b"\0" * (protocol.MAX_PNG_BYTES + 3)).decode()
    message["images"] = [{"seed": 1, "png": big, "prompt": "", "negative_prompt": "", "params": {}}]
    with pytest.raises(protocol.ProtocolError, match="png"):
        protocol.read_result(json.dumps(message))


def test_a_heartbeat_of_another_version_is_read_but_not_compatible() -> None:
    beat = protocol.Heartbeat("w1", "gpu-box", "NVIDIA H100", "model", "idle", 3, 1.0)
    data = json.loads(protocol.heartbeat_message(beat))
    data["v"] = 1
    old = protocol.read_heartbeat(json.dumps(data))
    assert (old.name, old.jobs_done, old.compatible) == ("w1", 3, False)
    assert protocol.read_heartbeat(protocol.heartbeat_message(beat)).compatible


def test_an_img2img_job_carries_its_input_image() -> None:
    from bot.request import ImagePrompt

    name = "a" * 64 + ".png"
    png = b"\x89PNG\r\n\x1a\n" + b"pixels"
    render = RenderJob(
        "1girl", "", 64, 64, 4, 7.0, "Euler a", (5,), image=ImagePrompt(source=name, strength=0.35)
    )
    jobs, inputs = protocol.read_job_message(protocol.job_message([(9, render)], {9: png}))
    assert jobs == [(9, render)]
    assert inputs == {9: png}
    # Gone from the bot's vault: sent without it (the worker fails the job, saying so).
    assert protocol.read_job_message(protocol.job_message([(9, render)]))[1] == {}
    raw = protocol.job_message([(9, render)], {9: b"GIF89a"})
    with pytest.raises(protocol.ProtocolError, match="not a PNG"):
        protocol.read_job_message(raw)
    bad = protocol.job_message([(9, render)]).replace(name, "../../etc/passwd")
    with pytest.raises(protocol.ProtocolError, match="not an input image name"):
        protocol.read_jobs(bad)
    with pytest.raises(protocol.ProtocolError, match="alone"):
        protocol.read_jobs(protocol.job_message([(9, render), (10, render)]))
    assert protocol.PROTOCOL_VERSION == 3
