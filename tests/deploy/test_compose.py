"""deploy/compose.yaml: valid Compose, and what a user relies on.

Validity is checked against the Compose Specification's JSON schema (vendored: see
tests/deploy/README.md); `docker compose config` would say the same, without interpolation.
The rest are the promises of the README's "Deployment" section: the worker reserves one
NVIDIA GPU and the bot none; every service restarts and has a health check; every volume,
secret and bind-mounted file referenced exists; the bot and the worker talk to the Redis the
file runs, with its password; nothing listens beyond the loopback interface.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.deploy.files import (
    COMPOSE,
    DOCKERFILE,
    builds_our_image,
    compose,
    docker_instructions,
    interpolate,
    seconds,
    service_env,
)

SCHEMA = Path(__file__).with_name("compose-spec.json")
GPU_SERVICES = {"worker"}


def _services() -> dict[str, dict[str, Any]]:
    services = compose()["services"]
    assert isinstance(services, dict)
    return services


def _devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    deploy = service.get("deploy") or {}
    return ((deploy.get("resources") or {}).get("reservations") or {}).get("devices") or []


def test_valid_against_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(compose()), key=lambda e: list(e.path)
    )
    assert not errors, "\n".join(
        f"{'.'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in errors
    )


def test_the_schema_catches_a_mistake() -> None:
    """The validation is not vacuous: an unknown service key and a wrong type fail."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    broken = compose()
    broken["services"]["worker"]["gpu"] = 1
    broken["services"]["bot"]["restart"] = 5
    messages = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(broken)]
    assert len(messages) == 2, messages


def test_the_worker_reserves_one_nvidia_gpu_and_nothing_else_does() -> None:
    for name, service in _services().items():
        devices = _devices(service)
        assert "gpus" not in service, name
        assert service.get("runtime") != "nvidia", name
        if name not in GPU_SERVICES:
            assert not devices, f"{name} reserves devices: only the worker needs a GPU"
            continue
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}], name


def test_bot_and_worker_run_this_image_with_the_redis_backend() -> None:
    services = _services()
    for name in ("bot", "worker"):
        service = services[name]
        assert builds_our_image(service), f"{name} builds {DOCKERFILE}"
        assert service["image"] == services["bot"]["image"], "one image for both"
        env = service_env(name)
        assert env["ANIMAGINE_QUEUE__BACKEND"] == "redis"
        url = env["ANIMAGINE_QUEUE__REDIS_URL"]
        assert url.startswith("redis://:0123abcdexamplepassword@redis:6379/"), url
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_redis_needs_its_password_and_persists() -> None:
    redis = _services()["redis"]
    text = COMPOSE.read_text(encoding="utf-8")
    assert "${REDIS_PASSWORD:?" in text, "compose stops when REDIS_PASSWORD is not set"
    with pytest.raises(AssertionError, match="REDIS_PASSWORD"):
        interpolate(redis["environment"]["REDIS_PASSWORD"], {})
    command = " ".join(redis["command"])
    assert "--requirepass" in command
    assert "--appendonly yes" in command
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_every_service_restarts_and_has_a_health_check() -> None:
    for name, service in _services().items():
        assert service.get("restart") in ("unless-stopped", "always", "on-failure"), name
        check = service.get("healthcheck")
        assert check, f"{name} has no health check"
        assert not check.get("disable"), name
        assert check.get("test"), name


def test_bot_and_worker_run_the_image_health_check() -> None:
    (check,) = docker_instructions("HEALTHCHECK")
    image_test = json.loads(check.args.partition("CMD ")[2])
    for name in ("bot", "worker"):
        test = _services()[name]["healthcheck"]["test"]
        assert test == ["CMD", *image_test], "deploy/healthcheck.py knows bot from worker"
        assert seconds(_services()[name]["healthcheck"]["start_period"]) >= 300, (
            "the first start downloads the model"
        )


def test_stop_grace_covers_the_graceful_stop() -> None:
    worker = _services()["worker"]
    grace = float(worker["command"][worker["command"].index("--grace") + 1])
    assert grace > 0
    assert seconds(worker["stop_grace_period"]) > grace, "docker stop must not cut the drain"
    # The bot finishes its running job for 30 s and its deliveries in flight for 10 more.
    assert seconds(_services()["bot"]["stop_grace_period"]) > 40


def _named_volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume["target"]
        else:
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
        out.append((source, target))
    return out


def test_every_volume_secret_and_file_referenced_exists() -> None:
    data = compose()
    declared_volumes = set(data.get("volumes") or {})
    declared_secrets = set(data.get("secrets") or {})
    used_volumes = set()
    for name, service in _services().items():
        for source, _target in _named_volumes(service):
            if source.startswith((".", "/")):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} is missing"
            else:
                assert source in declared_volumes, f"{name}: volume {source} not declared"
                used_volumes.add(source)
        for secret in service.get("secrets", []):
            secret_name = secret if isinstance(secret, str) else secret["source"]
            assert secret_name in declared_secrets, f"{name}: secret {secret_name} not declared"
    assert used_volumes == declared_volumes, "declared volumes nobody uses"
    for name, secret in data["secrets"].items():
        path = (COMPOSE.parent / secret["file"]).resolve()
        assert path.is_relative_to(COMPOSE.parent / "secrets"), name
    ignored = (COMPOSE.parent / ".gitignore").read_text(encoding="utf-8").split()
    assert "secrets/" in ignored, "secrets stay out of git"
    assert ".env" in ignored, "secrets stay out of git"


def test_the_image_volumes_are_mounted_and_the_token_is_the_secret() -> None:
    image_volumes = set()
    for instruction in docker_instructions("VOLUME"):
        image_volumes |= set(instruction.exec_form() or instruction.args.split())
    services = _services()
    bot_targets = {t for _, t in _named_volumes(services["bot"])}
    assert image_volumes <= bot_targets, "the bot's database, images and cache in volumes"
    assert "/cache" in {t for _, t in _named_volumes(services["worker"])}, "the model cache"
    assert services["bot"]["secrets"] == ["discord_token"]
    assert service_env("bot")["ANIMAGINE_DISCORD__TOKEN_FILE"] == "/run/secrets/discord_token"
    assert "secrets" not in services["worker"], "workers need no token"
    assert service_env("worker")["ANIMAGINE_DISCORD__TOKEN_FILE"] == ""


def test_ports_are_published_on_loopback_only() -> None:
    for name, service in _services().items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} reaches the network"


def test_monitoring_is_optional() -> None:
    for name, service in _services().items():
        if name in ("prometheus", "grafana"):
            assert service.get("profiles") == ["monitoring"], name
        else:
            assert "profiles" not in service, f"{name} must start by default"
