"""The engine: one SDXL pipeline, one job at a time, progress and cancellation per step.

The engine is synchronous and owns the GPU: callers run :meth:`Engine.render` in a worker
thread. A lock guarantees that two jobs never enter the pipeline at once. Each job gets a
fresh scheduler, its own CPU generators (one per image, so each image's seed reproduces it
alone), and optionally the hires pass (latent upscale, then img2img on the same
components). A cancelled job stops within one step; an out-of-memory error fails only that
job, and memory is released either way.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from bot.config import Settings
from bot.engine.loading import Placement, load_pipeline, resolve_placement
from bot.engine.optimize import AppliedOptimizations, apply_optimizations, speed_settings
from bot.engine.samplers import make_scheduler
from bot.errors import EngineError
from bot.images import Infotext
from bot.prompts import PromptError
from bot.prompts.encoder import PromptEmbeddings, PromptEncoder
from bot.request import HiresOptions

log = logging.getLogger(__name__)

HIRES_UPSCALER = "Latent (nearest-exact)"


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
    """Where a job stands: ``step`` of ``total`` denoising steps, hires steps included."""

    step: int
    total: int
    phase: str  # "base" or "hires"


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class RenderJob:
    """A request made concrete: final prompts after presets, and one seed per image."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    cfg: float
    sampler: str
    seeds: tuple[int, ...]
    hires: HiresOptions | None = None
    extra_params: tuple[tuple[str, str], ...] = ()

    @property
    def output_size(self) -> tuple[int, int]:
        if self.hires is None:
            return self.width, self.height
        return _hires_size(self.width, self.height, self.hires.scale)

    @property
    def hires_steps(self) -> int:
        if self.hires is None:
            return 0
        return max(1, min(self.steps, int(self.steps * self.hires.strength)))


@dataclass
class RenderedImage:
    image: Image.Image
    seed: int
    infotext: Infotext


@dataclass
class RenderResult:
    images: list[RenderedImage]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def _hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return int(width * scale) // 8 * 8, int(height * scale) // 8 * 8


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


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

    @classmethod
    def load(cls, settings: Settings) -> Engine:
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
        # The model's objects live as long as the process: keep them out of every later
        # garbage collection, so collections stay short and do not stall the event loop.
        gc.collect()
        gc.freeze()
        return engine

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def render(
        self,
        job: RenderJob,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> RenderResult:
        """Render ``job``. Raises :class:`JobCancelled` or :class:`EngineError`."""
        with self._lock:
            started = time.perf_counter()
            try:
                return self._render(job, on_progress, cancel or CancelToken(), started)
            except JobCancelled as exc:
                log.info("job cancelled")
                self._release_memory(exc)
                raise
            except (EngineError, PromptError):
                raise
            except Exception as exc:
                self._release_memory(exc)
                if _is_oom(exc):
                    w, h = job.output_size
                    raise EngineError(
                        f"the GPU ran out of memory rendering {len(job.seeds)} image(s) at "
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
        job: RenderJob,
        on_progress: ProgressCallback | None,
        cancel: CancelToken,
        started: float,
    ) -> RenderResult:
        from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

        if cancel.cancelled:
            raise JobCancelled
        timings: dict[str, float] = {}
        total = job.steps + job.hires_steps
        offset = 0

        def step_end(pipe: Any, step: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            if on_progress is not None:
                phase = "base" if offset == 0 else "hires"
                on_progress(Progress(min(offset + step + 1, total), total, phase))
            if cancel.cancelled:
                raise JobCancelled
            return kwargs

        t0 = time.perf_counter()
        embeds = self.encoder.encode(job.prompt, job.negative_prompt)
        timings["text_encoders"] = time.perf_counter() - t0
        generators = [torch.Generator("cpu").manual_seed(s) for s in job.seeds]
        components = {**self.pipeline.components}
        components["scheduler"] = make_scheduler(job.sampler, self._scheduler_config)
        base = StableDiffusionXLPipeline(**components)
        base.set_progress_bar_config(disable=True)
        t0 = time.perf_counter()
        latents = base(
            **self._embed_kwargs(embeds),
            width=job.width,
            height=job.height,
            num_inference_steps=job.steps,
            guidance_scale=job.cfg,
            num_images_per_prompt=len(job.seeds),
            generator=generators,
            output_type="latent",
            callback_on_step_end=step_end,
        ).images
        timings["base"] = time.perf_counter() - t0
        if job.hires is not None:
            offset = job.steps
            out_w, out_h = job.output_size
            latents = torch.nn.functional.interpolate(
                latents, size=(out_h // 8, out_w // 8), mode="nearest-exact"
            )
            components["scheduler"] = make_scheduler(job.sampler, self._scheduler_config)
            refine = StableDiffusionXLImg2ImgPipeline(**components)
            refine.set_progress_bar_config(disable=True)
            t0 = time.perf_counter()
            latents = refine(
                **self._embed_kwargs(embeds),
                image=latents,
                strength=job.hires.strength,
                num_inference_steps=job.steps,
                guidance_scale=job.cfg,
                num_images_per_prompt=len(job.seeds),
                generator=generators,
                output_type="latent",
                callback_on_step_end=step_end,
            ).images
            timings["hires"] = time.perf_counter() - t0
        if cancel.cancelled:
            raise JobCancelled
        t0 = time.perf_counter()
        images = self.decode(latents)
        timings["vae_decode"] = time.perf_counter() - t0
        rendered = [
            RenderedImage(image, seed, self.infotext(job, seed))
            for image, seed in zip(images, job.seeds, strict=True)
        ]
        return RenderResult(rendered, time.perf_counter() - started, timings)

    @staticmethod
    def _embed_kwargs(embeds: PromptEmbeddings) -> dict[str, torch.Tensor]:
        return {
            "prompt_embeds": embeds.prompt_embeds,
            "negative_prompt_embeds": embeds.negative_prompt_embeds,
            "pooled_prompt_embeds": embeds.pooled_prompt_embeds,
            "negative_pooled_prompt_embeds": embeds.negative_pooled_prompt_embeds,
        }

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """Decode latents to images without NaN/black output in fp16.

        As diffusers does, a VAE whose config asks for it (``force_upcast``, the stock SDXL
        VAE) decodes in float32; a half-precision decode that still yields non-finite
        values is redone in float32 (the fp16-fix VAE never needs that).
        """
        vae = self.pipeline.vae
        half = vae.dtype in (torch.float16, torch.bfloat16)
        dtype = torch.float32 if half and vae.config.get("force_upcast", True) else vae.dtype
        decoded = self._decode_as(latents, dtype)
        if dtype != torch.float32 and not torch.isfinite(decoded).all():
            log.warning("VAE decode in %s overflowed; decoding again in float32", dtype)
            decoded = self._decode_as(latents, torch.float32)
        images: list[Image.Image] = self.pipeline.image_processor.postprocess(
            decoded, output_type="pil"
        )
        return images

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
        if job.hires is not None:
            params["Denoising strength"] = f"{job.hires.strength:g}"
            params["Hires upscale"] = f"{job.hires.scale:g}"
            params["Hires upscaler"] = HIRES_UPSCALER
        params.update(job.extra_params)
        return Infotext(job.prompt, job.negative_prompt, params)
