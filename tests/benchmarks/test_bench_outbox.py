"""The outbox's schedule benchmark runs and states how long and how many attempts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_schedule_is_stated_in_hours_and_attempts(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[delivery]\nretry_hours = 1.0\nretry_max_s = 60.0\n", encoding="utf-8")
    for extra, hours, attempts in (([], "6.00 h", "= 80 at the least"),
                                   (["--config", str(config)], "60.0 min", "")):  # fmt: skip
        done = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "bench_outbox.py"), *extra],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert f"Keeps trying for {hours} after the first attempt." in done.stdout
        assert attempts in done.stdout
        assert "with jitter (seed 0)" in done.stdout
