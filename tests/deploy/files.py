"""Readers for the deployment files: the Dockerfile, compose.yaml, systemd units, the Makefile.

Small, strict parsers of just what the tests look at; none needs a container runtime, a
systemd or the network.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
UNITS = (DEPLOY / "animagine-bot.service", DEPLOY / "animagine-worker@.service")
DASHBOARD = DEPLOY / "grafana-dashboard.json"
MAKEFILE = ROOT / "Makefile"
DOCKERIGNORE = ROOT / ".dockerignore"


# --- Dockerfile ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ENV, ...
    args: str  # the rest of the instruction, continuation lines joined
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON (exec) form's argv, or None for the shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        argv = json.loads(text)
        assert isinstance(argv, list)
        assert all(isinstance(a, str) for a in argv)
        return argv


@cache
def dockerfile() -> tuple[Instruction, ...]:
    out: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(DOCKERFILE.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and (not line or line.startswith("#")):
            continue  # blank and comment lines inside a continued instruction are dropped
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, args = text.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    assert not pending, "the Dockerfile ends inside a continued line"
    return tuple(out)


def docker_instructions(keyword: str) -> list[Instruction]:
    return [i for i in dockerfile() if i.keyword == keyword]


def _pairs(args: str) -> dict[str, str]:
    """``ENV``/``ARG`` arguments: ``A=1 B="two words"``, or the legacy ``A value``."""
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) if "=" in w else (w, "") for w in words)


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in docker_instructions("ENV"):
        env.update(_pairs(instruction.args))
    return env


def build_args() -> dict[str, str]:
    args: dict[str, str] = {}
    for instruction in docker_instructions("ARG"):
        args.update(_pairs(instruction.args))
    return args


def expand(text: str, values: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` replaced by ``values`` (unknown names are left alone)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", one, text)


# --- compose.yaml -------------------------------------------------------------------------


@cache
def _compose_text() -> str:
    return COMPOSE.read_text(encoding="utf-8")


def compose() -> dict[str, Any]:
    """compose.yaml as written (variables not interpolated), anchors and merges resolved."""
    data = yaml.safe_load(_compose_text())
    assert isinstance(data, dict)
    return data


# Values for the variables compose.yaml takes from deploy/.env, as a user would set them.
SAMPLE_VARIABLES = {"REDIS_PASSWORD": "0123abcdexamplepassword"}


def interpolate(value: str, variables: dict[str, str] = SAMPLE_VARIABLES) -> str:
    """Compose's interpolation: ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``, ``$$``."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if name in variables and (variables[name] or op not in (":-", ":?")):
            return variables[name]
        if op in (":-", "-"):
            return arg or ""
        if op in (":?", "?"):
            raise AssertionError(f"compose would stop: {name}: {arg}")
        return ""

    text = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}", one, value)
    assert "${" not in text, f"unhandled interpolation in {value!r}"
    return text.replace("$$", "$")


def service_env(name: str) -> dict[str, str]:
    """The environment a compose service's container gets from compose.yaml (interpolated),
    over the image's ENV when the service runs the image built from deploy/Dockerfile."""
    service = compose()["services"][name]
    env = image_env() if builds_our_image(service) else {}
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    env.update({k: interpolate("" if v is None else str(v)) for k, v in raw.items()})
    return env


def builds_our_image(service: dict[str, Any]) -> bool:
    build = service.get("build")
    if not isinstance(build, dict):
        return False
    context = (COMPOSE.parent / build.get("context", ".")).resolve()
    return (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE


def compose_argv(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


# --- systemd units ------------------------------------------------------------------------


@dataclass
class Unit:
    path: Path
    sections: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def get(self, section: str, key: str) -> list[str]:
        return self.sections.get(section, {}).get(key, [])

    def last(self, section: str, key: str) -> str | None:
        values = self.get(section, key)
        return values[-1] if values else None

    @property
    def name(self) -> str:
        return self.path.name

    def environment(self, instance: str = "0") -> dict[str, str]:
        env: dict[str, str] = {}
        for value in self.get("Service", "Environment"):
            for word in shlex.split(specifiers(value, self, instance)):
                key, _, val = word.partition("=")
                env[key] = val
        return env


def read_unit(path: Path) -> Unit:
    unit = Unit(path)
    section: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = unit.sections.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {line!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def specifiers(text: str, unit: Unit, instance: str = "0") -> str:
    """systemd's unit specifiers (the ones these units use), for an instance name."""
    name = unit.name.replace("@.", f"@{instance}.") if "@." in unit.name else unit.name
    table = {"i": instance, "I": instance, "n": name, "N": name.removesuffix(".service")}
    table |= {"H": "gpu-host", "l": "gpu-host", "h": "/var/lib/animagine", "%": "%"}

    def one(match: re.Match[str]) -> str:
        letter = match.group(1)
        assert letter in table, f"{unit.name}: unit specifier %{letter} not handled here"
        return table[letter]

    return re.sub(r"%(.)", one, text)


EXEC_KEYS = ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop")


def unit_commands(unit: Unit) -> list[list[str]]:
    out = []
    for key in EXEC_KEYS:
        for value in unit.get("Service", key):
            # Prefixes: - (failure ignored), @, :, +, ! (privileges): none changes the argv.
            command = specifiers(value, unit).lstrip("-@:+!")
            out.append(shlex.split(command))
    return out


# --- Makefile -----------------------------------------------------------------------------


def makefile_commands() -> list[list[str]]:
    """Recipe lines that run ``-m bot``, with the Makefile's own variables expanded."""
    variables: dict[str, str] = {}
    commands = []
    for raw in MAKEFILE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z_]+)\s*(\?=|:=|=)\s*(.*)$", raw)
        if match:
            variables[match.group(1)] = match.group(3).strip()
            continue
        if raw.startswith("\t") and "-m bot" in raw:
            line = raw.strip().lstrip("@-")
            for _ in range(5):  # nested variables: PY := $(VENV)/bin/python
                line = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), ""), line)
            commands.append(shlex.split(line))
    return commands


# --- commands -----------------------------------------------------------------------------


def bot_arguments(argv: list[str]) -> list[str] | None:
    """The CLI arguments of a ``python -m bot ...`` (or ``animagine-bot ...``) command; None
    when the command runs something else."""
    for i, word in enumerate(argv):
        if word == "-m" and i + 1 < len(argv) and argv[i + 1] == "bot":
            return argv[i + 2 :]
        if Path(word).name == "animagine-bot":
            return argv[i + 1 :]
    return None


DURATION_UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def seconds(text: str) -> float:
    """A duration as systemd or compose writes it: ``90``, ``90s``, ``5min``, ``1m30s``."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", text)
    assert parts, f"not a duration: {text!r}"
    assert "".join(f"{n}{u}" for n, u in parts) == text.replace(" ", ""), text
    for number, unit in parts:
        total += float(number) * DURATION_UNITS[unit]
    return total
