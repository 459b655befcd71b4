"""The red-team benchmark keeps working (reduced size); its rates are deterministic."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_redteam.py"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("bench_redteam", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_redteam"] = module
    spec.loader.exec_module(module)
    return module


def test_sets_are_large_and_independent_of_the_matcher() -> None:
    bench = _load()
    text = SCRIPT.read_text()
    assert "bot.moderation.lists" not in text
    for name, make in bench.SETS.items():
        import random

        prompts = make(random.Random(name), 300)
        assert len(prompts) == 300


def test_reduced_run_prints_rates_per_set_and_channel(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load()
    bench.main(["--size", "40", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["machine"]
    rows = {(r["set"], r["channel"]): r for r in report["rows"]}
    assert set(rows) == {(s, c) for s in bench.SETS for c in bench.CHANNELS}
    assert rows[("harmless", "plain")]["refused"] == 0
    assert rows[("adult", "age-restricted")]["refused"] == 0
    assert rows[("hard-block", "age-restricted")]["hard_blocked"] >= 38
    assert rows[("sexual", "plain")]["refused"] >= 39
