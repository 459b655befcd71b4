"""SDXL speed on the GPU: the seed's code path against the engine, with the guard.

One command, from the repository root::

    python benchmarks/bench_gpu.py --json bench_gpu.json --markdown bench_gpu.md

On CUDA it builds the full SDXL architecture from ``benchmarks/sdxl_architecture/`` with
random fp16 weights directly on the GPU (nothing is downloaded; random weights do exactly
the work of the real ones) and a character-level CLIP tokenizer over the real vocabulary
size, then measures per image, at 832x1216 and 1024x1024, 28 steps, Euler a, CFG 7,
batch 1, after warm-up, the median of ``--runs`` runs of:

* ``seed``: the model card's code, a plain diffusers ``StableDiffusionXLPipeline`` call (A);
* ``engine-default``: the project's engine with its default speed-ups (B), and A/B;
* ``engine-plain`` (all speed-ups off) and each speed-up alone (``channels_last``,
  ``fuse_qkv``, ``cudnn_benchmark``, ``compile_unet``, ``compile_vae``, each attention
  backend first) and ``cuda_graphs`` (defaults plus CUDA graphs);

with text-encoder and VAE-decode times, peak GPU memory, achieved TFLOP/s against the FLOP
count, and the correctness guard of every variant against ``engine-plain`` (and of the
fp16 engine against an fp32 one: the fp16 noise floor). Then fp16 against upcast VAE
decode, throughput with 1, 2 and 4 images per call, and the time to the first image of a
fresh process, with a cold and then a warm compile cache.

``--tiny`` (automatic without CUDA) runs the same flow on the CPU with the tiny test
pipeline, small sizes and few steps, the speed-ups forced on with torch.compile's
``eager`` backend so that every code path runs; its timings mean nothing.

Needs torch, diffusers, transformers, pydantic, numpy and Pillow; never imports discord.
The report is written after every section, so a run cut short keeps what it measured.
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
import string
import subprocess
import sys
import tempfile
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


@dataclass
class Row:
    variant: str
    size: str
    seconds: float | None = None
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
    rows: list[Row] = field(default_factory=list)
    guards: list[str] = field(default_factory=list)
    vae: list[dict[str, Any]] = field(default_factory=list)
    throughput: list[dict[str, Any]] = field(default_factory=list)
    first_image: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def seconds(self, variant: str, size: str) -> float | None:
        for row in self.rows:
            if row.variant == variant and row.size == size and row.seconds:
                return row.seconds
        return None

    def ratio_lines(self) -> list[str]:
        lines = []
        for size in self.params.get("sizes", []):
            a, b = self.seconds("seed", size), self.seconds("engine-default", size)
            if a is None or b is None:
                lines.append(f"A/B at {size}: not measured")
                continue
            ratio = a / b
            line = f"A/B at {size}: seed {a:.3f} s / engine {b:.3f} s = **{ratio:.2f}x** "
            if self.params.get("tiny"):
                lines.append(line + "(tiny CPU run: no verdict, timings mean nothing)")
                continue
            verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
            line += f"(target >= {TARGET_RATIO:.0f}x: {verdict}"
            if ratio < TARGET_RATIO:
                line += (
                    f"; B would need {a / TARGET_RATIO:.3f} s, {b - a / TARGET_RATIO:.3f} s less"
                )
            lines.append(line + ")")
        return lines

    def markdown(self) -> str:
        out = ["# SDXL speed benchmark (benchmarks/bench_gpu.py)", ""]
        out += [f"- {k}: {v}" for k, v in self.env.items()]
        out += [f"- {k}: {v}" for k, v in self.params.items()]
        out += ["", "## A/B (seed code path vs engine defaults)", ""]
        out += [f"- {line}" for line in self.ratio_lines()]
        out += [
            "",
            "## Per image, batch 1 (median)",
            "",
            "| variant | size | s/image | A/x | text enc. s | VAE decode s | peak GiB "
            "| TFLOP/s | warm-up s | guard vs engine-plain | applied |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            a = self.seconds("seed", r.size)
            ratio = f"{a / r.seconds:.2f}x" if a and r.seconds else ""
            if r.error:
                out.append(f"| {r.variant} | {r.size} | {r.error} |||||||||")
                continue
            out.append(
                f"| {r.variant} | {r.size} | {_f(r.seconds)} | {ratio} | {_f(r.text_encoders)} "
                f"| {_f(r.vae_decode)} | {_f(r.peak_gib, 2)} | {_g(r.tflops)} "
                f"| {_f(r.warmup_s, 1)} | {r.guard} | {r.applied} |"
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


# -- the model -------------------------------------------------------------------------


def _load_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _write_char_tokenizer(folder: Path, vocab_size: int) -> Any:
    """A character-level CLIP tokenizer whose special ids are the real ones (49406/7)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    chars = [c for c in string.printable if not c.isspace()]
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    while len(vocab) < vocab_size - 2:
        vocab[f"<unused{len(vocab)}>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(
        str(folder), model_max_length=77, pad_token="<|endoftext|>"
    )


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
    tokenizer = _write_char_tokenizer(workdir / "tokenizer", te1_cfg.vocab_size)
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


@contextmanager
def _capture_latents(pipe: Any) -> Iterator[dict[str, Any]]:
    """The final latents (scaled, as the VAE gets them) of whatever decodes next."""
    box: dict[str, Any] = {}
    target = pipe.vae.post_quant_conv or pipe.vae.decoder

    def hook(_m: Any, args: tuple[Any, ...]) -> None:
        box["latents"] = args[0].detach().float().cpu()

    handle = target.register_forward_pre_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


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


def make_variants(base: Any) -> list[Variant]:
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

    def only(**on: Any) -> Any:
        return off.model_copy(update=on)

    return [
        Variant("seed", "A: model card code, plain diffusers pipeline", None),
        Variant(
            "engine-plain", "engine, speed-ups off", base.model_copy(update={"enabled": False})
        ),
        Variant("engine-default", "B: engine with its defaults", base),
        Variant("channels_last", "alone", only(channels_last=True)),
        Variant("fuse_qkv", "alone", only(fuse_qkv=True)),
        Variant("cudnn_benchmark", "alone", only(cudnn_benchmark=True)),
        Variant("compile_unet", "alone", only(compile_unet=True)),
        Variant("compile_vae", "alone", only(compile_vae=True)),
        Variant("attention=flash", "alone", only(attention="flash")),
        Variant("attention=efficient", "alone", only(attention="efficient")),
        Variant("attention=cudnn", "alone", only(attention="cudnn")),
        Variant(
            "cuda_graphs",
            "defaults + CUDA graphs",
            base.model_copy(update={"cuda_graphs": True}),
            cuda_only=True,
        ),
    ]


@dataclass
class Outcome:
    latents: Any
    image: Any


class Bench:
    def __init__(self, args: argparse.Namespace, model: Model, report: Report) -> None:
        self.args = args
        self.model = model
        self.report = report
        self.sizes = [_size(s) for s in args.sizes]
        self.reference: dict[str, Outcome] = {}
        self.flops: dict[str, float] = {}

    def save(self) -> None:
        self.report.save(self.args.markdown, self.args.json)

    def job(self, width: int, height: int, seeds: tuple[int, ...] = (SEED,)) -> Any:
        from bot.engine.engine import RenderJob

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
        if variant.cuda_only and dev.type != "cuda":
            for w, h in self.sizes:
                self.report.rows.append(Row(variant.name, f"{w}x{h}", error="skipped: CUDA only"))
            return
        _say(f"{variant.name}: {variant.what}")
        try:
            if variant.settings is None:
                self._measure_seed(self.model.pipeline(copy_models=False))
            else:
                self._measure_engine(variant, *self.engine(variant.settings))
        except Exception as exc:  # one failing variant must not end the run
            _say(f"{variant.name} failed: {exc!r}")
            self.report.rows.append(
                Row(variant.name, "all", error=f"failed: {type(exc).__name__}: {exc}"[:200])
            )
        finally:
            set_attention_backend("auto")
            _reset_process_state()
            _free(dev)
        self.save()

    def _guard(self, variant: str, size: str, outcome: Outcome) -> str:
        from bot.engine.optimize import compare_outputs

        if variant == "engine-plain":
            self.reference[size] = outcome
            return "reference"
        if size not in self.reference:
            return ""
        ref = self.reference[size]
        g = compare_outputs(ref.latents, outcome.latents, ref.image, outcome.image)
        if variant == "engine-default":
            self.report.guards.append(f"engine defaults vs engine-plain at {size}: {g.describe()}")
        elif variant == "seed":
            self.report.guards.append(
                f"seed code path vs engine-plain at {size} (same computation): {g.describe()}"
            )
        return f"{'PASS' if g.passed else 'FAIL'} ({g.rel_error:.1e}, {g.psnr_db:.1f} dB)"

    def _measure_engine(self, variant: Variant, engine: Any, pipe: Any) -> None:
        from bot.engine.optimize import warm_up

        dev = self.model.device
        applied = engine.optimizations
        t_warm, _ = _timed(dev, lambda: warm_up(engine, applied, self.sizes, batch_sizes=[1]))
        for w, h in self.sizes:
            size = f"{w}x{h}"
            job = self.job(w, h)
            for _ in range(self.args.warmup_runs):
                engine.render(job)
            _peak_reset(dev)
            seconds = _median(dev, lambda job=job: engine.render(job), self.args.runs)
            peak = _peak_gib(dev)
            te = _median(dev, lambda: engine.encoder.encode(PROMPT, NEGATIVE), self.args.runs)
            with _capture_latents(pipe) as box:
                result = engine.render(job)
            outcome = Outcome(box["latents"], result.images[0].image)
            latents = outcome.latents.to(dev, pipe.vae.dtype) * pipe.vae.config.scaling_factor
            decode = _median(dev, lambda lat=latents: engine.decode(lat), self.args.runs)
            self.report.rows.append(
                Row(
                    variant.name,
                    size,
                    seconds,
                    te,
                    decode,
                    peak,
                    self.tflop(pipe, w, h) / seconds,
                    t_warm if applied.compiled else None,
                    self._guard(variant.name, size, outcome),
                    applied.describe().split(": ", 1)[-1],
                )
            )
            self.save()
        if variant.name == "engine-default":
            self._throughput("engine-default", engine=engine, applied=applied)

    def tflop(self, pipe: Any, w: int, h: int) -> float:
        key = f"{w}x{h}"
        if key not in self.flops:
            self.flops[key] = count_tflop(self.model, pipe, w, h, self.args.steps)
        return self.flops[key]

    def _measure_seed(self, pipe: Any) -> None:
        """A: the model card's call on a plain pipeline (prompts as strings, PIL out)."""
        import torch

        dev = self.model.device

        def call(w: int, h: int, n: int = 1) -> Any:
            return pipe(
                PROMPT,
                negative_prompt=NEGATIVE,
                width=w,
                height=h,
                guidance_scale=self.args.cfg,
                num_inference_steps=self.args.steps,
                num_images_per_prompt=n,
                generator=[torch.Generator("cpu").manual_seed(SEED + i) for i in range(n)],
            ).images

        def encode() -> Any:
            with torch.no_grad():
                return pipe.encode_prompt(PROMPT, negative_prompt=NEGATIVE, device=dev)

        for w, h in self.sizes:
            size = f"{w}x{h}"
            for _ in range(self.args.warmup_runs):
                call(w, h)
            _peak_reset(dev)
            seconds = _median(dev, lambda w=w, h=h: call(w, h), self.args.runs)
            peak = _peak_gib(dev)
            te = _median(dev, encode, self.args.runs)
            with _capture_latents(pipe) as box:
                image = call(w, h)[0]
            outcome = Outcome(box["latents"], image)
            latents = outcome.latents.to(dev)
            decode = _median(dev, lambda lat=latents: _upcast_decode(pipe, lat), self.args.runs)
            guard = self._guard("seed", size, outcome)
            tflops = self.tflop(pipe, w, h) / seconds
            self.report.rows.append(
                Row("seed", size, seconds, te, decode, peak, tflops, None, guard, "none")
            )
            self.save()
        self._throughput("seed", call=call)

    def _throughput(
        self,
        name: str,
        *,
        engine: Any = None,
        applied: Any = None,
        call: Callable[..., Any] | None = None,
    ) -> None:
        from bot.engine.optimize import warm_up

        dev = self.model.device
        w, h = self.sizes[0]
        batches = self.args.batches
        if engine is not None and applied is not None:
            warm_up(engine, applied, [(w, h)], batch_sizes=[b for b in batches if b != 1])
        for n in batches:
            if engine is not None:
                job = self.job(w, h, tuple(SEED + i for i in range(n)))
                fn: Callable[[], Any] = lambda job=job: engine.render(job)  # noqa: E731
            else:
                assert call is not None
                fn = lambda n=n: call(w, h, n)  # noqa: E731
            fn()
            seconds = _median(dev, fn, self.args.runs)
            self.report.throughput.append(
                {
                    "variant": name,
                    "size": f"{w}x{h}",
                    "batch": n,
                    "seconds": seconds,
                    "images_per_s": n / seconds,
                }
            )
        self.save()

    def breakdown(self) -> None:
        """Where B's time goes at the first size: the distance to the target explained."""
        w, h = self.sizes[0]
        size = f"{w}x{h}"
        for row in self.report.rows:
            if row.variant != "engine-default" or row.size != size or not row.seconds:
                continue
            te, dec = row.text_encoders or 0.0, row.vae_decode or 0.0
            denoise = row.seconds - te - dec
            self.report.notes.append(
                f"engine-default at {size}: text encoders {te:.3f} s, VAE decode {dec:.3f} s, "
                f"the rest (denoising, scheduler, per-job overhead) {denoise:.3f} s = "
                f"{1000 * denoise / self.args.steps:.1f} ms per step"
            )
        self.save()

    def fp16_floor(self) -> None:
        """How far fp16 itself is from fp32: the plain engine in both precisions."""
        import torch

        from bot.engine.optimize import compare_outputs

        if self.model.device.type != "cuda":
            self.report.guards.append("fp16 noise floor: n/a (the tiny run is float32 on CPU)")
            return
        w, h = self.sizes[0]
        size = f"{w}x{h}"
        if size not in self.reference:
            return
        base = self.reference[size]
        settings = _speed_settings(self.args, tiny=False).model_copy(update={"enabled": False})
        engine, pipe = self.engine(settings, dtype=torch.float32)
        try:
            with _capture_latents(pipe) as box:
                image = engine.render(self.job(w, h)).images[0].image
            g = compare_outputs(box["latents"], base.latents, image, base.image)
            self.report.guards.append(
                f"fp16 noise floor (plain engine fp16 vs fp32) at {size}: rel. error "
                f"{g.rel_error:.2e}, PSNR {g.psnr_db:.1f} dB (not a pass/fail check)"
            )
        finally:
            del engine, pipe
            _free(self.model.device)
        self.save()

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
        engine.render(Bench(args, model, Report()).job(w, h))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    parser.add_argument("--skip", default="", help="comma list of: vae,floor,first-image")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="first size only; seed, engine-plain and engine-default; no first-image run",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=0.0,
        help="start no new section after this many seconds (0: no limit)",
    )
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
    args = parser.parse_args(argv)

    import torch

    tiny = args.tiny or not torch.cuda.is_available()
    args.tiny = tiny
    args.steps = args.steps or (2 if tiny else 28)
    if args.child_first_image:
        return child_first_image(args)
    args.sizes = args.sizes or (["64x64"] if tiny else ["832x1216", "1024x1024"])
    if args.quick:
        args.sizes = args.sizes[:1]
        args.variants = "seed,engine-default" if args.variants == "all" else args.variants
        args.skip = ",".join(filter(None, [args.skip, "first-image"]))
    args.runs = args.runs or (1 if tiny else 5)
    args.warmup_runs = 1 if args.warmup_runs is None else args.warmup_runs
    args.batches = args.batches or [1, 2, 4]
    base = _speed_settings(args, tiny=tiny)
    variants = make_variants(base)
    if args.list_variants:
        for v in variants:
            print(f"{v.name}: {v.what}")
        return 0
    if args.variants != "all":
        wanted = [x.strip() for x in args.variants.split(",")]
        unknown = set(wanted) - {v.name for v in variants}
        if unknown:
            parser.error(f"unknown variants {sorted(unknown)}; see --list-variants")
        # engine-plain first: it is the guard's reference.
        variants = [v for v in variants if v.name in wanted or v.name == "engine-plain"]
    variants.sort(key=lambda v: v.name != "engine-plain")
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}

    report = Report(env=environment(tiny))
    report.params = {
        "tiny": tiny,
        "sizes": args.sizes,
        "steps": args.steps,
        "sampler": "Euler a",
        "cfg": args.cfg,
        "runs (median)": args.runs,
        "warm-up runs": args.warmup_runs,
        "engine defaults (B)": base.model_dump_json(exclude={"warmup_sizes"}),
    }
    report.notes.append(
        "guard bounds: final latents relative error <= 1e-2 and image PSNR >= 35 dB "
        "(bot/engine/optimize.py MAX_LATENT_REL_ERROR, MIN_IMAGE_PSNR_DB)"
    )
    if tiny:
        report.notes.append(
            "tiny mode: speed-ups forced on the CPU with torch.compile backend "
            f"'{args.tiny_backend}' to exercise every code path; GPU figures pending: run "
            "`python benchmarks/bench_gpu.py --json bench_gpu.json --markdown bench_gpu.md` "
            "on a CUDA machine"
        )
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as work:
        t0 = time.perf_counter()
        model = (
            build_tiny_model(Path(work))
            if tiny
            else build_full_model(torch.device("cuda"), 0, Path(work))
        )
        report.notes.append(f"model built in {time.perf_counter() - t0:.1f} s")
        bench = Bench(args, model, report)
        bench.save()
        steps: list[tuple[str, Callable[[], None]]] = [
            (v.name, lambda v=v: bench.run_variant(v)) for v in variants
        ]
        extras = {"floor": bench.fp16_floor, "vae": bench.vae_modes}
        extras["first-image"] = bench.first_image
        steps += [(name, fn) for name, fn in extras.items() if name not in skip]
        for name, fn in steps:
            elapsed = time.perf_counter() - _PROCESS_START
            if args.budget_s and elapsed > args.budget_s:
                report.notes.append(f"{name}: not run, time budget of {args.budget_s:.0f} s spent")
                continue
            if name in extras:
                _say(name)
            fn()
        bench.breakdown()
    peak = peak_tflops(report.env.get("card", ""))
    for row in report.rows:
        if peak and row.tflops and row.variant in ("seed", "engine-default"):
            report.notes.append(
                f"{row.variant} at {row.size}: {row.tflops:.0f} TFLOP/s = "
                f"{100 * row.tflops / peak:.0f}% of the card's {peak:.0f} TFLOP/s dense fp16 peak"
            )
    bench.save()
    print(report.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
