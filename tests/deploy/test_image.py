"""deploy/Dockerfile installs the project the way the project does, and runs it safely.

What a build would show, checked without one: the base image's Python satisfies
requires-python; torch is installed first, at the version the tests use, then the project
itself (no dependency list copied by hand, no dev extras); everything the install needs is
copied in and not dropped by .dockerignore; the process runs as a non-root user with its state
in volumes and a health check on /healthz.
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from bot.config import load_settings
from bot.storage.migrate import MIGRATIONS_DIR
from tests.deploy.files import (
    DOCKERIGNORE,
    MAKEFILE,
    ROOT,
    build_args,
    docker_instructions,
    dockerfile,
    expand,
    image_env,
)

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

# The python3 each supported base OS ships (what `apt-get install python3` gives).
DISTRO_PYTHON = {"ubuntu22.04": "3.10", "ubuntu24.04": "3.12", "ubuntu25.04": "3.13"}


def _base_image() -> str:
    (first, *more) = docker_instructions("FROM")
    assert not more, "one stage: the image that runs is the one that installs"
    return expand(first.args.split()[0], build_args())


def _pip_installs() -> list[tuple[int, list[str]]]:
    """(position, arguments after `pip install`) of every pip install, in build order."""
    out = []
    for position, instruction in enumerate(dockerfile()):
        if instruction.keyword != "RUN":
            continue
        for command in re.split(r"&&|;", expand(instruction.args, build_args())):
            words = shlex.split(command)
            out.extend(
                (position, words[i + 2 :])
                for i in range(len(words) - 1)
                if words[i] == "pip" and words[i + 1] == "install"
            )
    return out


def _requirements(args: list[str]) -> list[str]:
    """The requirement arguments of a pip install (options and their values dropped)."""
    out, skip = [], False
    for word in args:
        if skip:
            skip = False
        elif word in ("--index-url", "-i", "--extra-index-url", "-c", "--constraint"):
            skip = True
        elif word == "-e":
            continue
        elif not word.startswith("-"):
            out.append(word)
        else:
            assert not word.startswith(("-r", "--requirement")), "no requirement files"
    return out


def _project_install() -> tuple[int, list[str]]:
    installs = [(pos, args) for pos, args in _pip_installs() if "." in _requirements(args)]
    assert len(installs) == 1, "the project is installed once, as `pip install [-e] .`"
    return installs[0]


def test_base_image_is_pinned_and_its_python_satisfies_requires_python() -> None:
    image = _base_image()
    name, _, tag = image.partition(":")
    assert name == "nvidia/cuda", "a CUDA base image: the workers render on NVIDIA GPUs"
    assert re.fullmatch(r"\d+\.\d+\.\d+-(base|runtime|cudnn-runtime)-ubuntu\d+\.\d+", tag), (
        f"pin a full CUDA version and OS in the tag, got {image!r}"
    )
    distro = tag.rsplit("-", 1)[1]
    python = DISTRO_PYTHON[distro]
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert Version(python) in requires, f"{distro} has Python {python}, the project {requires}"
    # ... and that is the Python the image uses: the distribution's python3 in a virtualenv.
    run = " ".join(i.args for i in docker_instructions("RUN"))
    assert re.search(r"apt-get install .*\bpython3\b", run)
    assert "python3 -m venv /opt/venv" in run
    assert image_env()["PATH"].startswith("/opt/venv/bin:")


def test_torch_comes_first_pinned_like_the_tests() -> None:
    """As the Makefile does for the tests: torch first, then the project, so that pip keeps
    the chosen torch build instead of resolving its own."""
    installs = _pip_installs()
    torch = [
        (pos, args)
        for pos, args in installs
        if any(Requirement(r).name == "torch" for r in _requirements(args) if r != ".")
    ]
    assert len(torch) == 1, "torch is installed by one pip install of its own"
    torch_pos, torch_args = torch[0]
    assert torch_pos < _project_install()[0], "torch before the project"
    (spec,) = _requirements(torch_args)
    pinned = Requirement(spec)
    make_pin = re.search(r"^TORCH_CPU \?= (\S+)$", MAKEFILE.read_text(), re.MULTILINE)
    assert make_pin, "the Makefile pins torch for the tests (TORCH_CPU)"
    assert pinned.specifier == Requirement(make_pin.group(1)).specifier, (
        "the image runs the torch version the tests ran"
    )
    (version,) = (Version(s.version) for s in pinned.specifier)
    project_torch = next(
        Requirement(d) for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch")
    )
    assert version in project_torch.specifier


def test_the_project_itself_is_installed_without_dev_extras() -> None:
    _, args = _project_install()
    assert _requirements(args) == ["."], "the project, not a copied dependency list"
    dependencies = {Requirement(d).name for d in PYPROJECT["project"]["dependencies"]}
    for _, other in _pip_installs():
        for requirement in _requirements(other):
            if requirement == ".":
                continue
            name = Requirement(requirement).name
            assert name in ("pip", "torch"), f"{name}: install it through pyproject.toml"
            assert name not in dependencies - {"torch"}
    text = " ".join(i.args for i in dockerfile())
    assert "[dev]" not in text, "no dev extras in the image"
    assert ".[" not in text, "no extras in the image"


def test_the_install_is_editable_while_migrations_live_outside_the_package() -> None:
    """bot/storage/migrate.py reads migrations/ from the source tree (as `make run` installs
    it, editable); a plain `pip install .` would leave them behind."""
    migrations = MIGRATIONS_DIR.relative_to(ROOT)
    if (ROOT / "bot").resolve() not in MIGRATIONS_DIR.parents:
        assert "-e" in _project_install()[1], f"{migrations}/ is outside bot/: install with -e"


def _copied() -> dict[str, str]:
    """Source (relative to the build context) -> where it lands in the image."""
    workdir = "/"
    out = {}
    for instruction in dockerfile():
        if instruction.keyword == "WORKDIR":
            workdir = posixpath.join(workdir, instruction.args)
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
        *sources, dest = words
        target = posixpath.normpath(posixpath.join(workdir, dest))
        for source in sources:
            name = source.rstrip("/")
            if (ROOT / name).is_dir():
                out[name] = target
            else:
                multiple = dest.endswith("/") or len(sources) > 1
                out[name] = posixpath.join(target, PurePosixPath(name).name) if multiple else target
    return out


def _install_dir() -> str:
    workdir = "/"
    position = _project_install()[0]
    for instruction in dockerfile()[:position]:
        if instruction.keyword == "WORKDIR":
            workdir = posixpath.join(workdir, instruction.args)
    return workdir


def test_what_the_package_needs_is_copied_into_the_install_dir() -> None:
    project = PYPROJECT["project"]
    needed = {"pyproject.toml", project["readme"], *project["license-files"]}
    needed |= {
        p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    needed.add(str(MIGRATIONS_DIR.relative_to(ROOT)))
    copied = _copied()
    base = _install_dir()
    for path in sorted(needed):
        assert (ROOT / path).exists(), path
        assert path in copied, f"{path} is not copied into the image"
        assert copied[path] == posixpath.join(base, path), (
            f"{path} lands at {copied[path]}, not beside pyproject.toml in {base}"
        )


def _ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matches a path or a folder
    above it; `**` matches any number of folders."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.removeprefix("!").strip("/")
        forms = {pattern, pattern.replace("**/", "")}
        if any(fnmatch.fnmatchcase(c, f) for c in candidates for f in forms):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_sources_and_drops_local_state() -> None:
    patterns = _ignore_patterns()
    for source in _copied():
        root = ROOT / source
        files = (
            [root]
            if root.is_file()
            else [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        )
        assert files, source
        for path in files:
            relative = path.relative_to(ROOT).as_posix()
            assert not _ignored(relative, patterns), f".dockerignore drops {relative}"
    for local in (
        ".git/HEAD",
        ".venv/bin/python",
        "animagine.db",
        "config.toml",
        "outputs/x.png",
        "deploy/secrets/discord_token",
        "deploy/.env",
        "animagine_bot.egg-info/PKG-INFO",
        "bot/__pycache__/cli.cpython-312.pyc",
    ):
        assert _ignored(local, patterns), f".dockerignore lets {local} into the build context"


def test_runs_unprivileged_with_state_in_volumes() -> None:
    users = docker_instructions("USER")
    assert users, "a USER instruction"
    user = expand(users[-1].args, build_args())
    assert user not in ("root", "0")
    assert not user.startswith("0:")
    volumes = set()
    for instruction in docker_instructions("VOLUME"):
        volumes |= set(instruction.exec_form() or instruction.args.split())
    env = image_env()
    settings = load_settings(environ={**env, "DISCORD_TOKEN": "x"})
    database = settings.database.url.removeprefix("sqlite:///")
    writable = {
        "HF_HOME": env["HF_HOME"],
        "database.url": database,
        "delivery.images_dir": settings.delivery.images_dir,
        "engine.speed.compile_cache_dir": settings.engine.speed.compile_cache_dir,
    }
    for what, path in writable.items():
        assert any(Path(path).is_relative_to(v) for v in volumes), f"{what} {path}: not a volume"
    assert settings.database.url.startswith("sqlite:////data/")


def test_metrics_listen_in_the_container_and_the_health_check_asks_them() -> None:
    settings = load_settings(environ={**image_env(), "DISCORD_TOKEN": "x"})
    assert settings.metrics.enabled
    assert settings.metrics.host == "0.0.0.0"
    assert settings.logging.format == "json"
    assert str(settings.metrics.port) in {i.args for i in docker_instructions("EXPOSE")}
    (check,) = docker_instructions("HEALTHCHECK")
    flags, _, command = check.args.partition("CMD ")
    argv = json.loads(command)
    # deploy/healthcheck.py (tested in test_healthcheck.py), copied where the check runs it.
    assert argv == ["python", "/app/deploy/healthcheck.py"]
    assert _copied()["deploy/healthcheck.py"] == argv[1]
    assert "--start-period=" in flags, "the first start downloads and compiles the model"


@pytest.mark.parametrize("instruction", ["CMD", "ENTRYPOINT"])
def test_exec_form(instruction: str) -> None:
    """JSON form, so that SIGTERM reaches Python (the graceful stop) and not a shell."""
    for found in docker_instructions(instruction):
        assert found.exec_form() is not None, f"{instruction} {found.args}: use the JSON form"
    if instruction == "CMD":
        assert docker_instructions("CMD")[-1].exec_form() == ["python", "-m", "bot", "run"]
