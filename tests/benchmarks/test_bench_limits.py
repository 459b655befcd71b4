"""The rate-limit benchmark keeps working at a tiny size, on SQLite and on PostgreSQL.

Timings are not checked: the script runs as a subprocess (its own throw-away PostgreSQL
server beside an SQLite file) with two member counts and a few decisions per row.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bot.config import LimitsSettings

DEFAULT = LimitsSettings.Tier()
PER_MEMBER = min(DEFAULT.burst, DEFAULT.max_concurrent_jobs)  # 1-image requests, none ends
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_limits.py"


def test_tiny_run_reports_both_databases_and_every_row() -> None:
    argv = [sys.executable, str(SCRIPT), "--decisions", "8", "--warmup", "0", "--members", "1", "2"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Machine: ")
    assert "cores" in lines[0]
    assert any(line.startswith("SQLite ") for line in lines)
    assert any(line.startswith("PostgreSQL ") for line in lines)
    table = [line for line in lines if line.startswith(("| SQLite |", "| PostgreSQL |"))]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    seen = {(r[0], r[1], r[2]) for r in rows}
    assert seen == {
        (database, members, mix)
        for database in ("SQLite", "PostgreSQL")
        for members in ("1", "2")
        for mix in ("all accepted", "default tier")
    }
    for database, members, mix, decisions, accepted, rate, p50, p99 in rows:
        assert int(decisions) == 8, (database, members, mix)
        if mix == "all accepted":
            assert int(accepted) == 8, (database, members)
        else:  # the default tier: a member's burst or job cap, then refusals
            assert int(accepted) == PER_MEMBER * int(members), (database, members)
        assert float(rate.replace(",", "")) > 0
        assert float(p99) >= float(p50) >= 0
