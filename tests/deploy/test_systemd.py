"""deploy/*.service: restart policy, a dedicated user, the token as a credential, hardening
that leaves CUDA its devices, writable paths that match the settings, and a stop timeout
longer than the graceful stop. Their commands are checked in test_commands.py; when
systemd-analyze is installed it verifies the units too."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bot.config import ENV_PREFIX, QueueSettings, load_settings
from tests.deploy.files import UNITS, Unit, read_unit, seconds

BOT_UNIT, WORKER_UNIT = (read_unit(p) for p in UNITS)


@pytest.fixture(params=[BOT_UNIT, WORKER_UNIT], ids=lambda u: u.name)
def unit(request: pytest.FixtureRequest) -> Unit:
    chosen: Unit = request.param
    return chosen


def test_restarts_on_failure_with_backoff(unit: Unit) -> None:
    assert unit.last("Service", "Restart") in ("on-failure", "always")
    assert seconds(unit.last("Service", "RestartSec") or "0") >= 5
    assert unit.last("Service", "RestartMaxDelaySec"), "backs off (systemd 254+)"
    assert unit.last("Service", "RestartPreventExitStatus") == "2", "config errors stay down"
    assert unit.last("Unit", "StartLimitBurst")
    assert unit.last("Unit", "StartLimitIntervalSec")


def test_runs_as_a_dedicated_user(unit: Unit) -> None:
    user = unit.last("Service", "User")
    assert user
    assert user not in ("root", "0")
    assert unit.last("Service", "DynamicUser") in (None, "no")


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "CapabilityBoundingSet": "",
}


def test_hardening_that_leaves_cuda_its_devices(unit: Unit) -> None:
    for key, value in HARDENING.items():
        assert unit.last("Service", key) == value, f"{unit.name}: {key}={value}"
    families = (unit.last("Service", "RestrictAddressFamilies") or "").split()
    assert set(families) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # CUDA opens /dev/nvidia*; torch.compile and the driver write code at run time.
    assert unit.last("Service", "PrivateDevices") in (None, "no", "false")
    assert unit.last("Service", "DevicePolicy") in (None, "auto")
    assert unit.last("Service", "MemoryDenyWriteExecute") in (None, "no", "false")


def _writable(unit: Unit) -> list[Path]:
    paths = [Path(p.lstrip("-")) for v in unit.get("Service", "ReadWritePaths") for p in v.split()]
    paths += [Path("/var/lib") / d for d in unit.get("Service", "StateDirectory")]
    paths += [Path("/var/cache") / d for d in unit.get("Service", "CacheDirectory")]
    return paths


def test_what_the_process_writes_is_writable(unit: Unit) -> None:
    env = unit.environment()
    settings = load_settings(
        environ={**{k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}, "DISCORD_TOKEN": "x"}
    )
    written = [Path(env["HF_HOME"]), Path(settings.engine.speed.compile_cache_dir)]
    if unit is BOT_UNIT:
        written += [
            Path(settings.database.url.removeprefix("sqlite:///")).parent,
            Path(settings.delivery.images_dir),
        ]
    writable = _writable(unit)
    for path in written:
        assert any(path.is_relative_to(w) for w in writable), f"{unit.name}: {path} read-only"
    workdir = unit.last("Service", "WorkingDirectory")
    assert workdir
    assert any(Path(workdir).is_relative_to(w) for w in writable)


def test_the_bot_reads_its_token_as_a_credential() -> None:
    (credential,) = BOT_UNIT.get("Service", "LoadCredential")
    name, _, source = credential.partition(":")
    assert source.startswith("/etc/"), "the token file stays outside the repository"
    token_file = BOT_UNIT.environment()["ANIMAGINE_DISCORD__TOKEN_FILE"]
    assert token_file == f"/run/credentials/{BOT_UNIT.name}/{name}", "$CREDENTIALS_DIRECTORY"
    assert "DISCORD_TOKEN" not in BOT_UNIT.environment(), "no token in the unit itself"


def test_the_worker_needs_no_token_and_takes_its_gpu_from_the_instance() -> None:
    env = WORKER_UNIT.environment(instance="3")
    assert env["CUDA_VISIBLE_DEVICES"] == "3"
    assert not WORKER_UNIT.get("Service", "LoadCredential")
    settings = load_settings(environ={k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})
    assert settings.discord.token is None


def test_stop_timeouts_cover_the_graceful_stop() -> None:
    # The worker drains for queue.redis_drain_grace_s; the bot finishes its running job
    # (30 s) and its deliveries in flight (10 s more) before it disconnects.
    assert seconds(WORKER_UNIT.last("Service", "TimeoutStopSec") or "0") > (
        QueueSettings().redis_drain_grace_s
    )
    assert seconds(BOT_UNIT.last("Service", "TimeoutStopSec") or "0") > 40
    for unit in (BOT_UNIT, WORKER_UNIT):
        assert unit.last("Service", "KillSignal") in (None, "SIGTERM")
        assert unit.last("Service", "KillMode") in (None, "control-group", "mixed")


def _verify(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: PLW1510 - the result is inspected
        ["systemd-analyze", "verify", "--man=no", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


# Keys of newer systemd versions than the one verifying: ignored there, as documented.
NEWER_KEYS = ("RestartSteps", "RestartMaxDelaySec")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    probe = tmp_path / "probe.service"
    probe.write_text("[Service]\nExecStart=/bin/true\n", encoding="utf-8")
    if _verify([probe]).returncode != 0:
        pytest.skip("systemd-analyze cannot run here")
    checked = []
    for unit in (BOT_UNIT, WORKER_UNIT):
        name = unit.name.replace("@.", "@0.")
        text = unit.path.read_text(encoding="utf-8")
        # The interpreter path does not exist here: /bin/true stands in for it.
        text = text.replace("/opt/animagine-bot/.venv/bin/python", shutil.which("true") or "")
        (tmp_path / name).write_text(text, encoding="utf-8")
        checked.append(tmp_path / name)
    result = _verify(checked)
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and not any(f"Unknown key '{k}'" in line for k in NEWER_KEYS)
    ]
    assert not problems, "\n".join(problems)
    assert result.returncode == 0
