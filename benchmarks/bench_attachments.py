"""How long an image prompt's checks take on a 10 MiB PNG (``bot.attachments``).

Generates a PNG of random noise (noise does not compress, so the file is ~10 MiB for
~3.5 megapixels), then times each step the bot runs on an attachment, in order: the byte
cap, format sniffing, the header's pixel bounds (nothing decoded), the full decode, the fit
to the nearest card resolution, the PNG encoding of the stored input, and the tagger's
rating (the tiny test tagger by default: its cost is the image's resize to the tagger's
input, not the network; ``--tagger DIR`` rates with a real WD14 folder). Prints a markdown
table (median and best of ``--repeat`` runs) with the machine.

    python benchmarks/bench_attachments.py [--repeat 5] [--mib 10] [--tagger DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.attachments import check_bytes, decode, fit_card, header_size, sniff
from bot.config import load_settings


def noise_png(target_bytes: int) -> bytes:
    """A PNG of RGB noise of about ``target_bytes`` (just under it)."""
    side = int((target_bytes / 3) ** 0.5) - 8
    rng = np.random.default_rng(0)
    while True:
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
        data = buffer.getvalue()
        if len(data) <= target_bytes:
            return data
        side -= 16


def timed(step: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    times: list[float] = []
    result: Any = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = step()
        times.append(time.perf_counter() - started)
    return statistics.median(times), min(times), result


def cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_tagger(folder: str | None) -> tuple[Any, str]:
    from bot.moderation.classifier import Tagger

    if folder:
        return Tagger.load(folder), f"WD14 tagger at {folder}"
    from tests.support.tiny_tagger import save_tiny_tagger

    tmp = Path(tempfile.mkdtemp(prefix="bench-tagger-"))
    return Tagger.load(str(save_tiny_tagger(tmp / "tagger"))), "tiny test tagger (64x64 input)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--mib", type=float, default=10.0)
    parser.add_argument("--tagger", default=None, help="a WD14 tagger folder (default: tiny)")
    args = parser.parse_args()

    engine = load_settings(environ={}).engine
    target = int(args.mib * 1024 * 1024)
    engine = engine.model_copy(update={"input_max_bytes": max(engine.input_max_bytes, target)})
    data = noise_png(target)
    rows: list[tuple[str, float, float]] = []

    def add(name: str, step: Callable[[], Any]) -> Any:
        median, best, result = timed(step, args.repeat)
        rows.append((name, median, best))
        return result

    add("byte cap", lambda: check_bytes(len(data), engine.input_max_bytes))
    fmt = add("sniff format", lambda: sniff(data))
    size = add("header pixels (no decode)", lambda: header_size(data, fmt, engine.input_max_pixels))
    image = add("decode", lambda: decode(data, fmt))
    fitted, aspect = add("fit to nearest card", lambda: fit_card(image, engine))

    def encode() -> bytes:
        buffer = io.BytesIO()
        fitted.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    stored = add("encode stored PNG", encode)
    tagger, tagger_name = load_tagger(args.tagger)
    add(f"tagger rating ({tagger_name})", lambda: tagger.rate(fitted))
    total_median = sum(median for _, median, _ in rows)
    total_best = sum(best for _, _, best in rows)

    print(
        f"Attachment checks on a {len(data) / 1048576:.2f} MiB noise PNG "
        f"({size[0]}x{size[1]}, fitted to {aspect.size} -> {fitted.size[0]}x{fitted.size[1]}, "
        f"stored PNG {len(stored) / 1048576:.2f} MiB); {args.repeat} runs each."
    )
    print(
        f"Machine: {cpu()}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"Pillow {Image.__version__}."
    )
    print()
    print("| step | median (ms) | best (ms) |")
    print("| --- | ---: | ---: |")
    for name, median, best in rows:
        print(f"| {name} | {median * 1000:.2f} | {best * 1000:.2f} |")
    print(f"| **total** | **{total_median * 1000:.1f}** | **{total_best * 1000:.1f}** |")


if __name__ == "__main__":
    main()
