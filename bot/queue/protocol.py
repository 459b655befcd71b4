"""The wire protocol between the bot and remote workers (Redis Streams), torch-free.

Every message is one stream entry with a single field ``m``: a JSON object holding ``v``,
the protocol version. JSON only, never pickle: a write to Redis must not become code
execution on a GPU machine. Every size read back is bounded (:class:`ProtocolError` when
not): the raw message, strings, lists, and each image's PNG (base64).

Streams and keys (``P`` is ``queue.redis_prefix``):

* ``P:jobs`` - jobs to render (one, or a micro-batch of compatible jobs, per entry);
  consumer group ``workers``. A worker takes one entry with
  XREADGROUP, renews its claim while rendering (XCLAIM ... JUSTID) and acknowledges it (XACK)
  after its result is published; entries idle longer than the claim timeout are taken over
  by another worker (XAUTOCLAIM).
* ``P:results`` - finished, failed and cancelled jobs; consumer group ``bot``: survives a
  bot restart, so results published meanwhile are delivered when it is back.
* ``P:progress`` - started and progress notes (at most one a second per job, plus one at
  each step that brings a live preview), capped.
* ``P:inflight`` - hash: job id -> dispatch note, the bot's record of what Redis holds for
  it; a job running in SQLite with no entry here (Redis restarted or emptied) is dispatched
  again.
* ``P:cancel:<job id>`` - set (with a TTL) when a member cancels; a worker checks it before
  it starts a job, and once a second while it renders (should it miss the stream below).
* ``P:cancels`` - the ids of cancelled jobs (capped); a rendering worker reads it with a
  blocking XREAD and stops the job at its next step.
* ``P:worker:<name>`` - a worker's heartbeat (JSON, TTL of three heartbeats).
* ``P:protocol`` - the bot's protocol version; a worker of another version refuses to run.

Live previews: the bot decides whether a job gets previews and how often (its settings, the
server's ``previews`` default, the queue's length) and says so in the job's optional
``preview_every`` (seconds, at most :data:`MAX_PREVIEW_INTERVAL_S`; absent or null: none).
A worker that loaded TAESD passes it to the engine (whose auto-off holds there as in the
bot) and puts each preview in that step's progress note as ``preview``: a base64 WebP of at
most :data:`MAX_PREVIEW_BYTES` (one over that is not sent; a note whose preview is over it
or not a WebP is dropped by the reader). Both fields are optional: a worker or bot without
them reads and sends everything else as before.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.engine.job import RenderJob
from bot.request import INPUT_NAME, HiresOptions, ImagePrompt

PROTOCOL_VERSION = 3
# 2: a job message holds a list of jobs (micro-batches).
# 3: a job may be img2img: its ``image`` carries the input image (base64 PNG, at most
#    MAX_INPUT_PNG_BYTES) with its strength. A version 2 worker would ignore the field and
#    draw from noise, so the version changed: bot and workers must be upgraded together.
#    Also optional, in the same (unreleased) version: a job's ``preview_every`` and a progress
#    note's ``preview`` (live previews); a side without them ignores them.

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_PNG_BYTES = 16 * 1024 * 1024
MAX_INPUT_PNG_BYTES = 16 * 1024 * 1024
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_IMAGES = 8
MAX_TEXT = 8192
MAX_NAME = 256
MAX_PARAMS = 64
MAX_TIMINGS = 32
MAX_PREVIEW_BYTES = 64 * 1024  # one live preview (WebP)
MAX_PREVIEW_SIDE = 1024  # pixels, as previews.max_side allows
MAX_PREVIEW_INTERVAL_S = 600.0  # as previews.interval_s allows
MAX_PROGRESS_BYTES = 128 * 1024  # a progress note, its preview's base64 included


class ProtocolError(Exception):
    """A message that is not ours, too big, or of another protocol version."""


class IncompatibleVersion(ProtocolError):
    """A peer speaks another protocol version."""

    def __init__(self, theirs: object) -> None:
        super().__init__(
            f"protocol version {theirs!r} is not supported: this side speaks version "
            f"{PROTOCOL_VERSION}; run the same release of the bot and its workers"
        )
        self.theirs = theirs


def encode(message: dict[str, Any]) -> str:
    """One message as JSON, tagged with the protocol version."""
    return json.dumps({"v": PROTOCOL_VERSION, **message}, separators=(",", ":"))


def decode(raw: bytes | str, kind: str) -> dict[str, Any]:
    """A message of ``kind`` read back from Redis, its size and version checked."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"a {kind} message of {len(raw)} bytes is over the limit")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"a {kind} message is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"a {kind} message is not an object")
    if data.get("v") != PROTOCOL_VERSION:
        raise IncompatibleVersion(data.get("v"))
    if data.get("kind") != kind:
        raise ProtocolError(f"expected a {kind} message, got {data.get('kind')!r}")
    return data


def _text(data: dict[str, Any], key: str, limit: int = MAX_TEXT) -> str:
    value = data.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError(f"{key}: expected a string of at most {limit} characters")
    return value


def _int(data: dict[str, Any], key: str, low: int = 0, high: int = 2**63) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProtocolError(f"{key}: expected a whole number in {low}..{high}")
    return value


def _float(data: dict[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{key}: expected a number")
    return float(value)


def _preview_every(data: dict[str, Any]) -> float | None:
    """A job's optional preview interval (absent or null: no previews)."""
    if data.get("preview_every") is None:
        return None
    value = _float(data, "preview_every")
    if not (math.isfinite(value) and 0.0 <= value <= MAX_PREVIEW_INTERVAL_S):
        raise ProtocolError(f"preview_every: expected 0..{MAX_PREVIEW_INTERVAL_S:g} seconds")
    return value


def is_webp(data: bytes) -> bool:
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def _pairs(value: object, key: str) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > MAX_PARAMS:
        raise ProtocolError(f"{key}: expected at most {MAX_PARAMS} entries")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(v, str) or len(k) > MAX_NAME or len(v) > MAX_TEXT:
            raise ProtocolError(f"{key}: entries must be short strings")
        out[k] = v
    return out


# ----------------------------------------------------------------------- jobs
def _image_fields(render: RenderJob, png: bytes | None) -> dict[str, Any] | None:
    if render.image is None:
        return None
    return {
        **render.image.model_dump(mode="json"),
        # None: the bot no longer holds the input (the worker fails the job, saying so).
        "png": None if png is None else base64.b64encode(png).decode("ascii"),
    }


def _job_fields(
    job_id: int, render: RenderJob, png: bytes | None = None, preview_every: float | None = None
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "prompt": render.prompt,
        "negative_prompt": render.negative_prompt,
        "width": render.width,
        "height": render.height,
        "steps": render.steps,
        "cfg": render.cfg,
        "sampler": render.sampler,
        "seeds": list(render.seeds),
        "hires": None
        if render.hires is None
        else {"scale": render.hires.scale, "strength": render.hires.strength},
        "extra_params": dict(render.extra_params),
        "image": _image_fields(render, png),
        # optional: absent means no previews (and a message as before the field)
        **({} if preview_every is None else {"preview_every": preview_every}),
    }


def job_message(
    jobs: list[tuple[int, RenderJob]],
    inputs: Mapping[int, bytes] | None = None,
    previews: Mapping[int, float | None] | None = None,
) -> str:
    """One stream entry for one worker: a job, or a micro-batch of compatible jobs that the
    worker renders in one pipeline call (the bot chose them, in fair order). ``inputs``:
    the input image (PNG bytes) of each img2img job, by job id; ``previews``: the seconds
    between two live previews of each job that gets them, by job id."""
    if not 1 <= len(jobs) <= MAX_IMAGES:
        raise ValueError(f"a job message holds 1..{MAX_IMAGES} jobs")
    inputs = inputs or {}
    previews = previews or {}
    for job_id, _render in jobs:
        png = inputs.get(job_id)
        if png is not None and len(png) > MAX_INPUT_PNG_BYTES:
            raise ValueError(f"job {job_id}: an input image of {len(png)} bytes is over the limit")
        every = previews.get(job_id)
        if every is not None and not (
            math.isfinite(every) and 0.0 <= every <= MAX_PREVIEW_INTERVAL_S
        ):
            raise ValueError(f"job {job_id}: a preview interval of {every} s is out of range")
    return encode(
        {
            "kind": "job",
            "jobs": [_job_fields(i, r, inputs.get(i), previews.get(i)) for i, r in jobs],
        }
    )


def _read_image(data: object) -> tuple[ImagePrompt | None, bytes | None]:
    if data is None:
        return None, None
    if not isinstance(data, dict):
        raise ProtocolError("image: expected an object")
    source = _text(data, "source", MAX_NAME)
    if not INPUT_NAME.fullmatch(source):
        raise ProtocolError("image.source: not an input image name")
    strength = _float(data, "strength")
    if not 0.0 <= strength <= 1.0:
        raise ProtocolError("image.strength: expected 0..1")
    origin = data.get("origin", "attachment")
    if origin not in ("attachment", "vary"):
        raise ProtocolError("image.origin: expected attachment or vary")
    refs = {}
    for key in ("from_job", "from_index"):
        value = data.get(key)
        refs[key] = None if value is None else _int(data, key)
    image = ImagePrompt(source=source, strength=strength, origin=origin, **refs)
    png = _base64(data, "png", MAX_INPUT_PNG_BYTES, "image.png")
    if png is None:
        return image, None
    if not png.startswith(PNG_MAGIC):
        raise ProtocolError("image.png: not a PNG")
    return image, png


def _read_one(data: object) -> tuple[int, RenderJob, bytes | None, float | None]:
    if not isinstance(data, dict):
        raise ProtocolError("jobs: expected objects")
    seeds = data.get("seeds")
    if not isinstance(seeds, list) or not 1 <= len(seeds) <= MAX_IMAGES:
        raise ProtocolError(f"seeds: expected 1..{MAX_IMAGES} seeds")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ProtocolError("seeds: expected whole numbers")
    hires_data = data.get("hires")
    hires = None
    if hires_data is not None:
        if not isinstance(hires_data, dict):
            raise ProtocolError("hires: expected an object")
        hires = HiresOptions(
            scale=_float(hires_data, "scale"), strength=_float(hires_data, "strength")
        )
    image, png = _read_image(data.get("image"))
    render = RenderJob(
        prompt=_text(data, "prompt"),
        negative_prompt=_text(data, "negative_prompt"),
        width=_int(data, "width", 8, 8192),
        height=_int(data, "height", 8, 8192),
        steps=_int(data, "steps", 1, 1000),
        cfg=_float(data, "cfg"),
        sampler=_text(data, "sampler", MAX_NAME),
        seeds=tuple(seeds),
        hires=hires,
        extra_params=tuple(_pairs(data.get("extra_params", {}), "extra_params").items()),
        image=image,
    )
    return _int(data, "job_id"), render, png, _preview_every(data)


@dataclass(frozen=True)
class JobBatch:
    """A job message read back: its jobs, and by job id the input image (PNG bytes) of each
    img2img job that carries one and the preview interval of each job that gets previews."""

    jobs: list[tuple[int, RenderJob]]
    inputs: dict[int, bytes] = field(default_factory=dict)
    previews: dict[int, float] = field(default_factory=dict)


def read_job_batch(raw: bytes | str) -> JobBatch:
    """A job message (one job, or a micro-batch), every field bounded."""
    data = decode(raw, "job")
    jobs = data.get("jobs")
    if not isinstance(jobs, list) or not 1 <= len(jobs) <= MAX_IMAGES:
        raise ProtocolError(f"jobs: expected 1..{MAX_IMAGES} jobs")
    read = [_read_one(item) for item in jobs]
    if sum(len(render.seeds) for _, render, _png, _every in read) > MAX_IMAGES:
        raise ProtocolError(f"a job message of more than {MAX_IMAGES} images")
    if len(read) > 1 and any(render.image is not None for _, render, _png, _every in read):
        raise ProtocolError("an img2img job is sent alone, never in a micro-batch")
    return JobBatch(
        jobs=[(job_id, render) for job_id, render, _png, _every in read],
        inputs={job_id: png for job_id, _render, png, _every in read if png is not None},
        previews={job_id: every for job_id, _render, _png, every in read if every is not None},
    )


def read_job_message(raw: bytes | str) -> tuple[list[tuple[int, RenderJob]], dict[int, bytes]]:
    """The jobs of a job message (one, or a micro-batch), each bounded, and the input
    image (PNG bytes) of each img2img job that carries one, by job id."""
    batch = read_job_batch(raw)
    return batch.jobs, batch.inputs


def read_jobs(raw: bytes | str) -> list[tuple[int, RenderJob]]:
    """The jobs of a job message (see :func:`read_job_message`)."""
    return read_job_message(raw)[0]


# ----------------------------------------------------------------------- results
@dataclass(frozen=True)
class ResultImage:
    seed: int
    png: bytes
    prompt: str
    negative_prompt: str
    params: dict[str, str]


@dataclass(frozen=True)
class Result:
    """What a worker reports about a job: finished (with images), failed or cancelled."""

    job_id: int
    status: str  # "finished", "failed", "cancelled"
    worker: str
    images: list[ResultImage] = field(default_factory=list)
    reason: str = ""
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


STATUSES = ("finished", "failed", "cancelled")


def result_message(result: Result) -> str:
    return encode(
        {
            "kind": "result",
            "job_id": result.job_id,
            "status": result.status,
            "worker": result.worker,
            "reason": result.reason,
            "seconds": result.seconds,
            "timings": result.timings,
            "images": [
                {
                    "seed": image.seed,
                    "png": base64.b64encode(image.png).decode("ascii"),
                    "prompt": image.prompt,
                    "negative_prompt": image.negative_prompt,
                    "params": image.params,
                }
                for image in result.images
            ],
        }
    )


def read_result(raw: bytes | str) -> Result:
    data = decode(raw, "result")
    status = data.get("status")
    if status not in STATUSES:
        raise ProtocolError(f"status: expected one of {', '.join(STATUSES)}")
    images_data = data.get("images")
    if not isinstance(images_data, list) or len(images_data) > MAX_IMAGES:
        raise ProtocolError(f"images: expected at most {MAX_IMAGES}")
    images: list[ResultImage] = []
    for item in images_data:
        if not isinstance(item, dict):
            raise ProtocolError("images: expected objects")
        encoded = _text(item, "png", MAX_PNG_BYTES * 4 // 3 + 4)
        try:
            png = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("png: not base64") from None
        images.append(
            ResultImage(
                seed=_int(item, "seed"),
                png=png,
                prompt=_text(item, "prompt"),
                negative_prompt=_text(item, "negative_prompt"),
                params=_pairs(item.get("params"), "params"),
            )
        )
    timings_data = data.get("timings", {})
    if not isinstance(timings_data, dict) or len(timings_data) > MAX_TIMINGS:
        raise ProtocolError("timings: expected a small object")
    timings = {str(k)[:MAX_NAME]: _float(timings_data, k) for k in timings_data}
    return Result(
        job_id=_int(data, "job_id"),
        status=str(status),
        worker=_text(data, "worker", MAX_NAME),
        images=images,
        reason=_text(data, "reason"),
        seconds=_float(data, "seconds"),
        timings=timings,
    )


# ----------------------------------------------------------------------- progress
def progress_message(
    job_id: int, worker: str, step: int, total: int, phase: str, *, preview: bytes | None = None
) -> str:
    """A progress note; ``preview``: the step's live preview (a WebP of at most
    :data:`MAX_PREVIEW_BYTES`, else :class:`ValueError`: send the note without it)."""
    if preview is not None and (len(preview) > MAX_PREVIEW_BYTES or not is_webp(preview)):
        raise ValueError(f"a preview must be a WebP of at most {MAX_PREVIEW_BYTES} bytes")
    return encode(
        {
            "kind": "progress",
            "job_id": job_id,
            "worker": worker,
            "step": step,
            "total": total,
            "phase": phase,
            **({} if preview is None else {"preview": base64.b64encode(preview).decode("ascii")}),
        }
    )


@dataclass(frozen=True)
class ProgressNote:
    job_id: int
    worker: str
    step: int  # 0: the render started
    total: int
    phase: str
    preview: bytes | None = None  # the step's live preview (WebP), not yet checked


def _base64(data: Mapping[str, Any], key: str, limit: int, name: str) -> bytes | None:
    """The bytes of an optional base64 field of at most ``limit`` bytes (None: absent)."""
    encoded = data.get(key)
    if encoded is None:
        return None
    if not isinstance(encoded, str) or len(encoded) > limit * 4 // 3 + 4:
        raise ProtocolError(f"{name}: expected base64 of at most {limit} bytes")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{name}: not base64") from None


def _read_preview(data: dict[str, Any]) -> bytes | None:
    preview = _base64(data, "preview", MAX_PREVIEW_BYTES, "preview")
    if preview is None:
        return None
    if len(preview) > MAX_PREVIEW_BYTES or not is_webp(preview):
        raise ProtocolError(f"preview: expected a WebP of at most {MAX_PREVIEW_BYTES} bytes")
    return preview


def read_progress(raw: bytes | str) -> ProgressNote:
    if len(raw) > MAX_PROGRESS_BYTES:
        raise ProtocolError(f"a progress message of {len(raw)} bytes is over the limit")
    data = decode(raw, "progress")
    return ProgressNote(
        _int(data, "job_id"),
        _text(data, "worker", MAX_NAME),
        _int(data, "step", 0, 100_000),
        _int(data, "total", 0, 100_000),
        _text(data, "phase", 16),
        _read_preview(data),
    )


# ----------------------------------------------------------------------- heartbeats
@dataclass(frozen=True)
class Heartbeat:
    """What a worker says about itself every ``queue.redis_heartbeat_s``."""

    name: str
    host: str
    gpu: str
    model: str
    state: str  # "starting", "idle", "rendering", "draining", "refused"
    jobs_done: int
    at: float  # time.time() of this heartbeat
    version: int = PROTOCOL_VERSION
    job_id: int | None = None
    problem: str = ""
    # GPU memory the worker's engine holds (None: not on CUDA, or a worker from before the
    # field; an optional key, so bots and workers of either age read each other's beats).
    gpu_memory_used_bytes: int | None = None

    @property
    def compatible(self) -> bool:
        return self.version == PROTOCOL_VERSION


def heartbeat_message(beat: Heartbeat) -> str:
    return json.dumps(
        {
            "v": beat.version,
            "kind": "heartbeat",
            "name": beat.name,
            "host": beat.host,
            "gpu": beat.gpu,
            "model": beat.model,
            "state": beat.state,
            "jobs_done": beat.jobs_done,
            "at": beat.at,
            "job_id": beat.job_id,
            "problem": beat.problem,
            **(
                {}
                if beat.gpu_memory_used_bytes is None
                else {"gpu_memory_used_bytes": beat.gpu_memory_used_bytes}
            ),
        },
        separators=(",", ":"),
    )


def read_heartbeat(raw: bytes | str) -> Heartbeat:
    """A heartbeat of any version (an incompatible worker is listed, not counted)."""
    if len(raw) > 64 * 1024:
        raise ProtocolError("a heartbeat over 64 KiB")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("a heartbeat is not JSON") from None
    if not isinstance(data, dict) or data.get("kind") != "heartbeat":
        raise ProtocolError("not a heartbeat")
    version = data.get("v")
    job_id = data.get("job_id")
    memory = data.get("gpu_memory_used_bytes")
    return Heartbeat(
        name=_text(data, "name", MAX_NAME),
        host=_text(data, "host", MAX_NAME),
        gpu=_text(data, "gpu", MAX_NAME),
        model=_text(data, "model", MAX_TEXT),
        state=_text(data, "state", 32),
        jobs_done=_int(data, "jobs_done"),
        at=_float(data, "at"),
        version=version if isinstance(version, int) and not isinstance(version, bool) else -1,
        job_id=job_id if isinstance(job_id, int) and not isinstance(job_id, bool) else None,
        problem=_text(data, "problem", MAX_TEXT) if "problem" in data else "",
        gpu_memory_used_bytes=memory
        if isinstance(memory, int) and not isinstance(memory, bool) and memory >= 0
        else None,
    )
