"""GPU speed-ups for the SDXL pipeline that do not change what it draws.

Everything here is applied once, right after the pipeline is loaded, by
:func:`apply_optimizations`; :func:`warm_up` then compiles for the configured sizes at
start-up. Whether an optimization may be on by default is decided by the correctness guard
(:mod:`bot.engine.guard`, which ``benchmarks/bench_gpu.py`` runs on the GPU).

On the CPU every optimization is a no-op unless ``apply_on_cpu`` forces it (tests do, to
exercise the code paths): CPU runs and CI keep the plain diffusers path.

Why these defaults (CUDA), measured on an NVIDIA H200 (BENCHMARKS.md, "Speed on the GPU"):

* ``channels_last`` + ``fuse_qkv`` + ``cudnn.benchmark`` + ``torch.compile`` of the UNet
  and of the VAE decoder with inductor in its ``default`` mode, no extra inductor flags:
  1.137 s per 832x1216 image (28 steps, Euler a, CFG 7) against 2.309 s for the plain
  diffusers pipeline, **2.03x**, with about 100 s of compiling per warm-up size. The guard
  passed (final latents 1.7e-3, image 60 dB, every step's noise prediction within 2.0e-3).
  The recipe is diffusers' published one for SDXL, less ``max-autotune`` and its flags:
  those take several more minutes of compiling per size and did not fit the measuring
  lease, so they stay opt-in (``compile_mode = "max-autotune"``, ``inductor_flags``)
  until a run shows they pay. None of it changes the arithmetic beyond the order of fp16
  operations, which the guard bounds.
* CUDA graphs are off: replaying the same compile as CUDA graphs measured 1.117 s, within
  run-to-run noise of 1.137 s, while cudagraph trees keep a private memory pool per
  captured shape and per-thread state (the engine renders in a worker thread) and reuse
  output buffers between replays. ``cuda_graphs = true`` turns them on.
* The attention backend stays PyTorch's own choice (``auto``: flash, then memory-efficient,
  then math); cuDNN attention is opt-in. ``attention`` puts one backend first.
* ``cudnn.benchmark`` picks the fastest convolution algorithm per shape (also for shapes
  that run eagerly).

Each one is switchable in config; ``benchmarks/bench_gpu.py --quick`` measures them on
another card within a short lease.

Compilation uses static shapes: each (size, images per call, prompt length) compiles once.
:func:`warm_up` compiles the configured sizes at start-up; afterwards, with
``unwarmed_shapes = "eager"``, a shape that was not warmed runs eagerly (plain speed)
instead of stalling the queue for minutes of compilation. Until :func:`warm_up` has run,
compiled modules run eagerly. ``compile_cache_dir`` keeps inductor's caches (FX graphs,
autotuning results, Triton kernels) across restarts. Prompts are padded to
``pad_prompt_chunks`` chunks with masked, zero embeddings, so prompts of one to that many
chunks share one compiled graph and still draw exactly what they drew unpadded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from bot.config import (
    AttentionBackend,
    Settings,
    SpeedSettings,
)
from bot.engine.job import RenderJob

log = logging.getLogger(__name__)


CHUNK_TOKENS = 77  # one 75-token prompt chunk framed by BOS and EOS


def speed_settings(settings: Settings) -> SpeedSettings:
    """The ``[engine.speed]`` section."""
    return settings.engine.speed


@dataclass(frozen=True)
class AppliedOptimizations:
    """What :func:`apply_optimizations` did, for the log and for :func:`warm_up`."""

    device: str
    settings: SpeedSettings = field(default_factory=SpeedSettings)
    channels_last: bool = False
    fused_qkv: bool = False
    compiled: tuple[str, ...] = ()
    compile_mode: str | None = None
    attention: str = "auto"
    cudnn_benchmark: bool = False
    prompt_chunks: int = 0
    cache_dir: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def any(self) -> bool:
        return bool(
            self.channels_last
            or self.fused_qkv
            or self.compiled
            or self.attention != "auto"
            or self.cudnn_benchmark
        )

    def describe(self) -> str:
        if not self.any:
            why = "; ".join(self.notes) or "nothing enabled"
            return f"speed-ups on {self.device}: none ({why})"
        parts = []
        if self.channels_last:
            parts.append("channels_last")
        if self.fused_qkv:
            parts.append("fused QKV")
        if self.compiled:
            parts.append(f"compiled {' + '.join(self.compiled)} ({self.compile_mode})")
        if self.prompt_chunks:
            parts.append(f"prompts padded to {self.prompt_chunks} chunks")
        if self.attention != "auto":
            parts.append(f"attention {self.attention} first")
        if self.cudnn_benchmark:
            parts.append("cudnn.benchmark")
        if self.cache_dir:
            parts.append(f"compile cache {self.cache_dir}")
        text = f"speed-ups on {self.device}: {', '.join(parts)}"
        return text + (f" ({'; '.join(self.notes)})" if self.notes else "")


# -- attention backend -------------------------------------------------------------------

_ATTENTION_STACK = contextlib.ExitStack()


_BACKEND_NAMES = ("flash", "efficient", "cudnn", "math")


def _sdp_backend(name: str) -> SDPBackend:
    backends = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }
    return backends[name]


def _priority(name: str) -> list[SDPBackend]:
    """``name`` first, then the others in torch's own order, all enabled."""
    return [_sdp_backend(name)] + [_sdp_backend(n) for n in _BACKEND_NAMES if n != name]


def set_attention_backend(name: AttentionBackend) -> None:
    """Put one SDPA backend first for the whole process; ``auto`` restores torch's order.

    The others stay enabled behind it, so a call the preferred kernel cannot run (a masked
    cross-attention under flash, say) falls back instead of failing.
    """
    _ATTENTION_STACK.close()
    if name != "auto":
        _ATTENTION_STACK.enter_context(sdpa_kernel(_priority(name), set_priority=True))


# -- compilation -------------------------------------------------------------------------


def _use_cache_dir(folder: str) -> str:
    """Point inductor's caches (FX graphs, autotuning, Triton kernels) at ``folder``."""
    path = Path(folder).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    os.environ["TRITON_CACHE_DIR"] = str(path / "triton")
    os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "1"
    os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "1"
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    inductor_config.autotune_local_cache = True
    return str(path)


def _set_inductor_flags() -> None:
    """The flags of diffusers' SDXL guide (process-wide; only compiled code reads them)."""
    import torch._inductor.config as inductor_config

    inductor_config.conv_1x1_as_mm = True
    inductor_config.coordinate_descent_tuning = True
    inductor_config.epilogue_fusion = False
    inductor_config.coordinate_descent_check_all_directions = True


def _compile_forward(module: torch.nn.Module, settings: SpeedSettings) -> None:
    """Compile ``module.forward`` in place; its hooks stay eager, outside the graph."""
    kwargs: dict[str, Any] = {"backend": settings.compile_backend, "dynamic": False}
    if settings.compile_backend == "inductor":
        kwargs["mode"] = settings.inductor_mode
    compiled = torch.compile(module.forward, **kwargs)
    module.forward = compiled


def is_compiled(module: torch.nn.Module) -> bool:
    """Whether :func:`apply_optimizations` compiled this module's forward."""
    return "forward" in vars(module) and hasattr(
        vars(module)["forward"], "_torchdynamo_orig_callable"
    )


def _pad_prompt_hook(chunks: int) -> Callable[..., Any]:
    """A UNet pre-hook: pad the text embeddings to ``chunks`` chunks, masked out.

    The padding is zeros with an attention mask of 0; the UNet turns the mask into a
    -10000 bias, whose softmax weight is exactly 0 in fp16 and fp32, so cross-attention
    reads only the real tokens and the image is the unpadded one.
    """
    target = chunks * CHUNK_TOKENS

    def hook(
        _module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        states = kwargs.get("encoder_hidden_states")
        if not isinstance(states, torch.Tensor) or kwargs.get("encoder_attention_mask") is not None:
            return None
        length = states.shape[1]
        if length >= target or length % CHUNK_TOKENS:
            return None
        batch = states.shape[0]
        padding = states.new_zeros(batch, target - length, states.shape[2])
        mask = states.new_zeros(batch, target)
        mask[:, :length] = 1
        padded = torch.cat([states, padding], dim=1)
        return args, {**kwargs, "encoder_hidden_states": padded, "encoder_attention_mask": mask}

    return hook


def _set_stance(stance: str) -> None:
    torch.compiler.set_stance(stance)


# -- applying ----------------------------------------------------------------------------


@torch.no_grad()
def apply_optimizations(
    pipe: Any, device: torch.device | str, settings: SpeedSettings | None = None
) -> AppliedOptimizations:
    """Apply ``settings`` to the loaded SDXL ``pipe`` (in place) and say what was done.

    Call once, right after loading. On the CPU nothing happens unless ``apply_on_cpu``.
    """
    settings = settings or SpeedSettings()
    device = torch.device(device)
    where = device.type
    if not settings.enabled:
        return AppliedOptimizations(where, settings, notes=("disabled in config",))
    if device.type != "cuda" and not settings.apply_on_cpu:
        return AppliedOptimizations(where, settings, notes=("CPU keeps the plain path",))
    notes: list[str] = []
    unet, vae = pipe.unet, pipe.vae

    channels_last = settings.channels_last
    if channels_last:
        unet.to(memory_format=torch.channels_last)
        vae.to(memory_format=torch.channels_last)

    fused = False
    if settings.fuse_qkv:
        try:
            pipe.fuse_qkv_projections(unet=True, vae=True)
            fused = True
        except (ValueError, AttributeError) as exc:
            notes.append(f"QKV fusion unavailable: {exc}")

    cudnn_benchmark = settings.cudnn_benchmark and device.type == "cuda"
    if cudnn_benchmark:
        torch.backends.cudnn.benchmark = True

    set_attention_backend(settings.attention)

    cache_dir: str | None = None
    compiled: list[str] = []
    if settings.compile_unet or settings.compile_vae:
        if settings.compile_backend == "inductor":
            if settings.compile_cache_dir:
                cache_dir = _use_cache_dir(settings.compile_cache_dir)
            if settings.inductor_flags:
                _set_inductor_flags()
        import torch._dynamo.config as dynamo_config

        # Every (size, batch, prompt length) is one more compiled entry per function.
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
        if settings.compile_unet:
            _compile_forward(unet, settings)
            compiled.append("unet")
        if settings.compile_vae:
            _compile_forward(vae.decoder, settings)
            compiled.append("vae decoder")
        if settings.unwarmed_shapes == "eager":
            _set_stance("force_eager")  # until warm_up() compiles the configured shapes

    prompt_chunks = 0
    if settings.pad_prompt_chunks and "unet" in compiled:
        unet.register_forward_pre_hook(
            _pad_prompt_hook(settings.pad_prompt_chunks), with_kwargs=True
        )
        prompt_chunks = settings.pad_prompt_chunks

    return AppliedOptimizations(
        device=where,
        settings=settings,
        channels_last=channels_last,
        fused_qkv=fused,
        compiled=tuple(compiled),
        compile_mode=(
            (
                settings.inductor_mode
                if settings.compile_backend == "inductor"
                else settings.compile_backend
            )
            if compiled
            else None
        ),
        attention=settings.attention,
        cudnn_benchmark=cudnn_benchmark,
        prompt_chunks=prompt_chunks,
        cache_dir=cache_dir,
        notes=tuple(notes),
    )


# -- warm-up -----------------------------------------------------------------------------


class _Renders(Protocol):
    def render(self, job: Any) -> Any: ...


@dataclass
class WarmUpReport:
    """Seconds spent compiling each (width, height, images per call)."""

    shapes: list[tuple[int, int, int, float]] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str = ""


def warm_up(
    target: _Renders | Any,
    applied: AppliedOptimizations,
    sizes: Sequence[tuple[int, int]] | None = None,
    *,
    batch_sizes: Sequence[int] | None = None,
    steps: int = 2,
    logger: logging.Logger | None = None,
) -> WarmUpReport:
    """Compile for each size and batch size by rendering a short job, logging progress.

    ``target`` is the :class:`~bot.engine.Engine` (warm-up goes through its own render
    path, so exactly the graphs jobs will use are compiled) or a diffusers SDXL pipeline.
    Without compiled modules this does nothing. Afterwards, shapes not warmed up run
    eagerly when ``unwarmed_shapes`` is ``"eager"``. If compilation fails, the error is
    logged, every job runs eagerly from then on, and ``report.skipped`` says why.

    Run it on the thread that renders (cudagraph trees keep per-thread state); it holds
    the engine's lock per warm-up job, like any other job.
    """
    out = logger or log
    report = WarmUpReport()
    if not applied.compiled:
        report.skipped = "nothing compiled"
        return report
    settings = applied.settings
    shapes = [
        (w, h, b)
        for (w, h) in (sizes if sizes is not None else settings.sizes)
        for b in (batch_sizes if batch_sizes is not None else settings.warmup_batch_sizes)
    ]
    _set_stance("default")
    started = time.perf_counter()
    stance = "eager_on_recompile" if settings.unwarmed_shapes == "eager" else "default"
    try:
        for index, (width, height, batch) in enumerate(shapes, start=1):
            out.info(
                "compiling for %dx%d, %d image(s) per call (%d/%d)...",
                width,
                height,
                batch,
                index,
                len(shapes),
            )
            t0 = time.perf_counter()
            _render_once(target, width, height, batch, steps)
            seconds = time.perf_counter() - t0
            report.shapes.append((width, height, batch, seconds))
            out.info("compiled %dx%d x%d in %.1f s", width, height, batch, seconds)
    except Exception as exc:
        # A compiler failure must not take the bot down: serve on the plain (eager) path.
        out.exception("compilation failed; every job runs eagerly (uncompiled)")
        report.skipped = f"failed: {type(exc).__name__}: {exc}"
        stance = "force_eager"
    finally:
        report.seconds = time.perf_counter() - started
        _set_stance(stance)
    if not report.skipped:
        out.info("warm-up done: %d shape(s) in %.1f s", len(shapes), report.seconds)
    return report


def _render_once(target: Any, width: int, height: int, batch: int, steps: int) -> None:
    if hasattr(target, "render"):
        job = RenderJob(
            prompt="warm-up",
            negative_prompt="",
            width=width,
            height=height,
            steps=steps,
            cfg=7.0,
            sampler="Euler a",
            seeds=tuple(range(batch)),
        )
        target.render(job)
        return
    target(
        prompt="warm-up",
        negative_prompt="",
        width=width,
        height=height,
        num_inference_steps=steps,
        guidance_scale=7.0,
        num_images_per_prompt=batch,
    )
