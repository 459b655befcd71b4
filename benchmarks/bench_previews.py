"""What live previews cost: the TAESD decode per step, its share of a render, the check.

Renders one job through the project's :class:`~bot.engine.Engine` three ways, each the
median of ``--runs`` renders after one warm-up:

* ``off``: no previews (the reference);
* ``every step``: a TAESD preview decoded at every step (``preview_every=0``), the worst
  case; the difference to ``off`` divided by the steps is the preview's cost per step;
* ``every step + check``: the same, each preview also rated by the tagger on another
  thread as the renderer does it (a preview arriving while one is in the check is
  dropped), so the check's effect on the render shows.

It also times one TAESD decode alone (``decode``), one tagger rating of a preview
(``check``), a preview's trip through Redis (the worker's WebP encoding and its size, the
bot's decoding), and gives the share of a render previews take at the configured interval
(one decode every ``--interval`` seconds: ``decode / max(interval, step)``).

By default it runs on the CPU with the tiny test pipeline and a tiny random TAESD (the
tiny test tagger rates); ``--full`` builds the full SDXL architecture and the real TAESD-XL
architecture with random fp16 weights on CUDA (nothing downloaded), ``--tagger DIR`` rates
with a real WD14 folder. Prints a markdown table with the machine::

    python benchmarks/bench_previews.py [--size 256] [--steps 10] [--runs 3]
    python benchmarks/bench_previews.py --full --size 1024 --steps 28   # on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bot.engine import Engine, Progress, RenderJob  # noqa: E402
from bot.engine.engine import Previewer  # noqa: E402
from bot.engine.loading import Placement  # noqa: E402


def cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{cpu()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}"


def build(full: bool, workdir: Path) -> tuple[Engine, str]:
    from diffusers import AutoencoderTiny

    if full:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_gpu import build_full_model

        device = torch.device("cuda")
        model = build_full_model(device, 0, workdir)
        pipeline = model.pipeline(copy_models=False)
        placement = Placement(device, torch.float16)
        taesd = AutoencoderTiny()  # the architecture of madebyollin/taesdxl
        label = "full SDXL + TAESD-XL architecture, random fp16 weights"
    else:
        from tests.support.tiny_sdxl import build_tiny_pipeline, save_tiny_taesd

        pipeline = build_tiny_pipeline(tmp=workdir)
        placement = Placement(torch.device("cpu"), torch.float32)
        taesd = AutoencoderTiny.from_pretrained(str(save_tiny_taesd(workdir)))
        label = "tiny test pipeline + tiny random TAESD (tests/support/tiny_sdxl.py)"
    taesd.to(placement.device, placement.dtype).eval().requires_grad_(False)
    pipeline.set_progress_bar_config(disable=True)
    engine = Engine(pipeline, placement=placement, model_name="bench")
    engine.previewer = Previewer(taesd, max_side=384, max_share=1e9)  # never auto-off
    return engine, label


def load_tagger(folder: str | None, workdir: Path) -> tuple[Any, str]:
    from bot.moderation.classifier import Tagger

    if folder:
        return Tagger.load(folder), f"WD14 tagger at {folder}"
    from tests.support.tiny_tagger import save_tiny_tagger

    return Tagger.load(str(save_tiny_tagger(workdir / "tagger"))), "tiny test tagger"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full SDXL on CUDA")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--interval", type=float, default=3.0, help="previews.interval_s")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: as is)")
    parser.add_argument("--tagger", default=None, help="a WD14 tagger folder")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-previews-") as tmp:
        workdir = Path(tmp)
        engine, label = build(args.full, workdir)
        tagger, tagger_label = load_tagger(args.tagger, workdir)
        device = engine.placement.device
        job = RenderJob(
            "1girl, solo, smile",
            "lowres",
            args.size,
            args.size,
            args.steps,
            7.0,
            "Euler a",
            (1234,),
        )
        checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="check")
        checking = threading.Event()
        check_times: list[float] = []

        def rate(image: Any) -> None:
            try:
                started = time.perf_counter()
                tagger.rate(image)
                check_times.append(time.perf_counter() - started)
            finally:
                checking.clear()

        shown: list[Any] = []

        def with_check(progress: Progress) -> None:
            if progress.preview is not None:
                shown[:] = [progress.preview]
            if progress.preview is not None and not checking.is_set():
                checking.set()
                checker.submit(rate, progress.preview)

        def render(every: float | None, callback: Any = None) -> float:
            sync(device)
            started = time.perf_counter()
            engine.render(job, on_progress=callback, preview_every=every)
            sync(device)
            seconds = time.perf_counter() - started
            while checking.is_set():  # the last check ends before the next render
                time.sleep(0.001)
            return seconds

        variants = {
            "off": (None, None),
            "every step": (0.0, None),
            "every step + check": (0.0, with_check),
        }
        results: dict[str, float] = {}
        for name, (every, callback) in variants.items():
            render(every, callback)  # warm-up
            results[name] = statistics.median(render(every, callback) for _ in range(args.runs))
        assert engine.previewer is not None
        decode = statistics.median(engine.previewer.decode_seconds)
        check = statistics.median(check_times) if check_times else float("nan")
        checker.shutdown(wait=True)
        wire = wire_figures(shown[0]) if shown else None

    off = results["off"]
    step = off / args.steps
    per_step = (results["every step"] - off) / args.steps
    checked_per_step = (results["every step + check"] - off) / args.steps
    interval_share = decode / max(args.interval, step)
    print(f"**Live previews** · {label}; check: {tagger_label}")
    print(f"Machine: {machine(device)}")
    print(
        f"Job: {args.size}x{args.size}, {args.steps} steps, Euler a, CFG 7, 1 image; "
        f"median of {args.runs} renders after a warm-up"
    )
    print()
    print("| figure | value |")
    print("| --- | --- |")
    print(f"| render, previews off | {off:.3f} s ({step * 1000:.1f} ms/step) |")
    print(
        f"| render, a preview every step | {results['every step']:.3f} s "
        f"(+{per_step * 1000:.2f} ms/step, {per_step / step:+.1%}) |"
    )
    print(
        f"| render, a preview every step + its check on another thread | "
        f"{results['every step + check']:.3f} s "
        f"(+{checked_per_step * 1000:.2f} ms/step, {checked_per_step / step:+.1%}) |"
    )
    print(
        f"| one TAESD decode (preview) | {decode * 1000:.2f} ms ({decode / step:.1%} of a step) |"
    )
    print(f"| one preview check (tagger) | {check * 1000:.2f} ms |")
    print(f"| share of the render at one preview per {args.interval:g} s | {interval_share:.2%} |")
    if wire is not None:
        encode_s, size, decode_s, side = wire
        print(
            f"| Redis workers: the preview as WebP ({side} px, worker side, off the engine "
            f"thread) | {encode_s * 1000:.2f} ms, {size / 1024:.1f} KiB |"
        )
        print(f"| Redis workers: the WebP decoded on the bot | {decode_s * 1000:.2f} ms |")


def wire_figures(image: Any, repeat: int = 20) -> tuple[float, int, float, str]:
    """A preview's trip through Redis: the worker's WebP encoding (median seconds, bytes)
    and the bot's bounded decoding (median seconds)."""
    from bot.queue.previews import decode_preview, encode_preview

    encoded: list[float] = []
    decoded: list[float] = []
    data = b""
    for _ in range(repeat):
        started = time.perf_counter()
        data = encode_preview(image) or b""
        encoded.append(time.perf_counter() - started)
        started = time.perf_counter()
        decode_preview(data)
        decoded.append(time.perf_counter() - started)
    side = f"{image.width}x{image.height}"
    return statistics.median(encoded), len(data), statistics.median(decoded), side


if __name__ == "__main__":
    main()
