"""The command line as a user runs it: exit codes, messages, files written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main
from bot.images import read_infotext
from tests.support.broken_sdxl import save_broken_model

SMALL = ["--device", "cpu", "--width", "64", "--height", "64", "--steps", "2"]


@pytest.fixture(autouse=True)
def outputs_under_tmp_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Runs without --out write (and create their folder) under tmp_path, never into the
    working tree."""
    folder = tmp_path / "outputs"
    monkeypatch.setenv("ANIMAGINE_OUTPUT__DIR", str(folder))
    return folder


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> Path:
    monkeypatch.setenv("ANIMAGINE_ENGINE__MIN_SIDE", "64")
    monkeypatch.setenv("ANIMAGINE_MODEL__SOURCE", str(tiny_model_dir))
    return tiny_model_dir


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_writes_pngs_with_infotext_and_prints_paths_and_seeds(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        [
            "generate",
            "1girl, long_hair",
            *SMALL,
            "--count",
            "2",
            "--seed",
            "41",
            "--sampler",
            "DDIM",
            "--out",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 2
    paths = [Path(line.split("\t")[0]) for line in lines]
    assert [line.split("\t")[1] for line in lines] == ["seed=41", "seed=42"]
    for path, seed in zip(paths, (41, 42), strict=True):
        info = read_infotext(path)
        assert info is not None
        assert info.prompt.startswith("1girl, long hair, masterpiece")
        assert info.negative_prompt.startswith("nsfw, lowres, (bad)")
        assert info.params["Seed"] == str(seed)
        assert info.params["Sampler"] == "DDIM"
        assert info.params["Size"] == "64x64"
        assert info.params["Quality preset"] == "Standard v3.1"


def test_same_seed_from_the_cli_reproduces_the_file(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert run_cli(["generate", "1girl", *SMALL, "--seed", "3", "--out", str(a)], capsys)[0] == 0
    assert run_cli(["generate", "1girl", *SMALL, "--seed", "3", "--out", str(b)], capsys)[0] == 0
    assert a.read_bytes() == b.read_bytes()


def test_hires_option_upscales(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "h.png"
    code, _, _ = run_cli(["generate", "1girl", *SMALL, "--hires", "1.5", "--out", str(out)], capsys)
    assert code == 0
    info = read_infotext(out)
    assert info is not None
    assert info.params["Hires upscale"] == "1.5"
    from PIL import Image

    with Image.open(out) as image:
        assert image.size == (96, 96)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "999"], "steps must be between 1 and 50 (got 999)"),
        (["--aspect", "832x1216", "--width", "64"], "use --aspect or --width/--height, not both"),
        (["--aspect", "800x800"], "unknown aspect '800x800'"),
        (["--sampler", "LMS"], "unknown sampler 'LMS'"),
        (["--cfg", "high"], "expected a number, got 'high'"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--quality", "Ultra"], "Ultra"),
        (["--width", "65"], "width must be a multiple of 8 (got 65)"),
        (["--json"], "--json only goes with --dry-run"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    env: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["generate", "1girl", *args], capsys)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert message in err


def test_unknown_wildcard_is_named(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "hair.txt").write_text("long hair\nshort hair\n", encoding="utf-8")
    code, _, err = run_cli(
        ["generate", "1girl, __eyes__", "--wildcards", str(tmp_path), "--dry-run"], capsys
    )
    assert code == 2
    assert "__eyes__" in err


def test_missing_model_exits_1_naming_it(
    outputs_under_tmp_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    code, _, err = run_cli(
        ["generate", "1girl", "--model", str(missing), "--device", "cpu"], capsys
    )
    assert code == 1
    assert str(missing) in err
    assert list(outputs_under_tmp_path.iterdir()) == []  # the default folder, and empty


def test_config_error_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[engine]\nmax_count = 99\n", encoding="utf-8")
    code, _, err = run_cli(["--config", str(config), "generate", "1girl"], capsys)
    assert code == 2
    assert "engine.max_count" in err


def test_dry_run_json_reads_only_tokenizer_files(
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    only_tokenizer = tmp_path / "model"
    only_tokenizer.mkdir()
    shutil.copy(tiny_model_dir / "model_index.json", only_tokenizer)
    shutil.copytree(tiny_model_dir / "tokenizer", only_tokenizer / "tokenizer")
    monkeypatch.setenv("ANIMAGINE_MODEL__SOURCE", str(only_tokenizer))
    long_prompt = ", ".join(f"tag{i}" for i in range(30))  # 1 char per token: > 75 tokens
    code, out, _ = run_cli(
        [
            "generate",
            long_prompt,
            "--dry-run",
            "--json",
            "--style",
            "Anime",
            "--rating",
            "safe",
            "--seed",
            "1",
        ],
        capsys,
    )
    assert code == 0
    summary = json.loads(out)
    assert summary["prompt"].startswith("tag0, tag1")
    assert summary["prompt"].endswith(
        "safe, anime artwork, anime style, key visual, vibrant, studio anime, highly detailed, "
        "masterpiece, best quality, very aesthetic, absurdres"
    )
    assert summary["negative_prompt"].startswith("nsfw, lowres, (bad)")
    assert summary["chunks"] == (len(summary["prompt"]) - summary["prompt"].count(" ")) // 75 + 1
    assert summary["style_preset"] == "Anime"
    assert summary["seeds"] == [1]


def test_module_and_console_script_run_the_same_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "generate", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "--hires" in result.stdout
    script = Path(sys.executable).with_name("animagine-bot")
    if script.exists():
        other = subprocess.run(
            [str(script), "generate", "--help"], capture_output=True, text=True, check=False
        )
        assert other.stdout == result.stdout.replace("__main__.py", "animagine-bot")


def test_policy_check_prints_one_json_line_per_prompt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[moderation]\nblocked_tags = ["gore"]\n', encoding="utf-8")
    code, out, _ = run_cli(
        [
            "policy",
            "check",
            "--channel",
            "plain",
            "--config",
            str(config),
            "1girl, solo",
            "1girl, (N_S_F_W:1.3)",
            "1girl, gore",
            "loli, nude",
        ],
        capsys,
    )
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["decision"] for line in lines] == ["allow", "refuse", "refuse", "hard-block"]
    assert lines[1]["matched"] == ["nsfw"]
    assert lines[2]["matched"] == ["gore"]
    assert all("nsfw" in line["negative_prompt"] for line in lines)
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("1girl, explicit\n\n"))
    code, out, _ = run_cli(["policy", "check", "--channel", "age-restricted"], capsys)
    assert code == 0
    (only,) = [json.loads(line) for line in out.splitlines()]
    assert only["decision"] == "allow"
    assert "nsfw" not in only["negative_prompt"].split(", ")


def test_policy_check_rejects_an_unknown_channel(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["policy", "check", "--channel", "lobby", "x"], capsys)
    assert code == 2
    assert "invalid choice: 'lobby'" in err


def test_db_upgrade_and_current(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "bot.db"
    monkeypatch.setenv("ANIMAGINE_DATABASE__URL", f"sqlite:///{db}")
    code, out, _ = run_cli(["db", "current"], capsys)
    assert code == 0
    assert "empty (no schema)" in out
    code, out, _ = run_cli(["db", "upgrade"], capsys)
    assert code == 0
    assert str(db) in out
    code, out, _ = run_cli(["db", "current"], capsys)
    assert "(up to date)" in out


def test_db_upgrade_names_a_corrupt_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "bot.db"
    db.write_bytes(b"this is not a database " * 100)
    monkeypatch.setenv("ANIMAGINE_DATABASE__URL", f"sqlite:///{db}")
    code, _, err = run_cli(["db", "upgrade"], capsys)
    assert code == 1
    assert str(db) in err
    assert "not an SQLite database" in err


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("pic.jpg", "give a .png file name or a folder"),
        ("afile/x.png", "cannot create"),
    ],
)
def test_unusable_out_is_refused_before_the_model_loads(
    env: Path,
    tmp_path: Path,
    out: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "afile").write_text("a file, not a folder", encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    def no_load(*_: object) -> None:
        raise AssertionError("the model must not load for a bad --out")

    monkeypatch.setattr("bot.engine.Engine.load", no_load)
    code, _, err = run_cli(["generate", "1girl", *SMALL, "--out", out], capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_too_long_prompt_is_refused_before_the_model_loads(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    long_prompt = ", ".join(f"tag{i}" for i in range(300))
    code, out, err = run_cli(["generate", long_prompt, "--dry-run", "--json"], capsys)
    assert code == 2
    assert out == ""  # no JSON from a run that exits 2
    assert "the prompt takes 28 chunks of 75 tokens; the limit is 8" in err

    def no_load(*_: object) -> None:
        raise AssertionError("the model must not load for a prompt that is too long")

    monkeypatch.setattr("bot.engine.Engine.load", no_load)
    code, _, err = run_cli(["generate", long_prompt, *SMALL, "--out", str(tmp_path)], capsys)
    assert code == 2
    assert "the limit is 8" in err


def test_policy_check_refuses_an_unknown_rating(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        ["policy", "check", "--channel", "plain", "--rating", "junk", "x"], capsys
    )
    assert code == 2
    assert "junk" in err


def test_dry_run_json_prints_one_json_object_and_exits_0(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        ["generate", "1girl, (smile:1.2)", "--dry-run", "--json", "--seed", "5", "--count", "2"],
        capsys,
    )
    assert (code, err) == (0, "")
    summary = json.loads(out)  # the whole of stdout is one JSON object
    assert summary["prompt"].startswith("1girl, (smile:1.2), masterpiece")
    assert summary["seeds"] == [5, 6]
    assert summary["chunks"] >= 1
    assert summary["max_chunks"] == 8


def test_dry_run_json_as_a_subprocess(env: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot", "generate", "1girl", "--dry-run", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["prompt"].startswith("1girl")


@pytest.mark.parametrize("dry", [["--dry-run"], ["--dry-run", "--json"], [*SMALL]])
@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("(1girl:" + "9" * 400 + ")", "error: the prompt weights '1girl' by a number too large"),
        ("(1girl:70000)", "error: the prompt weights '1girl' by 7e+04 (after nesting); weights"),
        ("\x00\x00", "error: the prompt is empty"),
        ("\x01\x1f\u200b ", "error: the prompt is empty"),
    ],
)
def test_weights_out_of_range_and_blank_prompts_are_refused(
    env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    dry: list[str],
    prompt: str,
    message: str,
) -> None:
    def no_load(*_: object) -> None:
        raise AssertionError("the model must not load for a refused prompt")

    monkeypatch.setattr("bot.engine.Engine.load", no_load)
    code, out, err = run_cli(["generate", prompt, *dry], capsys)
    assert code == 2
    assert out == ""
    assert err.startswith(message)
    assert len(err.strip().splitlines()) == 1


def test_weights_from_a_wildcard_are_refused_before_the_model_loads(
    env: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "boost.txt").write_text("(1girl:500)\n", encoding="utf-8")

    def no_load(*_: object) -> None:
        raise AssertionError("the model must not load for a refused prompt")

    monkeypatch.setattr("bot.engine.Engine.load", no_load)
    for extra in (["--dry-run", "--json"], SMALL):
        code, out, err = run_cli(
            ["generate", "__boost__", "--wildcards", str(tmp_path), *extra], capsys
        )
        assert (code, out) == (2, "")
        assert "error: the prompt weights '1girl' by 500" in err


def test_a_wildcard_linking_out_of_its_folder_is_refused(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "wildcards"
    folder.mkdir()
    (tmp_path / "private.txt").write_text("secret line\n", encoding="utf-8")
    (folder / "hair.txt").symlink_to(tmp_path / "private.txt")
    code, out, err = run_cli(
        ["generate", "1girl, __hair__", "--wildcards", str(folder), "--dry-run", "--json"], capsys
    )
    assert (code, out) == (2, "")
    assert "__hair__ is refused" in err
    assert "secret line" not in err


def test_a_broken_image_exits_1_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANIMAGINE_ENGINE__MIN_SIDE", "64")
    monkeypatch.setenv("ANIMAGINE_MODEL__SOURCE", str(save_broken_model(tmp_path, "nan")))
    out_dir = tmp_path / "out"
    code, out, err = run_cli(["generate", "1girl", *SMALL, "--out", str(out_dir)], capsys)
    assert code == 1
    assert out == ""
    assert "error: the image came out broken and was not posted: came out as NaN" in err
    assert list(out_dir.iterdir()) == []
