"""The live-preview benchmark (issue 15) keeps working at a tiny size and reports every row.

Timings are not checked: the script runs as a subprocess on the tiny pipeline, the tiny
random TAESD and the tiny tagger, with a 64x64 job of 2 steps.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_previews.py"


def test_tiny_run_reports_every_figure() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--size", "64", "--steps", "2", "--runs", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in done.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| figure") and "---" not in line
    }
    assert done.stdout.splitlines()[1].startswith("Machine: ")
    for figure in (
        "render, previews off",
        "render, a preview every step",
        "render, a preview every step + its check on another thread",
        "one TAESD decode (preview)",
        "one preview check (tagger)",
        "share of the render at one preview per 3 s",
        "Redis workers: the WebP decoded on the bot",
    ):
        assert figure in rows, (figure, sorted(rows))
        assert rows[figure][0].isdigit(), rows[figure]
    [wire] = [
        value for name, value in rows.items() if name.startswith("Redis workers: the preview")
    ]
    assert wire.endswith(" KiB")
