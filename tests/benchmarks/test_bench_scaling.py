"""The scaling benchmark (issue 12) keeps working at a tiny size and reports every column.

Timings are not checked: the script runs as a subprocess (a real redis-server, stand-in
worker processes, the real dispatcher) with 1 and 2 workers and a few short jobs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_scaling.py"

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


def test_tiny_run_reports_every_column_for_each_worker_count() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--workers", "1", "2", "--jobs-per-worker", "3"]  # noqa: RUF005
        + ["--steps", "2", "--step-ms", "10"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Machine: ")
    assert "redis-server" in lines[0]
    assert "cores" in lines[0]
    header = next(line for line in lines if line.startswith("| workers |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    for name in (
        "jobs/s",
        "ideal jobs/s",
        "% of ideal",
        "overhead ms/job",
        "gap p99 ms",
        "row→start p99 ms",
    ):
        assert name in columns
    rows = [line for line in lines if line.startswith("| ") and line[2].isdigit()]
    assert [r.split("|")[1].strip() for r in rows] == ["1", "2"]
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split("|")]
        assert len(cells) == len(columns)
        assert all(float(c) >= 0 or c.startswith("-") for c in cells)
        assert cells[columns.index("failed")] == "0"
        assert cells[columns.index("jobs")] == str(3 * int(cells[0]))
