"""SDXL speed on the GPU: the seed's code path against the engine, with the guard.

Sized for a short GPU lease (one command of about 9 minutes), from the repository root::

    python benchmarks/bench_gpu.py --quick --budget-s 540 --json b.json --markdown b.md

On CUDA it builds the full SDXL architecture from ``benchmarks/sdxl_architecture/`` with
random fp16 weights directly on the GPU (nothing is downloaded; random weights do exactly
the work of the real ones) and a character-level CLIP tokenizer over the real vocabulary
size, then measures per image, at 832x1216 (and 1024x1024 without ``--quick``), 28 steps,
Euler a, CFG 7, batch 1, after warm-up, the median of ``--runs`` runs. The stages run in
this order, and each writes its rows to the report as soon as they are measured:

1. the environment line (card, driver, CUDA, torch, diffusers), before the model is built;
2. ``seed``: the model card's code, a plain diffusers ``StableDiffusionXLPipeline`` call (A);
3. ``engine-plain``: the project's engine with every speed-up off, the guard's reference;
4. ``engine-compile``: the engine's defaults with a compile that surely fits the lease
   (inductor mode ``default``, no inductor flags), and A/B;
5. the fp16 noise floor: the plain engine in fp16 against fp32, for every guard figure;
6. ``engine-autotune``: diffusers' whole SDXL recipe (inductor ``max-autotune`` with its
   inductor flags), and A/B, only if its compile fits in the time left;
7. extras, each only if it fits: throughput with 1, 2 and 4 images per call (eager, for
   micro-batching), ``cfg-cutoff`` (no CFG in the last steps, diffusers'
   ``SDXLCFGCutoffCallback``), ``cuda_graphs`` (the compile of stage 4 replayed as CUDA
   graphs), each speed-up alone;
   without ``--quick`` also fp16 against upcast VAE decode and the time to the first image
   of a fresh process with a cold and a warm compile cache.

Before each stage its duration is estimated from what was measured so far; a stage that
would not finish in the time left of ``--budget-s`` is skipped, and the report says so.
A watchdog ends the process cleanly when the budget is spent in the middle of a stage
(a compile cannot be interrupted otherwise), saving the report with a note first.

The correctness guard compares every variant with ``engine-plain``: the final latents, the
decoded image, and the UNet's noise prediction at every step (the latents alone are mostly
the seeded noise both sides share); the fp16-versus-fp32 floor of each figure is reported
beside it.

``--tiny`` (automatic without CUDA) runs the same flow on the CPU with the tiny test
pipeline, small sizes and few steps, the speed-ups forced on with torch.compile's
``eager`` backend so that every code path runs; its timings mean nothing.

Needs torch, diffusers, transformers, pydantic, numpy and Pillow; never imports discord.
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_PROCESS_START = time.perf_counter()  # before torch and diffusers are imported

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("bot") is None:  # not installed: run from the checkout
    sys.path.insert(0, str(ROOT))
ARCH = Path(__file__).resolve().parent / "sdxl_architecture"

# Work per image from the torch flop counter with 77-token prompts (sdxl_architecture/
# README.md): one UNet forward per image and step (twice per step with CFG), one decode.
UNET_TFLOP = {(832, 1216): 6.50, (1024, 1024): 6.76}
VAE_DECODE_TFLOP = {(832, 1216): 10.1, (1024, 1024): 10.5}
TOTAL_TFLOP_28_STEPS = {(832, 1216): 374.0, (1024, 1024): 389.0}
# Dense fp16 tensor-core peaks, TFLOP/s, by card name.
PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.0}

PROMPT = "1girl, solo, upper body, smile, looking at viewer, outdoors, night"
NEGATIVE = "lowres, bad anatomy, worst quality, low quality, jpeg artifacts"
SEED = 1234
TARGET_RATIO = 2.0


# -- report ----------------------------------------------------------------------------

# The engine variants an A/B line is written for, in the order they are measured.
B_VARIANTS = ("engine-compile", "engine-autotune", "cuda_graphs")


@dataclass
class Row:
    variant: str
    size: str
    seconds: float | None = None
    runs: int = 0
    text_encoders: float | None = None
    vae_decode: float | None = None
    peak_gib: float | None = None
    tflops: float | None = None
    warmup_s: float | None = None
    guard: str = ""
    applied: str = ""
    error: str = ""


@dataclass
class Report:
    env: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # variant -> what B is, exactly
    rows: list[Row] = field(default_factory=list)
    guards: list[str] = field(default_factory=list)
    vae: list[dict[str, Any]] = field(default_factory=list)
    throughput: list[dict[str, Any]] = field(default_factory=list)
    first_image: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, variant: str, size: str) -> Row | None:
        return next((r for r in self.rows if r.variant == variant and r.size == size), None)

    def put(self, row: Row) -> None:
        """Add ``row``, or replace the one of the same variant and size."""
        old = self.row(row.variant, row.size)
        if old is None:
            self.rows.append(row)
        else:
            self.rows[self.rows.index(old)] = row

    def seconds(self, variant: str, size: str) -> float | None:
        row = self.row(variant, size)
        return row.seconds if row is not None and row.seconds else None

    def ratio_lines(self) -> list[str]:
        lines = []
        for size in self.params.get("sizes", []):
            a = self.seconds("seed", size)
            measured = [(v, self.seconds(v, size)) for v in B_VARIANTS]
            measured = [(v, b) for v, b in measured if b is not None]
            if a is None or not measured:
                lines.append(f"A/B at {size}: not measured")
                continue
            for variant, b in measured:
                assert b is not None
                row = self.row(variant, size)
                runs = f", median of {row.runs} runs" if row is not None else ""
                ratio = a / b
                line = (
                    f"A/B at {size}, B = {variant} ({self.labels.get(variant, variant)}): "
                    f"seed {a:.3f} s / engine {b:.3f} s = **{ratio:.2f}x**{runs} "
                )
                if self.params.get("tiny"):
                    lines.append(line + "(tiny CPU run: no verdict, timings mean nothing)")
                    continue
                verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
                line += f"(target >= {TARGET_RATIO:.0f}x: {verdict}"
                if ratio < TARGET_RATIO:
                    line += f"; B would need {a / TARGET_RATIO:.3f} s, "
                    line += f"{b - a / TARGET_RATIO:.3f} s less"
                lines.append(line + ")")
        return lines

    def markdown(self) -> str:
        out = ["# SDXL speed benchmark (benchmarks/bench_gpu.py)", ""]
        out += [f"- {k}: {v}" for k, v in self.env.items()]
        out += [f"- {k}: {v}" for k, v in self.params.items()]
        out += ["", "## A/B (seed code path vs engine)", ""]
        out += [f"- {line}" for line in self.ratio_lines()]
        out += [
            "",
            "## Per image, batch 1 (median)",
            "",
            "| variant | size | s/image | runs | A/x | text enc. s | VAE decode s | peak GiB "
            "| TFLOP/s | warm-up s | guard vs engine-plain | applied |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            a = self.seconds("seed", r.size)
            ratio = f"{a / r.seconds:.2f}x" if a and r.seconds else ""
            if r.error:
                out.append(f"| {r.variant} | {r.size} | {r.error} ||||||||||")
                continue
            out.append(
                f"| {r.variant} | {r.size} | {_f(r.seconds)} | {r.runs} | {ratio} "
                f"| {_f(r.text_encoders)} | {_f(r.vae_decode)} | {_f(r.peak_gib, 2)} "
                f"| {_g(r.tflops)} | {_f(r.warmup_s, 1)} | {r.guard} | {r.applied} |"
            )
        out += ["", "## Correctness guard", ""] + [f"- {g}" for g in self.guards]
        if self.vae:
            out += ["", "## VAE decode: fp16 (fp16-fix VAE) vs upcast to fp32", ""]
            out += ["| size | mode | s | non-finite values |", "|---|---|---|---|"]
            out += [
                f"| {v['size']} | {v['mode']} | {_f(v['seconds'])} | {v['nonfinite']} |"
                for v in self.vae
            ]
        if self.throughput:
            out += ["", "## Throughput, images of one shape per pipeline call", ""]
            out += ["| variant | size | images/call | s/call | images/s |", "|---|---|---|---|---|"]
            out += [
                f"| {t['variant']} | {t['size']} | {t['batch']} | {_f(t['seconds'])} "
                f"| {_f(t['images_per_s'], 2)} |"
                for t in self.throughput
            ]
        if self.first_image:
            out += ["", "## Time to the first image after process start", ""]
            out += [
                "| compile cache | size | process start to first image s | import s "
                "| build s | warm-up s | first image s |",
                "|---|---|---|---|---|---|---|",
            ]
            out += [
                f"| {f['cache']} | {f['size']} | {_f(f.get('wall_s'), 1)} "
                f"| {_f(f.get('import_s'), 1)} | {_f(f.get('build_s'), 1)} "
                f"| {_f(f.get('warmup_s'), 1)} | {_f(f.get('first_image_s'))} |"
                for f in self.first_image
            ]
        if self.notes:
            out += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def save(self, markdown: Path | None, json_path: Path | None) -> None:
        if markdown is not None:
            markdown.write_text(self.markdown(), encoding="utf-8")
        if json_path is not None:
            data = asdict(self)
            data["ab_ratio"] = self.ratio_lines()
            json_path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def _f(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _g(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def describe_settings(settings: Any) -> str:
    """What an engine variant runs, exactly: the defaults, and each setting that differs."""
    from bot.config import SpeedSettings

    if settings is None:
        return "plain diffusers pipeline"
    defaults = SpeedSettings().model_dump()
    changed = {
        key: value
        for key, value in settings.model_dump().items()
        if defaults.get(key) != value and key not in ("warmup_sizes", "compile_cache_dir")
    }
    if not changed:
        return "engine defaults"
    return "engine defaults with " + ", ".join(f"{k}={v!r}" for k, v in changed.items())


# -- the model -------------------------------------------------------------------------


def _load_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@dataclass
class Model:
    """Components shared by every variant; UNet and VAE are copied per variant."""

    unet: Any
    vae: Any
    text_encoder: Any
    text_encoder_2: Any
    tokenizer: Any
    tokenizer_2: Any
    scheduler_config: dict[str, Any]
    device: Any
    dtype: Any

    def pipeline(self, *, copy_models: bool) -> Any:
        from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionXLPipeline

        unet = copy.deepcopy(self.unet) if copy_models else self.unet
        vae = copy.deepcopy(self.vae) if copy_models else self.vae
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=self.text_encoder,
            text_encoder_2=self.text_encoder_2,
            tokenizer=self.tokenizer,
            tokenizer_2=self.tokenizer_2,
            unet=unet,
            scheduler=EulerAncestralDiscreteScheduler.from_config(self.scheduler_config),
            # Both sides unwatermarked: the engine decodes itself and never watermarks, and a
            # pipeline built without this watermarks its output wherever the
            # invisible-watermark package is installed.
            add_watermarker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe


def build_full_model(device: Any, seed: int, workdir: Path) -> Model:
    """The full SDXL architecture with random fp16 weights, made directly on ``device``."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    dtype = torch.float16
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(_load_json(ARCH / "unet" / "config.json"))
        vae = AutoencoderKL.from_config(_load_json(ARCH / "vae" / "config.json"))
        te1_cfg = CLIPTextConfig(**_load_json(ARCH / "text_encoder" / "config.json"))
        te2_cfg = CLIPTextConfig(**_load_json(ARCH / "text_encoder_2" / "config.json"))
        text_encoder = CLIPTextModel(te1_cfg)
        text_encoder_2 = CLIPTextModelWithProjection(te2_cfg)
    modules = (unet, vae, text_encoder, text_encoder_2)
    for module in modules:
        torch.nn.Module.to(module, device=device, dtype=dtype)
        module.eval().requires_grad_(False)
    sys.path.insert(0, str(ROOT))
    from tests.support.tiny_sdxl import write_char_tokenizer

    # Character-level, over the real vocabulary size (special ids 49406/7): the text
    # encoders do the same work whatever the pieces.
    tokenizer = write_char_tokenizer(workdir / "tokenizer", te1_cfg.vocab_size)
    scheduler = _load_json(ARCH / "scheduler" / "scheduler_config.json")
    return Model(
        unet, vae, text_encoder, text_encoder_2, tokenizer, tokenizer, scheduler, device, dtype
    )


def build_tiny_model(workdir: Path) -> Model:
    """The tiny test pipeline (tests/support/tiny_sdxl.py) on the CPU in float32."""
    import torch

    sys.path.insert(0, str(ROOT))
    from tests.support.tiny_sdxl import build_tiny_pipeline

    pipe = build_tiny_pipeline(tmp=workdir)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        module.eval().requires_grad_(False)
    return Model(
        pipe.unet,
        pipe.vae,
        pipe.text_encoder,
        pipe.text_encoder_2,
        pipe.tokenizer,
        pipe.tokenizer_2,
        dict(pipe.scheduler.config),
        torch.device("cpu"),
        torch.float32,
    )


# -- measuring -------------------------------------------------------------------------


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: Any, fn: Callable[[], Any]) -> tuple[float, Any]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def _median(device: Any, fn: Callable[[], Any], runs: int) -> float:
    return statistics.median(_timed(device, fn)[0] for _ in range(runs))


@dataclass
class Outcome:
    """What the guard compares: final latents, the image, the UNet's output at every call."""

    latents: Any
    image: Any
    noise: list[Any]


@contextmanager
def _capture(pipe: Any) -> Iterator[dict[str, Any]]:
    """The final latents (as the VAE gets them) and every UNet output of the next render."""
    box: dict[str, Any] = {"noise": []}
    target = pipe.vae.post_quant_conv or pipe.vae.decoder

    def latents_hook(_m: Any, args: tuple[Any, ...]) -> None:
        box["latents"] = args[0].detach().float().cpu()

    def noise_hook(_m: Any, _args: tuple[Any, ...], output: Any) -> None:
        sample = output[0] if isinstance(output, tuple) else output.sample
        box["noise"].append(sample.detach().float().cpu())

    handles = [
        target.register_forward_pre_hook(latents_hook),
        pipe.unet.register_forward_hook(noise_hook),
    ]
    try:
        yield box
    finally:
        for handle in handles:
            handle.remove()


def _cond_rows(reference: list[Any], candidate: list[Any]) -> list[Any]:
    """The reference's rows that match the candidate's batch (the conditional half last).

    After a CFG cut-off the UNet runs on the conditional rows only; those steps compare
    with the conditional half of the reference's prediction.
    """
    return [ref[-cand.shape[0] :] for ref, cand in zip(reference, candidate, strict=True)]


def _peak_reset(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: Any) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def _free(device: Any) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def count_tflop(model: Model, pipe: Any, width: int, height: int, steps: int) -> float:
    """Total work per image: README figures for known sizes, else the flop counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if model.device.type == "cuda" and (width, height) in UNET_TFLOP:
        return UNET_TFLOP[width, height] * 2 * steps + VAE_DECODE_TFLOP[width, height]
    dev, dt = model.device, model.dtype
    cross = pipe.unet.config.cross_attention_dim
    pooled = pipe.text_encoder_2.config.projection_dim
    with torch.no_grad(), FlopCounterMode(display=False) as unet_count:
        pipe.unet(
            torch.zeros(1, 4, height // 8, width // 8, device=dev, dtype=dt),
            torch.tensor(500.0, device=dev),
            encoder_hidden_states=torch.zeros(1, 77, cross, device=dev, dtype=dt),
            added_cond_kwargs={
                "text_embeds": torch.zeros(1, pooled, device=dev, dtype=dt),
                "time_ids": torch.zeros(1, 6, device=dev, dtype=dt),
            },
            return_dict=False,
        )
    with torch.no_grad(), FlopCounterMode(display=False) as vae_count:
        pipe.vae.decode(torch.zeros(1, 4, height // 8, width // 8, device=dev, dtype=dt))
    return (unet_count.get_total_flops() * 2 * steps + vae_count.get_total_flops()) / 1e12


@dataclass(frozen=True)
class Variant:
    name: str
    what: str
    settings: Any  # SpeedSettings, or None for the seed's code path
    cuda_only: bool = False
    compiles: str = ""  # "default" or "autotune": which compile estimate applies
    cfg_cutoff: float | None = None  # seed path with CFG off from this fraction of the steps


def make_variants(base: Any, cfg_cutoff: float = 0.8) -> list[Variant]:
    """Every variant, in the order the stages run them."""
    off = base.model_copy(
        update={
            "channels_last": False,
            "fuse_qkv": False,
            "compile_unet": False,
            "compile_vae": False,
            "cuda_graphs": False,
            "cudnn_benchmark": False,
            "attention": "auto",
        }
    )
    quick_compile = _quick_compile(base)
    compiles = "autotune" if base.compile_mode == "max-autotune" else "default"

    def only(**on: Any) -> Any:
        return off.model_copy(update=on)

    return [
        Variant("seed", "A: model card code, plain diffusers pipeline", None),
        Variant(
            "engine-plain",
            "engine, speed-ups off (the guard's reference)",
            base.model_copy(update={"enabled": False}),
        ),
        Variant(
            "engine-compile",
            "B: engine defaults, compiled in inductor mode 'default' without inductor flags",
            quick_compile,
            compiles="default",
        ),
        Variant(
            "engine-autotune",
            "B: diffusers' SDXL recipe, compiled in mode 'max-autotune' with inductor flags",
            base.model_copy(update={"compile_mode": "max-autotune", "inductor_flags": True}),
            compiles="autotune",
        ),
        Variant(
            "cfg-cutoff",
            f"seed code path without CFG from {cfg_cutoff:.0%} of the steps on "
            "(diffusers' SDXLCFGCutoffCallback)",
            None,
            cfg_cutoff=cfg_cutoff,
        ),
        Variant(
            "cuda_graphs",
            "engine-compile replayed as CUDA graphs (mode reduce-overhead)",
            quick_compile.model_copy(update={"cuda_graphs": True}),
            cuda_only=True,
            compiles="graphs",
        ),
        Variant("channels_last", "alone", only(channels_last=True)),
        Variant("fuse_qkv", "alone", only(fuse_qkv=True)),
        Variant("cudnn_benchmark", "alone", only(cudnn_benchmark=True)),
        Variant("compile_unet", "alone", only(compile_unet=True), compiles=compiles),
        Variant("compile_vae", "alone", only(compile_vae=True), compiles=compiles),
        Variant("attention=flash", "alone", only(attention="flash")),
        Variant("attention=efficient", "alone", only(attention="efficient")),
        Variant("attention=cudnn", "alone", only(attention="cudnn")),
    ]


def _quick_compile(base: Any) -> Any:
    """The compile that surely fits a short lease: inductor's default mode, no extra flags."""
    return base.model_copy(update={"compile_mode": "default", "inductor_flags": False})


class Budget:
    """The time left of ``--budget-s``, and a watchdog that ends the run at its end.

    Stages are skipped when their estimate does not fit; the watchdog covers what an
    estimate cannot: a stage that overruns (a compile cannot be interrupted), where it
    notes the stage, saves the report and ends the process with status 0.
    """

    def __init__(self, seconds: float, on_expiry: Callable[[str], None]) -> None:
        self.seconds = seconds
        self.stage = "start-up"
        self._done = threading.Event()
        self._on_expiry = on_expiry
        if seconds > 0:
            threading.Thread(target=self._watch, name="bench-watchdog", daemon=True).start()

    def left(self) -> float:
        if self.seconds <= 0:
            return float("inf")
        return self.seconds - (time.perf_counter() - _PROCESS_START)

    def finish(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        if self._done.wait(max(0.0, self.left())):
            return
        self._on_expiry(self.stage)
        os._exit(0)


class Saver:
    """Writes the report; the main thread and the watchdog take turns."""

    def __init__(self, report: Report, markdown: Path | None, json_path: Path | None) -> None:
        self.report = report
        self.markdown = markdown
        self.json = json_path
        self.lock = threading.Lock()

    def save(self) -> None:
        with self.lock:
            self.report.save(self.markdown, self.json)

    def expire(self, stage: str, budget_s: float) -> None:
        """The watchdog's last act: say which stage the budget cut, save, print."""
        got = self.lock.acquire(timeout=30)
        try:
            self.report.notes.append(
                f"{stage}: cut by the time budget of {budget_s:.0f} s while running (a "
                "compile cannot be interrupted otherwise); what it measured before is above, "
                "later stages did not run"
            )
            self.report.save(self.markdown, self.json)
            print(self.report.markdown(), flush=True)
        finally:
            if got:
                self.lock.release()


class Bench:
    def __init__(self, args: argparse.Namespace, model: Model, saver: Saver) -> None:
        self.args = args
        self.model = model
        self.saver = saver
        self.report = saver.report
        self.sizes = [_size(s) for s in args.sizes]
        self.reference: dict[str, Outcome] = {}
        self.pending: dict[str, list[tuple[str, Outcome]]] = {}  # measured before the reference
        self.flops: dict[str, float] = {}
        # Seconds per image of the plain pipeline at the first size: a guess until the seed
        # is measured, then what every estimate scales.
        self.eager_s = 0.2 if args.tiny else 3.0
        self.compile_s: dict[str, float] = {}

    def save(self) -> None:
        self.saver.save()

    # -- estimates ---------------------------------------------------------------------

    def _area(self) -> float:
        w0, h0 = self.sizes[0]
        return sum(w * h for w, h in self.sizes) / (w0 * h0)

    def _renders(self, count: float) -> float:
        return count * self.eager_s * self._area()

    def compile_estimate(self, kind: str) -> float:
        if not kind:
            return 0.0
        default = self.compile_s.get("default", self.args.compile_default_s)
        per_size = {
            "default": self.args.compile_default_s,
            "autotune": self.args.compile_autotune_s,
            # Kernels compiled for engine-compile are in inductor's cache by then.
            "graphs": default,
        }[kind]
        return per_size * len(self.sizes)

    def estimate(self, variant: Variant) -> float:
        renders = self.args.warmup_runs + self.args.runs + 3  # + guard render, encode, decode
        return self.compile_estimate(variant.compiles) + self._renders(renders) + 5.0

    # -- variants ----------------------------------------------------------------------

    def job(self, width: int, height: int, seeds: tuple[int, ...] = (SEED,)) -> Any:
        from bot.engine.job import RenderJob

        return RenderJob(
            prompt=PROMPT,
            negative_prompt=NEGATIVE,
            width=width,
            height=height,
            steps=self.args.steps,
            cfg=self.args.cfg,
            sampler="Euler a",
            seeds=seeds,
        )

    def engine(self, settings: Any, *, dtype: Any = None) -> tuple[Any, Any]:
        from bot.engine.engine import Engine
        from bot.engine.loading import Placement
        from bot.engine.optimize import apply_optimizations

        copy_models = settings.enabled or dtype is not None
        pipe = self.model.pipeline(copy_models=copy_models)
        if dtype is not None:
            import torch

            # nn.Module.to, not ModelMixin.to, which logs a warning on every cast.
            for module in (pipe.unet, pipe.vae):
                torch.nn.Module.to(module, dtype=dtype)
            pipe.text_encoder = copy.deepcopy(pipe.text_encoder).to(dtype=dtype)
            pipe.text_encoder_2 = copy.deepcopy(pipe.text_encoder_2).to(dtype=dtype)
        placement = Placement(self.model.device, dtype or self.model.dtype)
        engine = Engine(pipe, placement=placement, model_name="bench", max_chunks=8)
        engine.optimizations = apply_optimizations(pipe, self.model.device, settings)
        return engine, pipe

    def run_variant(self, variant: Variant) -> None:
        from bot.engine.optimize import set_attention_backend

        dev = self.model.device
        self.report.labels[variant.name] = describe_settings(variant.settings)
        if variant.cfg_cutoff is not None:
            self.report.labels[variant.name] = variant.what
        if variant.cuda_only and dev.type != "cuda":
            for w, h in self.sizes:
                self.report.put(Row(variant.name, f"{w}x{h}", error="skipped: CUDA only"))
            self.save()
            return
        try:
            if variant.settings is None:
                self._measure_seed(variant, self.model.pipeline(copy_models=False))
            else:
                self._measure_engine(variant, *self.engine(variant.settings))
        except Exception as exc:  # one failing variant must not end the run
            _say(f"{variant.name} failed: {exc!r}")
            self.report.put(
                Row(variant.name, "all", error=f"failed: {type(exc).__name__}: {exc}"[:300])
            )
        finally:
            set_attention_backend("auto")
            _reset_process_state()
            _free(dev)
        self.save()

    def _guard(self, variant: str, size: str, outcome: Outcome) -> str:
        from bot.engine.guard import compare_outputs

        if variant == "engine-plain":
            self.reference[size] = outcome
            # The seed runs first (the order): its guard is settled now.
            for earlier, pending in self.pending.pop(size, []):
                row = self.report.row(earlier, size)
                if row is not None:
                    row.guard = self._guard(earlier, size, pending)
            return "reference"
        if size not in self.reference:
            self.pending.setdefault(size, []).append((variant, outcome))
            return "after engine-plain"
        ref = self.reference[size]
        g = compare_outputs(
            ref.latents,
            outcome.latents,
            ref.image,
            outcome.image,
            reference_noise=_cond_rows(ref.noise, outcome.noise),
            candidate_noise=outcome.noise,
        )
        what = {
            "seed": "seed code path (same computation)",
            "engine-compile": "engine-compile (B)",
            "engine-autotune": "engine-autotune (B)",
        }.get(variant, variant)
        self.report.guards.append(f"{what} vs engine-plain at {size}: {g.describe()}")
        noise = f", noise max {g.noise_rel_error:.1e}" if g.noise_rel_error is not None else ""
        verdict = "PASS" if g.passed else "FAIL"
        return f"{verdict} ({g.rel_error:.1e}, {g.psnr_db:.1f} dB{noise})"

    def _time_runs(self, row: Row, render: Callable[[], Any], w: int, h: int) -> None:
        """Warm-up renders, then timed ones; the row is saved after every timed run."""
        dev = self.model.device
        for _ in range(self.args.warmup_runs):
            render()
        _peak_reset(dev)
        times: list[float] = []
        for _ in range(self.args.runs):
            times.append(_timed(dev, render)[0])
            row.seconds = statistics.median(times)
            row.runs = len(times)
            row.tflops = self.tflop(w, h) / row.seconds
            row.peak_gib = _peak_gib(dev)
            self.report.put(row)
            self.save()
            _say(f"  {row.variant} {row.size}: {times[-1]:.3f} s (median {row.seconds:.3f} s)")

    def _measure_engine(self, variant: Variant, engine: Any, pipe: Any) -> None:
        from bot.engine.optimize import warm_up

        dev = self.model.device
        applied = engine.optimizations
        t_warm, _ = _timed(dev, lambda: warm_up(engine, applied, self.sizes, batch_sizes=[1]))
        if applied.compiled:
            self.compile_s.setdefault(variant.compiles, t_warm / len(self.sizes))
            _say(f"  {variant.name}: warm-up (compile) {t_warm:.1f} s")
        for w, h in self.sizes:
            size = f"{w}x{h}"
            job = self.job(w, h)
            row = Row(variant.name, size, applied=applied.describe().split(": ", 1)[-1])
            row.warmup_s = t_warm if applied.compiled else None
            self._time_runs(row, lambda job=job: engine.render(job), w, h)
            row.text_encoders = _median(
                dev, lambda: engine.encoder.encode(PROMPT, NEGATIVE), self.args.runs
            )
            with _capture(pipe) as box:
                result = engine.render(job)
            outcome = Outcome(box["latents"], result.images[0].image, box["noise"])
            latents = outcome.latents.to(dev, pipe.vae.dtype) * pipe.vae.config.scaling_factor
            row.vae_decode = _median(dev, lambda lat=latents: engine.decode(lat), self.args.runs)
            row.guard = self._guard(variant.name, size, outcome)
            self.report.put(row)
            self.save()

    def tflop(self, w: int, h: int) -> float:
        key = f"{w}x{h}"
        if key not in self.flops:
            pipe = self.model.pipeline(copy_models=False)
            self.flops[key] = count_tflop(self.model, pipe, w, h, self.args.steps)
        return self.flops[key]

    def _measure_seed(self, variant: Variant, pipe: Any) -> None:
        """A: the model card's call on a plain pipeline (prompts as strings, PIL out)."""
        import torch

        dev = self.model.device
        extra: dict[str, Any] = {}
        if variant.cfg_cutoff is not None:
            from diffusers.callbacks import SDXLCFGCutoffCallback

            extra["callback_on_step_end"] = SDXLCFGCutoffCallback(
                cutoff_step_ratio=variant.cfg_cutoff
            )

        def call(w: int, h: int) -> Any:
            return pipe(
                PROMPT,
                negative_prompt=NEGATIVE,
                width=w,
                height=h,
                guidance_scale=self.args.cfg,
                num_inference_steps=self.args.steps,
                generator=[torch.Generator("cpu").manual_seed(SEED)],
                **extra,
            ).images

        def encode() -> Any:
            with torch.no_grad():
                return pipe.encode_prompt(PROMPT, negative_prompt=NEGATIVE, device=dev)

        for index, (w, h) in enumerate(self.sizes):
            size = f"{w}x{h}"
            row = Row(variant.name, size, applied="none")
            self._time_runs(row, lambda w=w, h=h: call(w, h), w, h)
            if index == 0 and variant.cfg_cutoff is None and row.seconds:
                self.eager_s = row.seconds
            row.text_encoders = _median(dev, encode, self.args.runs)
            with _capture(pipe) as box:
                image = call(w, h)[0]
            outcome = Outcome(box["latents"], image, box["noise"])
            latents = outcome.latents.to(dev)
            row.vae_decode = _median(
                dev, lambda lat=latents: _upcast_decode(pipe, lat), self.args.runs
            )
            row.guard = self._guard(variant.name, size, outcome)
            self.report.put(row)
            self.save()

    # -- other stages ------------------------------------------------------------------

    def throughput(self) -> None:
        """Images per second with 1, 2, 4 images per call: micro-batching's case.

        The plain (eager) engine on its micro-batching path by default; with
        ``--throughput-compiled`` the engine-compile settings, compiled first for every
        images-per-call count (each one is a compile of its own).
        """
        from bot.engine.optimize import set_attention_backend, warm_up

        dev = self.model.device
        settings = _speed_settings(self.args, tiny=self.args.tiny)
        name = "engine-plain"
        settings = settings.model_copy(update={"enabled": False})
        if self.args.throughput_compiled:
            name = "engine-compile"
            settings = _quick_compile(_speed_settings(self.args, tiny=self.args.tiny))
        engine, _pipe = self.engine(settings)
        w, h = self.sizes[0]
        try:
            t_warm, _ = _timed(
                dev,
                lambda: warm_up(
                    engine, engine.optimizations, [(w, h)], batch_sizes=self.args.batches
                ),
            )
            if engine.optimizations.compiled:
                self.report.notes.append(
                    f"throughput of {name}: compiled for {self.args.batches} images per call "
                    f"in {t_warm:.1f} s"
                )
            for n in self.args.batches:
                job = self.job(w, h, tuple(SEED + i for i in range(n)))
                engine.render(job)
                seconds = _median(dev, lambda job=job: engine.render(job), self._throughput_runs)
                self.report.throughput.append(
                    {
                        "variant": name,
                        "size": f"{w}x{h}",
                        "batch": n,
                        "seconds": seconds,
                        "images_per_s": n / seconds,
                    }
                )
                _say(f"  throughput {name}: {n} per call, {seconds:.3f} s")
                self.save()
        finally:
            set_attention_backend("auto")
            _reset_process_state()

    @property
    def _throughput_runs(self) -> int:
        return min(self.args.runs, 2)

    def throughput_estimate(self) -> float:
        per_size = self.eager_s  # first size only
        renders = per_size * sum(self.args.batches) * (self._throughput_runs + 1) + 5.0
        if self.args.throughput_compiled:
            return renders + self.compile_estimate("default") * len(self.args.batches)
        return renders

    def breakdown(self) -> None:
        """Where B's time goes at the first size: the distance to the target explained."""
        w, h = self.sizes[0]
        size = f"{w}x{h}"
        for row in self.report.rows:
            if row.variant not in B_VARIANTS or row.size != size or not row.seconds:
                continue
            te, dec = row.text_encoders or 0.0, row.vae_decode or 0.0
            denoise = row.seconds - te - dec
            self.report.notes.append(
                f"{row.variant} at {size}: text encoders {te:.3f} s, VAE decode {dec:.3f} s, "
                f"the rest (denoising, scheduler, per-job overhead) {denoise:.3f} s = "
                f"{1000 * denoise / self.args.steps:.1f} ms per step"
            )
        self.save()

    def fp16_floor(self) -> None:
        """How far fp16 itself is from fp32: the plain engine in both precisions."""
        import torch

        from bot.engine.guard import compare_outputs

        if self.model.device.type != "cuda":
            self.report.guards.append("fp16 noise floor: n/a (the tiny run is float32 on CPU)")
            return
        w, h = self.sizes[0]
        size = f"{w}x{h}"
        if size not in self.reference:
            self.report.notes.append("fp16 noise floor: no engine-plain reference to compare")
            return
        base = self.reference[size]
        settings = _speed_settings(self.args, tiny=False).model_copy(update={"enabled": False})
        engine, pipe = self.engine(settings, dtype=torch.float32)
        try:
            with _capture(pipe) as box:
                image = engine.render(self.job(w, h)).images[0].image
            g = compare_outputs(
                box["latents"],
                base.latents,
                image,
                base.image,
                reference_noise=box["noise"],
                candidate_noise=base.noise,
            )
            text = g.describe().split(": ", 1)[1]
            self.report.guards.append(
                f"fp16 noise floor (plain engine fp16 vs fp32) at {size}: {text} "
                "(the floor: not a pass/fail check)"
            )
        finally:
            del engine, pipe
            _free(self.model.device)
        self.save()

    def floor_estimate(self) -> float:
        return 4 * self.eager_s + 20.0

    def vae_modes(self) -> None:
        """Decode the same latents in fp16 (as the fp16-fix VAE runs) and upcast to fp32."""
        import torch

        dev = self.model.device
        if dev.type != "cuda":
            self.report.notes.append("VAE fp16 vs upcast: n/a on CPU (no fp16 there)")
            return
        vae = self.model.vae
        for w, h in self.sizes:
            latents = torch.randn(1, 4, h // 8, w // 8, device=dev, dtype=torch.float16)
            for mode in ("upcast fp32 (stock VAE, engine default)", "fp16 (fp16-fix VAE)"):
                upcast = mode.startswith("upcast")

                def decode(upcast: bool = upcast, latents: Any = latents) -> Any:
                    with torch.no_grad():
                        if upcast:
                            return _upcast_decode_vae(vae, latents)
                        return vae.decode(latents, return_dict=False)[0]

                decode()
                seconds = _median(dev, decode, self.args.runs)
                out = decode()
                bad = int((~torch.isfinite(out)).sum())
                self.report.vae.append(
                    {"size": f"{w}x{h}", "mode": mode, "seconds": seconds, "nonfinite": bad}
                )
        self.save()

    def first_image(self) -> None:
        """A fresh process renders once: cold compile cache, then warm."""
        w, h = self.sizes[0]
        with tempfile.TemporaryDirectory(prefix="bench-compile-cache-") as cache:
            # The tiny run compiles with the eager backend, which has no cache to warm.
            for label in ("cold",) if self.args.tiny else ("cold", "warm"):
                cmd = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--child-first-image",
                    f"{w}x{h}",
                    "--cache-dir",
                    cache,
                    "--steps",
                    str(self.args.steps),
                ]
                cmd += ["--tiny"] if self.args.tiny else []
                for item in self.args.set or []:
                    cmd += ["--set", item]
                env = {
                    k: v
                    for k, v in os.environ.items()
                    if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
                }
                row: dict[str, Any] = {"cache": label, "size": f"{w}x{h}"}
                t0 = time.perf_counter()
                try:
                    proc = subprocess.run(
                        cmd,
                        capture_output=True,
                        text=True,
                        check=False,
                        env=env,
                        timeout=self.args.first_image_timeout,
                    )
                except subprocess.TimeoutExpired:
                    row["error"] = f"timed out after {self.args.first_image_timeout} s"
                    self.report.notes.append(f"first image ({label}): {row['error']}")
                    self.report.first_image.append(row)
                    break
                row["wall_s"] = time.perf_counter() - t0
                lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
                if proc.returncode == 0 and lines:
                    row.update(json.loads(lines[-1]))
                else:
                    row["error"] = proc.stderr.strip().splitlines()[-1:] or ["no output"]
                    self.report.notes.append(f"first image ({label}) failed: {row['error']}")
                self.report.first_image.append(row)
                self.save()


def _say(text: str) -> None:
    print(
        f"[bench {time.perf_counter() - _PROCESS_START:7.1f} s] {text}", file=sys.stderr, flush=True
    )


def _upcast_decode_vae(vae: Any, latents: Any) -> Any:
    import torch

    original = vae.dtype
    torch.nn.Module.to(vae, dtype=torch.float32)
    try:
        return vae.decode(latents.float(), return_dict=False)[0]
    finally:
        torch.nn.Module.to(vae, dtype=original)


def _upcast_decode(pipe: Any, scaled_latents: Any) -> Any:
    """diffusers' own decode at the end of a pipeline call (upcast when force_upcast)."""
    import torch

    with torch.no_grad():
        if pipe.vae.dtype == torch.float16 and pipe.vae.config.force_upcast:
            out = _upcast_decode_vae(pipe.vae, scaled_latents)
        else:
            out = pipe.vae.decode(scaled_latents.to(pipe.vae.dtype), return_dict=False)[0]
        return pipe.image_processor.postprocess(out, output_type="pil")


def _reset_process_state() -> None:
    """Undo what a variant set process-wide, so the next one starts from torch's defaults."""
    import torch

    torch._dynamo.reset()
    torch.compiler.set_stance("default")
    torch.backends.cudnn.benchmark = False


def _size(text: str) -> tuple[int, int]:
    from bot.config import parse_size

    return parse_size(text)


def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _speed_settings(args: argparse.Namespace, *, tiny: bool) -> Any:
    """The engine's defaults, forced on the CPU with the eager backend in tiny mode."""
    from bot.config import SpeedSettings

    data: dict[str, Any] = SpeedSettings().model_dump()
    if tiny:
        data.update(apply_on_cpu=True, compile_backend=args.tiny_backend)
    for item in args.set or []:
        key, _, raw = item.partition("=")
        data[key.strip()] = _parse_value(raw.strip())
    return SpeedSettings.model_validate(data)


def environment(tiny: bool) -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    env = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }
    if torch.cuda.is_available() and not tiny:
        env["card"] = torch.cuda.get_device_name(0)
        env["cuda"] = str(torch.version.cuda)
        env["cudnn"] = str(torch.backends.cudnn.version())
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
            env["driver"] = smi.stdout.strip().splitlines()[0] if smi.stdout.strip() else "?"
        except (OSError, subprocess.SubprocessError):
            env["driver"] = "?"
        env["model"] = "full SDXL architecture (sdxl_architecture/), random fp16 weights"
    else:
        env["card"] = f"none: CPU ({platform.machine()}, {os.cpu_count()} threads)"
        env["model"] = "tiny test pipeline, float32; timings NOT representative"
    return env


def peak_tflops(card: str) -> float | None:
    for name, peak in PEAK_TFLOPS.items():
        if name in card:
            return peak
    return None


# -- entry points ----------------------------------------------------------------------


def child_first_image(args: argparse.Namespace) -> int:
    """Run in a fresh process: import, build, apply, warm up one size, render once."""
    t_import = time.perf_counter()
    import torch

    from bot.engine.engine import Engine
    from bot.engine.loading import Placement
    from bot.engine.optimize import apply_optimizations, warm_up

    tiny = args.tiny or not torch.cuda.is_available()
    imported = time.perf_counter()
    settings = _speed_settings(args, tiny=tiny).model_copy(
        update={"compile_cache_dir": args.cache_dir}
    )
    with tempfile.TemporaryDirectory() as work:
        model = (
            build_tiny_model(Path(work))
            if tiny
            else build_full_model(torch.device("cuda"), 0, Path(work))
        )
        pipe = model.pipeline(copy_models=False)
        engine = Engine(
            pipe, placement=Placement(model.device, model.dtype), model_name="bench", max_chunks=8
        )
        _sync(model.device)
        built = time.perf_counter()
        engine.optimizations = apply_optimizations(pipe, model.device, settings)
        w, h = _size(args.child_first_image)
        warm_up(engine, engine.optimizations, [(w, h)], batch_sizes=[1])
        _sync(model.device)
        warmed = time.perf_counter()
        args.sizes = [args.child_first_image]
        engine.render(Bench(args, model, Saver(Report(), None, None)).job(w, h))
        _sync(model.device)
        done = time.perf_counter()
    print(
        json.dumps(
            {
                "import_s": imported - t_import,
                "build_s": built - imported,
                "warmup_s": warmed - built,
                "first_image_s": done - warmed,
                "since_start_s": done - _PROCESS_START,
            }
        )
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU run with the tiny pipeline")
    parser.add_argument("--sizes", type=lambda s: s.split(","), default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--runs", type=int, default=None, help="timed runs (median)")
    parser.add_argument("--warmup-runs", type=int, default=None, help="untimed runs first (1)")
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=None)
    parser.add_argument("--variants", default="all", help="comma list; --list-variants")
    parser.add_argument("--list-variants", action="store_true")
    parser.add_argument(
        "--set", action="append", help="override a SpeedSettings default: key=value (TOML)"
    )
    parser.add_argument(
        "--skip", default="", help="comma list of stages: floor,throughput,vae,first-image"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="first size only, 3 timed runs, no VAE-mode or first-image stages",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=0.0,
        help="seconds from process start: stages that would not fit are skipped, and a "
        "watchdog ends the run cleanly at the end (0: no limit)",
    )
    parser.add_argument(
        "--compile-default-s",
        type=float,
        default=None,
        help="estimated compile seconds per size in inductor mode 'default', UNet and VAE "
        "(240 on CUDA, 0 in tiny mode)",
    )
    parser.add_argument(
        "--compile-autotune-s",
        type=float,
        default=None,
        help="the same for mode 'max-autotune' (600 on CUDA, 0 in tiny mode)",
    )
    parser.add_argument(
        "--throughput-compiled",
        action="store_true",
        help="throughput of the engine-compile settings (compiled per images-per-call count) "
        "instead of the plain engine",
    )
    parser.add_argument("--cfg-cutoff", type=float, default=0.8, help="cfg-cutoff's step ratio")
    parser.add_argument("--first-image-timeout", type=float, default=1800.0)
    parser.add_argument(
        "--tiny-backend",
        default="eager",
        choices=["eager", "aot_eager", "inductor"],
        help="torch.compile backend of the tiny run (inductor: real, slow on CPU)",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--child-first-image", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", default="", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)

    import torch

    tiny = args.tiny or not torch.cuda.is_available()
    args.tiny = tiny
    args.steps = args.steps or (2 if tiny else 28)
    if args.child_first_image:
        return child_first_image(args)
    args.sizes = args.sizes or (["64x64"] if tiny else ["832x1216", "1024x1024"])
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    if args.quick:
        args.sizes = args.sizes[:1]
        skip |= {"vae", "first-image"}
    args.runs = args.runs or (1 if tiny else 3 if args.quick else 5)
    args.warmup_runs = 1 if args.warmup_runs is None else args.warmup_runs
    args.batches = args.batches or [1, 2, 4]
    if args.compile_default_s is None:
        args.compile_default_s = 0.0 if tiny else 240.0
    if args.compile_autotune_s is None:
        args.compile_autotune_s = 0.0 if tiny else 600.0
    base = _speed_settings(args, tiny=tiny)
    variants = make_variants(base, args.cfg_cutoff)
    order = [v.name for v in variants]
    if args.list_variants:
        for v in variants:
            print(f"{v.name}: {v.what}")
        return 0
    if args.variants != "all":
        wanted = [x.strip() for x in args.variants.split(",")]
        unknown = set(wanted) - {v.name for v in variants}
        if unknown:
            parser.error(f"unknown variants {sorted(unknown)}; see --list-variants")
        # engine-plain always: it is the guard's reference.
        variants = [v for v in variants if v.name in wanted or v.name == "engine-plain"]

    report = Report(env=environment(tiny))
    report.params = {
        "tiny": tiny,
        "sizes": args.sizes,
        "steps": args.steps,
        "sampler": "Euler a",
        "cfg": args.cfg,
        "runs (median)": args.runs,
        "warm-up runs": args.warmup_runs,
        "time budget s": args.budget_s or "none",
        "engine defaults as run (B)": base.model_dump_json(exclude={"warmup_sizes"}),
    }
    report.notes.append(
        "guard bounds: final latents relative error <= 1e-2, image PSNR >= 35 dB and every "
        "step's noise prediction relative error <= 1e-2 (bot/engine/guard.py "
        "MAX_LATENT_REL_ERROR, MIN_IMAGE_PSNR_DB, MAX_NOISE_REL_ERROR)"
    )
    if tiny:
        report.notes.append(
            "tiny mode: speed-ups forced on the CPU with torch.compile backend "
            f"'{args.tiny_backend}' to exercise every code path; timings mean nothing"
        )
    saver = Saver(report, args.markdown, args.json)
    saver.save()  # the environment line first, before anything can fail
    _say("environment: " + "; ".join(f"{k} {v}" for k, v in report.env.items()))
    budget = Budget(args.budget_s, lambda stage: saver.expire(stage, args.budget_s))
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as work:
        budget.stage = "building the model"
        t0 = time.perf_counter()
        model = (
            build_tiny_model(Path(work))
            if tiny
            else build_full_model(torch.device("cuda"), 0, Path(work))
        )
        report.notes.append(f"model built in {time.perf_counter() - t0:.1f} s")
        bench = Bench(args, model, saver)
        bench.save()
        for name, run, estimate in _stages(bench, variants, skip, order):
            need, left = estimate(), budget.left()
            if need > left:
                report.notes.append(
                    f"{name}: skipped, it would take about {need:.0f} s and {max(left, 0):.0f} s "
                    "of the time budget were left"
                )
                _say(f"{name}: skipped (estimate {need:.0f} s, {left:.0f} s left)")
                bench.save()
                continue
            budget.stage = name
            _say(f"{name} (estimate {need:.0f} s, {min(left, 1e9):.0f} s left)")
            try:
                run()
            except Exception as exc:  # one failing stage must not end the run
                _say(f"{name} failed: {exc!r}")
                report.notes.append(f"{name}: failed: {type(exc).__name__}: {exc}"[:300])
            _free(model.device)
        budget.stage = "the closing notes"
        bench.breakdown()
    budget.finish()
    peak = peak_tflops(report.env.get("card", ""))
    for row in report.rows:
        if peak and row.tflops and row.variant in ("seed", *B_VARIANTS):
            report.notes.append(
                f"{row.variant} at {row.size}: {row.tflops:.0f} TFLOP/s = "
                f"{100 * row.tflops / peak:.0f}% of the card's {peak:.0f} TFLOP/s dense fp16 peak"
            )
    saver.save()
    print(report.markdown())
    return 0


Stage = tuple[str, Callable[[], None], Callable[[], float]]

# Where the stages that are not variants run: right after the named variant.
_EXTRAS_AFTER = {"floor": "engine-compile", "throughput": "engine-autotune"}


def _stages(bench: Bench, variants: list[Variant], skip: set[str], order: list[str]) -> list[Stage]:
    """The run's stages in the issue's order: A, reference, B, floor, then what fits.

    ``order`` is every variant's name in :func:`make_variants` order; the extra stages take
    their place in it whether or not their neighbour was selected.
    """
    stages: dict[str, Stage] = {
        v.name: (v.name, lambda v=v: bench.run_variant(v), lambda v=v: bench.estimate(v))
        for v in variants
    }
    extras: dict[str, Stage] = {
        "floor": ("floor", bench.fp16_floor, bench.floor_estimate),
        "throughput": ("throughput", bench.throughput, bench.throughput_estimate),
        "vae": ("vae", bench.vae_modes, lambda: bench._renders(2 * bench.args.runs)),
        "first-image": (
            "first-image",
            bench.first_image,
            lambda: 2 * (60.0 + bench.compile_estimate("autotune")),
        ),
    }
    rank = {name: 10.0 * i for i, name in enumerate(order)}
    for name in extras:
        anchor = _EXTRAS_AFTER.get(name)
        rank[name] = rank[anchor] + 5 if anchor else 10.0 * len(order) + len(rank)
    stages |= {name: stage for name, stage in extras.items() if name not in skip}
    return sorted(stages.values(), key=lambda stage: rank[stage[0]])


if __name__ == "__main__":
    sys.exit(main())
