"""benchmarks/bench_gpu.py end to end in its --tiny mode (CPU, tiny pipeline)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from bot.engine.optimize import set_attention_backend

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _restore_compiler() -> Iterator[None]:
    yield
    torch.compiler.set_stance("default")
    torch._dynamo.reset()
    set_attention_backend("auto")


def _tiny_argv(tmp_path: Path, *extra: str) -> list[str]:
    argv = ["--tiny", "--sizes", "64x64", "--steps", "4", "--runs", "1", "--warmup-runs", "0"]
    argv += ["--skip", "vae,first-image"]  # the child process is tested below
    argv += ["--markdown", str(tmp_path / "bench.md"), "--json", str(tmp_path / "bench.json")]
    return argv + list(extra)


def test_tiny_run_reports_the_ratio_and_the_guard(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _tiny_argv(
        tmp_path,
        "--variants",
        "seed,engine-compile,cfg-cutoff",
        "--cfg-cutoff",
        "0.5",
        "--batches",
        "1,2",
    )
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    assert text.strip() == (tmp_path / "bench.md").read_text(encoding="utf-8").strip()
    # B is named by what it ran, not called "engine defaults" when it differs from them.
    assert "A/B at 64x64, B = engine-compile (engine defaults with compile_backend='eager'" in text
    assert "engine-compile (B) vs engine-plain at 64x64: PASS" in text
    assert "seed code path (same computation) vs engine-plain at 64x64: PASS" in text
    assert "noise predictions rel. error" in text
    assert "over 4 UNet calls (bound <= 1e-02)" in text
    assert "fp16 noise floor: n/a" in text
    data = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    # The issue's order: the seed, the guard's reference, B with a compile that fits, ...
    assert [r["variant"] for r in data["rows"]] == [
        "seed",
        "engine-plain",
        "engine-compile",
        "cfg-cutoff",
    ]
    rows = {r["variant"]: r for r in data["rows"]}
    assert rows["engine-compile"]["guard"].startswith("PASS")
    assert "compiled unet + vae decoder" in rows["engine-compile"]["applied"]
    assert all(r["runs"] == 1 for r in data["rows"])
    # Without CFG in the last two of four steps the UNet runs on the conditional rows only:
    # those steps are compared with the reference's conditional half, and the image moves.
    assert "cfg-cutoff vs engine-plain at 64x64" in text
    assert rows["cfg-cutoff"]["guard"]
    assert data["ab_ratio"][0].startswith("A/B at 64x64")
    assert [(t["variant"], t["batch"]) for t in data["throughput"]] == [
        ("engine-plain", 1),
        ("engine-plain", 2),
    ]


def test_a_stage_that_would_not_fit_the_budget_is_skipped_and_said_so(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _tiny_argv(tmp_path, "--variants", "seed,engine-compile", "--skip", "throughput")
    argv += ["--budget-s", "3600", "--compile-default-s", "100000"]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    assert "engine-compile: skipped, it would take about 100" in text
    assert "A/B at 64x64: not measured" in text
    data = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    assert [r["variant"] for r in data["rows"]] == ["seed", "engine-plain"]


def test_the_watchdog_saves_the_report_and_ends_the_run_at_the_budget(tmp_path: Path) -> None:
    """A stage that overruns (a compile cannot be interrupted) is cut cleanly."""
    script = f"""
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("bench_gpu", {str(SCRIPT)!r})
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_gpu"] = bench
spec.loader.exec_module(bench)
report = bench.Report(env={{"card": "test"}})
saver = bench.Saver(report, bench.Path({str(tmp_path / "b.md")!r}), None)
budget_s = time.perf_counter() - bench._PROCESS_START + 0.5
budget = bench.Budget(budget_s, lambda stage: saver.expire(stage, budget_s))
budget.stage = "engine-compile"
time.sleep(30)
print("NOT CUT")
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "NOT CUT" not in proc.stdout
    saved = (tmp_path / "b.md").read_text(encoding="utf-8")
    assert "engine-compile: cut by the time budget of" in saved
    assert "engine-compile: cut by the time budget of" in proc.stdout


def test_describe_settings_names_what_differs_from_the_defaults(bench: ModuleType) -> None:
    from bot.config import SpeedSettings

    assert bench.describe_settings(SpeedSettings()) == "engine defaults"
    assert bench.describe_settings(None) == "plain diffusers pipeline"
    changed = SpeedSettings(cuda_graphs=True, attention="flash")
    assert bench.describe_settings(changed) == (
        "engine defaults with cuda_graphs=True, attention='flash'"
    )


def test_first_image_child_renders_once_and_reports_its_timings(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    argv = ["--child-first-image", "64x64", "--tiny", "--steps", "2", "--cache-dir", str(cache)]
    assert bench.main(argv) == 0
    timings = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(timings) == {"import_s", "build_s", "warmup_s", "first_image_s", "since_start_s"}
    assert timings["first_image_s"] > 0


def test_variants_cover_every_switch_of_the_issue(bench: ModuleType) -> None:
    from bot.config import SpeedSettings

    names = [v.name for v in bench.make_variants(SpeedSettings())]
    assert names[:3] == ["seed", "engine-plain", "engine-compile"]
    for name in ("engine-autotune", "cfg-cutoff", "channels_last", "fuse_qkv", "compile_unet"):
        assert name in names
    for name in ("compile_vae", "attention=flash", "attention=cudnn", "cuda_graphs"):
        assert name in names


def test_flop_constants_match_the_architecture_readme(bench: ModuleType) -> None:
    readme = (SCRIPT.parent / "sdxl_architecture" / "README.md").read_text(encoding="utf-8")
    for size in ((832, 1216), (1024, 1024)):
        total = bench.UNET_TFLOP[size] * 2 * 28 + bench.VAE_DECODE_TFLOP[size]
        assert total == pytest.approx(bench.TOTAL_TFLOP_28_STEPS[size], abs=0.5)
        assert f"{bench.UNET_TFLOP[size]:.2f}" in readme
