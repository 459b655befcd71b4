"""benchmarks/bench_gpu.py end to end in its --tiny mode (CPU, tiny pipeline)."""

from __future__ import annotations

import importlib.util
import json
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


def test_tiny_run_reports_the_ratio_and_the_guard(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    markdown, report_json = tmp_path / "bench.md", tmp_path / "bench.json"
    argv = ["--tiny", "--sizes", "64x64", "--steps", "2", "--runs", "1", "--warmup-runs", "0"]
    argv += ["--variants", "seed,engine-default", "--batches", "1,2"]
    argv += ["--skip", "vae,floor,first-image"]  # the child process is tested below
    argv += ["--markdown", str(markdown), "--json", str(report_json)]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    assert text.strip() == markdown.read_text(encoding="utf-8").strip()
    assert "A/B at 64x64: seed " in text
    assert "engine defaults vs engine-plain at 64x64: PASS" in text
    assert "seed code path vs engine-plain at 64x64 (same computation): PASS" in text
    assert "bound <= 1e-02" in text
    assert "GPU figures pending" in text
    data = json.loads(report_json.read_text(encoding="utf-8"))
    rows = {(r["variant"], r["size"]): r for r in data["rows"]}
    assert set(rows) == {(v, "64x64") for v in ("engine-plain", "seed", "engine-default")}
    default = rows["engine-default", "64x64"]
    assert default["guard"].startswith("PASS")
    assert "compiled unet + vae decoder" in default["applied"]
    assert data["ab_ratio"][0].startswith("A/B at 64x64")
    assert [(t["variant"], t["batch"]) for t in data["throughput"]] == [
        ("seed", 1),
        ("seed", 2),
        ("engine-default", 1),
        ("engine-default", 2),
    ]


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
    for name in ("seed", "engine-default", "channels_last", "fuse_qkv", "compile_unet"):
        assert name in names
    for name in ("compile_vae", "attention=flash", "attention=cudnn", "cuda_graphs"):
        assert name in names


def test_flop_constants_match_the_architecture_readme(bench: ModuleType) -> None:
    readme = (SCRIPT.parent / "sdxl_architecture" / "README.md").read_text(encoding="utf-8")
    for size in ((832, 1216), (1024, 1024)):
        total = bench.UNET_TFLOP[size] * 2 * 28 + bench.VAE_DECODE_TFLOP[size]
        assert total == pytest.approx(bench.TOTAL_TFLOP_28_STEPS[size], abs=0.5)
        assert f"{bench.UNET_TFLOP[size]:.2f}" in readme
