"""Every `python -m bot ...` in the deployment files is one the CLI accepts, and every
ANIMAGINE_* variable they set names a real settings key with a valid value.

The commands come from the Dockerfile (CMD, ENTRYPOINT), compose.yaml (command, entrypoint,
health checks), the systemd units (ExecStart and friends, specifiers expanded) and the
Makefile; each is parsed by :func:`bot.cli.build_parser`, which raises ``UsageError`` for
anything the real CLI would refuse. The environments are the image's ENV, each compose
service's environment over it, and each unit's Environment= lines; each is loaded with
:func:`bot.config.load_settings` as the process would load it.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from bot.cli import UsageError, build_parser
from bot.config import ENV_PREFIX, ConfigError, Settings, load_settings
from tests.deploy.files import (
    UNITS,
    bot_arguments,
    builds_our_image,
    compose,
    compose_argv,
    docker_instructions,
    image_env,
    makefile_commands,
    read_unit,
    service_env,
    unit_commands,
)


def _commands() -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for keyword in ("CMD", "ENTRYPOINT"):
        for instruction in docker_instructions(keyword):
            argv = instruction.exec_form()
            assert argv is not None, f"Dockerfile {keyword}: use the JSON form"
            out.append((f"Dockerfile {keyword}", argv))
    for name, service in compose()["services"].items():
        out.extend(
            (f"compose {name}.{key}", compose_argv(service[key]))
            for key in ("command", "entrypoint")
            if key in service
        )
        test = (service.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and test[0] == "CMD":
            out.append((f"compose {name}.healthcheck", test[1:]))
    for path in UNITS:
        unit = read_unit(path)
        out.extend((f"{path.name} Exec", argv) for argv in unit_commands(unit))
    out.extend(("Makefile", argv) for argv in makefile_commands())
    return out


BOT_COMMANDS = [(where, args) for where, argv in _commands() if (args := bot_arguments(argv))]


def test_the_files_hold_the_commands_we_expect() -> None:
    """Not vacuous: the image's default, both compose services, both units and `make run`."""
    where = {w for w, _ in BOT_COMMANDS}
    assert {
        "Dockerfile CMD",
        "compose bot.command",
        "compose worker.command",
        "animagine-bot.service Exec",
        "animagine-worker@.service Exec",
        "Makefile",
    } <= where
    subcommands = {_parse(args).command for _, args in BOT_COMMANDS}
    assert {"run", "worker"} <= subcommands


def _parse(args: list[str]) -> Any:
    try:
        return build_parser().parse_args(args)
    except UsageError as exc:
        pytest.fail(f"the CLI refuses {args}: {exc}")
    except SystemExit as exc:  # --help, --version
        pytest.fail(f"{args} exits ({exc.code}) instead of running")


@pytest.mark.parametrize(("where", "args"), BOT_COMMANDS, ids=[w for w, _ in BOT_COMMANDS])
def test_the_cli_accepts(where: str, args: list[str]) -> None:
    parsed = _parse(args)
    assert parsed.command in ("run", "worker", "workers", "db", "generate", "policy", "doctor")


def test_the_parser_check_is_not_vacuous() -> None:
    with pytest.raises(UsageError):
        build_parser().parse_args(["worker", "--grace", "soon"])
    with pytest.raises(UsageError):
        build_parser().parse_args(["serve"])


def _environments() -> list[tuple[str, dict[str, str]]]:
    envs = [("Dockerfile ENV", image_env())]
    for name, service in compose()["services"].items():
        if builds_our_image(service) or any(
            k.startswith(ENV_PREFIX) for k in service.get("environment") or {}
        ):
            envs.append((f"compose {name}", service_env(name)))
    envs.extend((path.name, read_unit(path).environment()) for path in UNITS)
    return envs


ENVIRONMENTS = _environments()


def _field_path(parts: list[str]) -> str:
    """The dotted key, checked against the Settings model field by field."""
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        fields = model.model_fields
        assert part in fields, f"{'.'.join(parts[: i + 1])}: no such setting"
        annotation = fields[part].annotation
        if i < len(parts) - 1:
            section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
            assert section, f"{'.'.join(parts[: i + 1])} is a value, not a section"
            assert isinstance(annotation, type)
            model = annotation
    return ".".join(parts)


@pytest.mark.parametrize(("where", "env"), ENVIRONMENTS, ids=[w for w, _ in ENVIRONMENTS])
def test_every_animagine_variable_is_a_real_key_with_a_valid_value(
    where: str, env: dict[str, str]
) -> None:
    ours = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    for name in ours:
        assert name == name.upper(), f"{name}: the convention is upper case"
        parts = name.removeprefix(ENV_PREFIX).lower().split("__")
        assert len(parts) >= 2, f"{name}: not ANIMAGINE_<SECTION>__<KEY>, so it is ignored"
        _field_path(parts)
    # As the process loads them: a fake token stands in for DISCORD_TOKEN / the token file.
    try:
        load_settings(environ={**ours, "DISCORD_TOKEN": "test-token"})
    except ConfigError as exc:
        pytest.fail(f"{where}: {exc}")


def test_the_worker_environment_needs_no_token() -> None:
    env = {k: v for k, v in service_env("worker").items() if k.startswith(ENV_PREFIX)}
    settings = load_settings(environ=env)
    assert settings.discord.token is None
    assert settings.queue.backend == "redis"
    assert settings.engine.device == "cuda"


def test_the_env_check_is_not_vacuous() -> None:
    with pytest.raises(AssertionError, match="no such setting"):
        _field_path(["queue", "backnd"])
    with pytest.raises(ConfigError):
        load_settings(environ={"ANIMAGINE_METRICS__PORT": "99999"})
