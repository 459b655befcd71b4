"""The engine: one SDXL pipeline, one call at a time, progress and cancellation per step.

The engine is synchronous and owns the GPU: callers run :meth:`Engine.render` (one job) or
:meth:`Engine.render_batch` (compatible jobs in one pipeline call, see below) in a worker
thread. A lock guarantees that two calls never enter the pipeline at once. Each call gets a
fresh scheduler, its own CPU generators (one per image, so each image's seed reproduces it
alone), and optionally the hires pass (latent upscale, then img2img on the same
components). A cancelled lone job stops within one step; an out-of-memory error fails only that
call, and memory is released either way.

Micro-batching: jobs with the same :attr:`~bot.shape.JobShape.batch_key` (size, steps, CFG,
sampler, hires)
run as one call. Each job's prompts are encoded alone; the embeddings are stacked along the
batch, one row per image. Jobs whose prompts take different numbers of 75-token chunks are
padded to the longest with zero embeddings that an attention mask hides from the UNet's
cross-attention (the padding of :mod:`bot.engine.optimize`, per row): the masked tokens get
exactly zero attention weight, so every image is the one its job draws alone, up to float
rounding of batched kernels. In a batch, a cancelled job stops costing work at the next
phase boundary (after the base pass, before the decode), where its rows are dropped; inside
a denoising loop the rows cannot be dropped (the scheduler's history and the generators
are fixed for the loop), so the others keep going and the cancelled job's rows run along
until then. The call stops within one step once every job in it is cancelled.

Broken images are never returned as pictures: before PNG encoding, every decoded image is
checked (:func:`image_problem`); one with NaN or infinite values, or whose pixels are all
the same colour (the black square an overflowing fp16 pass leaves), fails its job with the
reason (:attr:`RenderResult.error`; :meth:`Engine.render` raises :class:`EngineError`), and
the worker refunds it. Emphasis weights out of range are refused before the text encoders
run (:func:`bot.prompts.emphasis.check_weights`), for prompts that wildcards expanded too.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from bot.config import Settings
from bot.engine.job import RenderJob
from bot.engine.loading import Placement, load_pipeline, resolve_placement
from bot.engine.optimize import AppliedOptimizations, apply_optimizations, speed_settings
from bot.engine.samplers import make_scheduler
from bot.errors import EngineError
from bot.images import Infotext
from bot.prompts import PromptError
from bot.prompts.emphasis import check_weights
from bot.prompts.encoder import PromptEmbeddings, PromptEncoder

log = logging.getLogger(__name__)

HIRES_UPSCALER = "Latent (nearest-exact)"

# A diffusers ``callback_on_step_end``: (pipeline, step, timestep, tensors) -> tensors.
StepEnd = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]


class JobCancelled(Exception):
    """The job was cancelled between two steps."""


class CancelToken:
    """Set from any thread; the engine checks it after every step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True)
class Progress:
    """Where a job stands: ``step`` of ``total`` denoising steps, hires steps included.

    ``seconds_left``: the engine's estimate from the call's own pace (None before it has
    one); ``preview``: the image as it forms (TAESD, small), on the steps where one was
    due for this job, else None. A preview has passed no image check yet."""

    step: int
    total: int
    phase: str  # "base" or "hires"
    seconds_left: float | None = None
    preview: Image.Image | None = None

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.step / self.total)


ProgressCallback = Callable[[Progress], None]


@dataclass
class RenderedImage:
    image: Image.Image
    seed: int
    infotext: Infotext


@dataclass
class RenderResult:
    """One job's images. In a batch, ``seconds`` and ``timings`` are the job's share of the
    call (by image count); ``cancelled`` marks a job cancelled while others in its batch
    went on (it has no images); ``error`` says why a job failed while the others of its
    batch went on (a broken image: it has no images either)."""

    images: list[RenderedImage]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    cancelled: bool = False
    error: str | None = None


CONSTANT_RANGE = 1 / 255
"""An image whose values (0-1) all lie within this of each other is one flat colour."""


def image_problem(image: torch.Tensor) -> str | None:
    """Why a decoded image (``[3, H, W]``, VAE output in -1..1) is not a picture, or None.

    Non-finite values (NaN, infinity) and a single flat colour (all pixels within one
    8-bit step of each other after the 0-1 mapping, as when an fp16 pass overflowed) are
    broken; anything else is an image.
    """
    values = image.detach().float()
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        share = 1.0 - float(finite.float().mean())
        return f"the image came out as NaN or infinite values ({share:.0%} of them)"
    pixels = (values / 2 + 0.5).clamp(0, 1)
    spread = float(pixels.max() - pixels.min())
    if spread < CONSTANT_RANGE:
        colour = round(float(pixels.mean()) * 255)
        return f"the image came out as one flat colour (every pixel about {colour}/255)"
    return None


def broken_image_reason(problem: str, index: int, count: int) -> str:
    which = "the image" if count == 1 else f"image {index + 1} of {count}"
    return (
        f"{which} came out broken and was not posted: {problem.removeprefix('the image ')}; "
        "an emphasis weight or setting the model cannot handle, or a damaged model or VAE, "
        "does this"
    )


def fit_to(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` as RGB at exactly ``width`` x ``height``: scaled to cover it, then the
    middle cropped (no stretching, no borders)."""
    from PIL import ImageOps

    rgb = image.convert("RGB")
    if rgb.size == (width, height):
        return rgb
    return ImageOps.fit(rgb, (width, height), method=Image.Resampling.LANCZOS)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


_EMBEDDINGS = (
    "prompt_embeds",
    "negative_prompt_embeds",
    "pooled_prompt_embeds",
    "negative_pooled_prompt_embeds",
)


class _BatchRows:
    """The per-image inputs of one call, stacked job after job, and the mask of the padding.

    Each job's embeddings are repeated once per image. Shorter prompts are padded at the
    end of the sequence with zeros, and :meth:`mask_hook` hands the UNet a mask that hides
    them from cross-attention (the UNet turns it into a -10000 bias, a softmax weight of
    exactly 0), so a padded job draws what it draws alone. Jobs of equal length need no
    mask, and a single job runs exactly as it always did.
    """

    def __init__(
        self,
        jobs: list[RenderJob],
        embeds: dict[int, PromptEmbeddings],
        generators: dict[int, list[torch.Generator]],
    ) -> None:
        self.jobs = jobs
        self.embeds = embeds
        self._generators = generators
        self.active: list[int] = []
        self.mask: torch.Tensor | None = None  # (images, tokens): 1 for a real token
        self._tensors: dict[str, torch.Tensor] = {}

    def select(self, active: list[int]) -> None:
        """Stack the rows of the jobs ``active`` (indices into ``jobs``)."""
        self.active = list(active)
        lengths = {i: self.embeds[i].prompt_embeds.shape[1] for i in active}
        tokens = max(lengths.values())
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in _EMBEDDINGS}
        masks: list[torch.Tensor] = []
        for i in active:
            embeds, images, missing = self.embeds[i], len(self.jobs[i].seeds), tokens - lengths[i]
            for name in _EMBEDDINGS:
                tensor: torch.Tensor = getattr(embeds, name)
                if tensor.dim() == 3 and missing:
                    tensor = torch.nn.functional.pad(tensor, (0, 0, 0, missing))
                parts[name].append(tensor.repeat(images, *([1] * (tensor.dim() - 1))))
            mask = torch.zeros(images, tokens)
            mask[:, : lengths[i]] = 1
            masks.append(mask)
        self._tensors = {name: torch.cat(parts[name]) for name in _EMBEDDINGS}
        self.mask = torch.cat(masks) if len(set(lengths.values())) > 1 else None

    def indices(self, jobs: list[int]) -> list[int]:
        """The rows, in the current stacking, of the images of ``jobs``."""
        rows: list[int] = []
        row = 0
        for i in self.active:
            images = len(self.jobs[i].seeds)
            if i in jobs:
                rows.extend(range(row, row + images))
            row += images
        return rows

    def embed_kwargs(self) -> dict[str, torch.Tensor]:
        return dict(self._tensors)

    def generators(self) -> list[torch.Generator]:
        return [g for i in self.active for g in self._generators[i]]

    def mask_hook(
        self, _module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """A UNet pre-hook: mask each row's padding out of cross-attention."""
        mask = self.mask
        states = kwargs.get("encoder_hidden_states")
        if mask is None or not isinstance(states, torch.Tensor):
            return None
        images = mask.shape[0]
        if states.shape[0] == 2 * images:  # classifier-free guidance: negatives, positives
            mask = torch.cat([mask, mask])
        elif states.shape[0] != images:
            raise RuntimeError(f"the UNet got {states.shape[0]} rows for {images} images")
        mask = mask.to(states.device, states.dtype)
        existing = kwargs.get("encoder_attention_mask")
        if isinstance(existing, torch.Tensor):
            # The compile padding hook already padded the sequence further, masked.
            combined = existing.clone()
            combined[:, : mask.shape[1]] *= mask
            mask = combined
        return args, {**kwargs, "encoder_attention_mask": mask}


def preview_image(decoded: torch.Tensor, max_side: int) -> Image.Image:
    """One TAESD output (``[3, H, W]``, -1..1) as a small RGB image (longer side <=
    ``max_side``)."""
    pixels = ((decoded.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    array = pixels.permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(array, "RGB")
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return image


class Previewer:
    """Live previews: the latents of a step decoded by TAESD (``AutoencoderTiny``).

    TAESD-XL reads the latents as the UNet sees them (its ``scaling_factor`` is 1.0) and
    its decoder answers -1..1. Each decode is timed: when previews take more than
    ``max_share`` of the render time (one decode per ``interval`` seconds, or per step when a
    step is slower: the GPU, not Discord, is the bottleneck), previews go off for this
    engine, with one warning.
    """

    def __init__(self, taesd: Any, *, max_side: int = 384, max_share: float = 0.05) -> None:
        self.taesd = taesd
        self.max_side = max_side
        self.max_share = max_share
        self.off_reason: str | None = None
        self.decode_seconds: list[float] = []  # recent decodes (for benchmarks), newest last

    @property
    def on(self) -> bool:
        return self.off_reason is None

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """Small preview images of ``latents`` (``[n, 4, h, w]``)."""
        started = time.perf_counter()
        taesd = self.taesd
        sample = taesd.decode(latents.detach().to(taesd.device, taesd.dtype)).sample
        images = [preview_image(row, self.max_side) for row in sample]
        self.decode_seconds = [*self.decode_seconds[-63:], time.perf_counter() - started]
        return images

    def judge(self, decode_s: float, step_s: float, interval_s: float) -> None:
        """Turn previews off when they take too much of the render time: one decode of
        ``decode_s`` per ``interval_s``, or per step when a step is slower."""
        period = max(interval_s, step_s)
        if self.off_reason is None and period > 0 and decode_s > self.max_share * period:
            self.off_reason = (
                f"a preview took {decode_s * 1000:.0f} ms, over {self.max_share:.0%} of the "
                f"{period * 1000:.0f} ms between two previews"
            )
            log.warning("live previews off: %s", self.off_reason)


class Engine:
    """Renders :class:`RenderJob` objects on one loaded SDXL pipeline."""

    def __init__(
        self, pipeline: Any, *, placement: Placement, model_name: str, max_chunks: int = 8
    ) -> None:
        self.pipeline = pipeline
        self.placement = placement
        self.model_name = model_name
        self.encoder = PromptEncoder(pipeline, max_chunks=max_chunks)
        self._scheduler_config = dict(pipeline.scheduler.config)
        self._lock = threading.Lock()
        self.optimizations = AppliedOptimizations(placement.device.type, notes=("not applied",))
        self.previewer: Previewer | None = None

    def load_previews(self, settings: Settings) -> None:
        """Load TAESD for live previews as ``settings.previews`` says; a failure to load is
        one warning and no previews, never a failed start."""
        from bot.engine.loading import load_taesd
        from bot.errors import ModelLoadError

        previews = settings.previews
        if not previews.active:
            self.previewer = None
            return
        try:
            taesd = load_taesd(previews.source, settings.model, self.placement)
        except ModelLoadError as exc:
            log.warning("live previews off: %s", exc)
            self.previewer = None
            return
        self.previewer = Previewer(taesd, max_side=previews.max_side, max_share=previews.max_share)
        log.info("live previews from %s", previews.source)

    @classmethod
    def load(cls, settings: Settings, *, previews: bool = False) -> Engine:
        """Load the model; with ``previews``, TAESD for live previews too (else
        :meth:`load_previews` loads it: the embedded renderer before its first job, a Redis
        worker beside its first jobs; the CLI shows none and never loads it)."""
        placement = resolve_placement(settings.engine)
        pipeline = load_pipeline(settings.model, placement)
        engine = cls(
            pipeline,
            placement=placement,
            model_name=settings.model.name,
            max_chunks=settings.prompts.max_chunks,
        )
        engine.optimizations = apply_optimizations(
            pipeline, placement.device, speed_settings(settings)
        )
        log.info("%s", engine.optimizations.describe())
        if previews:
            engine.load_previews(settings)
        # The model's objects live as long as the process: keep them out of every later
        # garbage collection, so collections stay short and do not stall the event loop.
        gc.collect()
        gc.freeze()
        return engine

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def gpu_memory_used(self) -> int | None:
        """Bytes of GPU memory PyTorch's allocator holds on the engine's CUDA device (what
        the process keeps from other users of the GPU); None off CUDA."""
        device = self.placement.device
        if device.type != "cuda":
            return None
        return int(torch.cuda.memory_reserved(device))

    def render(
        self,
        job: RenderJob,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        init_image: Image.Image | None = None,
        preview_every: float | None = None,
    ) -> RenderResult:
        """Render ``job``. Raises :class:`JobCancelled`, :class:`EngineError` (a broken image
        included: see :func:`image_problem`) or :class:`PromptError` (weights out of range).

        ``init_image``: the pixels of ``job.image`` (img2img), required exactly then."""
        result = self.render_batch(
            [job],
            on_progress=[on_progress],
            cancels=[cancel or CancelToken()],
            init_image=init_image,
            preview_every=[preview_every],
        )[0]
        if result.error is not None:
            raise EngineError(result.error)
        return result

    def render_batch(
        self,
        jobs: Sequence[RenderJob],
        *,
        on_progress: Sequence[ProgressCallback | None] | None = None,
        cancels: Sequence[CancelToken] | None = None,
        init_image: Image.Image | None = None,
        preview_every: Sequence[float | None] | None = None,
    ) -> list[RenderResult]:
        """Render compatible ``jobs`` in one pipeline call; one result per job, in order.

        An img2img job (``job.image`` set) renders alone, from ``init_image`` (its stored
        input's pixels, resized to the job's size when they are not).

        Every job must have the same :attr:`~bot.shape.JobShape.batch_key` (else
        :class:`ValueError`). Each job's progress callback hears every step. A job whose
        token is cancelled gets a result with ``cancelled`` set while the others finish;
        when every job is cancelled the call stops within one step with
        :class:`JobCancelled`. Raises :class:`EngineError` (out of memory, engine failure)
        or :class:`PromptError` (an emphasis weight out of range) for the whole call; a job
        with a broken image gets a result with ``error`` set and no images while the others
        keep theirs.

        ``preview_every``: per job, the least seconds between two of its previews (None: no
        previews for it); previews need :attr:`previewer` and never change the images.
        """
        if not jobs:
            raise ValueError("render_batch needs at least one job")
        keys = {job.shape.batch_key for job in jobs}
        if len(keys) > 1:
            raise ValueError(
                "jobs in one batch must share size, steps, CFG, sampler and hires settings"
            )
        callbacks: list[ProgressCallback | None] = (
            list(on_progress) if on_progress is not None else [None] * len(jobs)
        )
        tokens = list(cancels) if cancels is not None else [CancelToken() for _ in jobs]
        every: list[float | None] = (
            list(preview_every) if preview_every is not None else [None] * len(jobs)
        )
        if len(callbacks) != len(jobs) or len(tokens) != len(jobs) or len(every) != len(jobs):
            raise ValueError("one progress callback, cancel token and preview interval per job")
        if any(job.image is not None for job in jobs):
            if len(jobs) > 1:
                raise ValueError("an img2img job renders alone, never in a batch")
            if init_image is None:
                raise ValueError("an img2img job needs its input image")
        elif init_image is not None:
            raise ValueError("an input image was given for a job that does not use one")
        with self._lock:
            started = time.perf_counter()
            try:
                return self._render(
                    list(jobs), callbacks, tokens, started, init_image, preview_every=every
                )
            except JobCancelled as exc:
                log.info("job cancelled")
                self._release_memory(exc)
                raise
            except (EngineError, PromptError):
                raise
            except Exception as exc:
                self._release_memory(exc)
                if _is_oom(exc):
                    w, h = jobs[0].output_size
                    count = sum(len(job.seeds) for job in jobs)
                    raise EngineError(
                        f"the GPU ran out of memory rendering {count} image(s) at "
                        f"{w}x{h}; try fewer images, a smaller size or no hires pass"
                    ) from exc
                log.exception("engine failure")
                raise EngineError(f"the engine failed: {type(exc).__name__}: {exc}") from exc

    def _release_memory(self, exc: BaseException) -> None:
        """After a cancelled or failed job: drop the tensors its frames still hold.

        A finished job frees its tensors by itself; a full ``gc.collect()`` after every job
        would hold the GIL (and stall the event loop) for a quarter of a second.
        """
        traceback.clear_frames(exc.__traceback__)
        gc.collect()
        if self.placement.device.type == "cuda":
            torch.cuda.empty_cache()

    def _render(
        self,
        jobs: list[RenderJob],
        callbacks: list[ProgressCallback | None],
        cancels: list[CancelToken],
        started: float,
        init_image: Image.Image | None = None,
        *,
        preview_every: list[float | None] | None = None,
    ) -> list[RenderResult]:
        from diffusers import StableDiffusionXLPipeline

        # Jobs cancelled before the call are simply left out.
        active = [i for i, token in enumerate(cancels) if not token.cancelled]
        if not active:
            raise JobCancelled
        first = jobs[0]
        timings: dict[str, float] = {}
        total = first.base_steps + first.hires_steps
        offset = 0
        every = preview_every or [None] * len(jobs)
        last_preview = dict.fromkeys(range(len(jobs)), time.perf_counter())
        pace = {"last": time.perf_counter(), "steps": 0.0, "seconds": 0.0}

        def step_end(pipe: Any, step: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            now = time.perf_counter()
            step_s = now - pace["last"]
            pace["steps"] += 1
            pace["seconds"] += step_s
            phase = "base" if offset == 0 else "hires"
            done = min(offset + step + 1, total)
            left = (total - done) * pace["seconds"] / pace["steps"]
            running = [i for i in active if not cancels[i].cancelled]
            previews = self._previews(
                kwargs.get("latents"), rows, running, every, last_preview, now, step_s
            )
            for i in running:
                callback = callbacks[i]
                if callback is not None:
                    callback(Progress(done, total, phase, left, previews.get(i)))
            if not running:
                raise JobCancelled
            pace["last"] = time.perf_counter()
            return kwargs

        for i in active:  # before any work: wildcards may have expanded to such weights
            check_weights(jobs[i].prompt, "prompt")
            check_weights(jobs[i].negative_prompt, "negative prompt")
        t0 = time.perf_counter()
        embeds = {i: self.encoder.encode(jobs[i].prompt, jobs[i].negative_prompt) for i in active}
        timings["text_encoders"] = time.perf_counter() - t0
        generators = {
            i: [torch.Generator("cpu").manual_seed(s) for s in jobs[i].seeds] for i in active
        }
        rows = _BatchRows(jobs, embeds, generators)
        components = {**self.pipeline.components}
        components["scheduler"] = make_scheduler(first.sampler, self._scheduler_config)
        base = StableDiffusionXLPipeline(**components)
        base.set_progress_bar_config(disable=True)
        hook = self.pipeline.unet.register_forward_pre_hook(rows.mask_hook, with_kwargs=True)
        try:
            rows.select(active)
            t0 = time.perf_counter()
            if first.image is not None and init_image is not None:
                latents = self._img2img(first, init_image, rows, components, step_end)
            else:
                latents = base(
                    **rows.embed_kwargs(),
                    width=first.width,
                    height=first.height,
                    num_inference_steps=first.steps,
                    guidance_scale=first.cfg,
                    num_images_per_prompt=1,
                    generator=rows.generators(),
                    output_type="latent",
                    callback_on_step_end=step_end,
                ).images
            timings["base"] = time.perf_counter() - t0
            if first.hires is not None:
                latents, active = self._drop_cancelled(latents, rows, active, cancels)
                offset = first.base_steps
                out_w, out_h = first.output_size
                latents = torch.nn.functional.interpolate(
                    latents, size=(out_h // 8, out_w // 8), mode="nearest-exact"
                )
                components["scheduler"] = make_scheduler(first.sampler, self._scheduler_config)
                t0 = time.perf_counter()
                latents = self._img2img_pass(
                    first, latents, first.hires.strength, rows, components, step_end
                )
                timings["hires"] = time.perf_counter() - t0
        finally:
            hook.remove()
        latents, active = self._drop_cancelled(latents, rows, active, cancels)
        t0 = time.perf_counter()
        decoded, problems = self.decode_checked(latents)
        images, checks = iter(decoded), iter(problems)
        timings["vae_decode"] = time.perf_counter() - t0
        elapsed = time.perf_counter() - started
        all_images = sum(len(job.seeds) for job in jobs)
        results: list[RenderResult] = []
        for i, job in enumerate(jobs):
            share = len(job.seeds) / all_images
            job_timings = {name: seconds * share for name, seconds in timings.items()}
            if i not in active:
                results.append(RenderResult([], elapsed * share, job_timings, cancelled=True))
                continue
            rendered = [
                RenderedImage(next(images), seed, self.infotext(job, seed)) for seed in job.seeds
            ]
            found = [next(checks) for _ in job.seeds]
            broken = [(n, problem) for n, problem in enumerate(found) if problem is not None]
            if broken:
                n, problem = broken[0]
                reason = broken_image_reason(problem, n, len(job.seeds))
                log.warning("a job's image is broken (seed %d): %s", job.seeds[n], problem)
                results.append(RenderResult([], elapsed * share, job_timings, error=reason))
                continue
            results.append(RenderResult(rendered, elapsed * share, job_timings))
        return results

    def _img2img(
        self,
        job: RenderJob,
        init_image: Image.Image,
        rows: _BatchRows,
        components: dict[str, Any],
        step_end: StepEnd,
    ) -> torch.Tensor:
        """The first pass from an input image: img2img on the loaded pipeline's own
        components (no second copy of the weights), the job's sampler, the chunked prompt
        embeddings and the same step callback. With fewer than one denoising step
        (``steps x strength`` < 1) the input is only encoded: the result is the input as
        the VAE sees it."""
        assert job.image is not None
        picture = fit_to(init_image, job.width, job.height)
        count = len(job.seeds)
        if job.base_steps < 1:
            latents = self._encode_image(picture)
            return latents.repeat(count, 1, 1, 1)
        return self._img2img_pass(
            job, [picture] * count, job.image.strength, rows, components, step_end
        )

    @staticmethod
    def _img2img_pass(  # noqa: PLR0917 - the pass's inputs, passed as they are
        job: RenderJob,
        image: torch.Tensor | list[Image.Image],
        strength: float,
        rows: _BatchRows,
        components: dict[str, Any],
        step_end: StepEnd,
    ) -> torch.Tensor:
        """One img2img pass to latents, shared by the first pass from an input image and the
        hires pass: a pipeline over ``components`` (the loaded pipeline's own, with the
        scheduler the caller put there), the job's steps and CFG, the rows' embeddings and
        generators, and the step callback."""
        from diffusers import StableDiffusionXLImg2ImgPipeline

        img2img = StableDiffusionXLImg2ImgPipeline(**components)
        img2img.set_progress_bar_config(disable=True)
        latents: torch.Tensor = img2img(
            **rows.embed_kwargs(),
            image=image,
            strength=strength,
            num_inference_steps=job.steps,
            guidance_scale=job.cfg,
            num_images_per_prompt=1,
            generator=rows.generators(),
            output_type="latent",
            callback_on_step_end=step_end,
        ).images
        return latents

    @torch.no_grad()
    def _encode_image(self, picture: Image.Image) -> torch.Tensor:
        """The VAE latents of ``picture`` (its mode, scaled as the UNet reads latents)."""
        vae = self.pipeline.vae
        half = vae.dtype in (torch.float16, torch.bfloat16)
        dtype = torch.float32 if half and vae.config.get("force_upcast", True) else vae.dtype
        pixels = self.pipeline.image_processor.preprocess(picture)
        original = vae.dtype
        if dtype != original:
            torch.nn.Module.to(vae, dtype=dtype)
        try:
            dist = vae.encode(pixels.to(vae.device, dtype)).latent_dist
            latents: torch.Tensor = dist.mode() * vae.config.scaling_factor
        finally:
            if dtype != original:
                torch.nn.Module.to(vae, dtype=original)
        return latents.to(self.pipeline.unet.dtype)

    def _previews(  # noqa: PLR0917 - one step's state, passed as it is
        self,
        latents: Any,
        rows: _BatchRows,
        running: list[int],
        every: list[float | None],
        last: dict[int, float],
        now: float,
        step_s: float,
    ) -> dict[int, Image.Image]:
        """The previews due now, by job (their latents' first image), decoded by TAESD.

        Read-only on the latents: the denoising loop goes on with the very same tensor."""
        previewer = self.previewer
        if previewer is None or not previewer.on or not isinstance(latents, torch.Tensor):
            return {}
        due = [
            i for i in running if (interval := every[i]) is not None and now - last[i] >= interval
        ]
        if not due:
            return {}
        picks = [rows.indices([i])[0] for i in due]
        started = time.perf_counter()
        try:
            images = previewer.decode(latents[picks])
        except Exception as exc:  # a preview never fails a render
            previewer.off_reason = f"the preview decode failed: {type(exc).__name__}: {exc}"
            log.warning("live previews off: %s", previewer.off_reason)
            return {}
        interval = min(every[i] or 0.0 for i in due)
        previewer.judge((time.perf_counter() - started) / len(due), step_s, interval)
        for i in due:
            last[i] = now
        return dict(zip(due, images, strict=True))

    @staticmethod
    def _drop_cancelled(
        latents: torch.Tensor, rows: _BatchRows, active: list[int], cancels: list[CancelToken]
    ) -> tuple[torch.Tensor, list[int]]:
        """Between phases: leave out the rows of jobs cancelled meanwhile."""
        keep = [i for i in active if not cancels[i].cancelled]
        if not keep:
            raise JobCancelled
        if keep != active:
            latents = latents[rows.indices(keep)]
            rows.select(keep)
        return latents, keep

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """Decode latents to images (see :meth:`decode_checked`; no check here)."""
        return self.decode_checked(latents)[0]

    @torch.no_grad()
    def decode_checked(self, latents: torch.Tensor) -> tuple[list[Image.Image], list[str | None]]:
        """Decode latents to images without NaN/black output in fp16, and say of each
        image what is wrong with it (:func:`image_problem`; None for a good one).

        As diffusers does, a VAE whose config asks for it (``force_upcast``, the stock SDXL
        VAE) decodes in float32; a half-precision decode that still yields non-finite
        values is redone in float32 (the fp16-fix VAE never needs that). The check reads
        the float32 tensor, before the 8-bit conversion hides NaN as black.
        """
        vae = self.pipeline.vae
        half = vae.dtype in (torch.float16, torch.bfloat16)
        dtype = torch.float32 if half and vae.config.get("force_upcast", True) else vae.dtype
        decoded = self._decode_as(latents, dtype)
        if dtype != torch.float32 and not torch.isfinite(decoded).all():
            log.warning("VAE decode in %s overflowed; decoding again in float32", dtype)
            decoded = self._decode_as(latents, torch.float32)
        problems = [image_problem(image) for image in decoded]
        if any(problems):  # broken images are never shown: convert without NaN warnings
            decoded = torch.nan_to_num(decoded, nan=0.0, posinf=1.0, neginf=-1.0)
        images: list[Image.Image] = self.pipeline.image_processor.postprocess(
            decoded, output_type="pil"
        )
        return images, problems

    def _decode_as(self, latents: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        vae = self.pipeline.vae
        original = vae.dtype
        # nn.Module.to, not ModelMixin.to: the latter logs a warning on every cast.
        if dtype != original:
            torch.nn.Module.to(vae, dtype=dtype)
        try:
            scaled = latents.to(vae.device, dtype) / vae.config.scaling_factor
            return vae.decode(scaled, return_dict=False)[0].float()  # type: ignore[no-any-return]
        finally:
            if dtype != original:
                torch.nn.Module.to(vae, dtype=original)

    def infotext(self, job: RenderJob, seed: int) -> Infotext:
        params: dict[str, str] = {
            "Steps": str(job.steps),
            "Sampler": job.sampler,
            "CFG scale": f"{job.cfg:g}",
            "Seed": str(seed),
            "Size": f"{job.width}x{job.height}",
            "Model": self.model_name,
        }
        if job.image is not None:  # img2img: A1111 writes the strength so
            params["Denoising strength"] = f"{job.image.strength:g}"
            params["Image prompt"] = job.image.origin
        if job.hires is not None:
            if job.image is None:  # A1111 records one denoising strength: img2img's first
                params["Denoising strength"] = f"{job.hires.strength:g}"
            params["Hires upscale"] = f"{job.hires.scale:g}"
            params["Hires upscaler"] = HIRES_UPSCALER
        params.update(job.extra_params)
        return Infotext(job.prompt, job.negative_prompt, params)
