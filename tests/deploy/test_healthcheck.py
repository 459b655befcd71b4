"""deploy/healthcheck.py, the image's HEALTHCHECK: the bot is asked /healthz over HTTP, a
worker is looked up by its heartbeat in Redis under the name the worker itself uses."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import redis

from bot.config import Settings
from bot.observability.server import OpsServer
from bot.queue.redis_backend import Keys
from bot.queue.remote_worker import RemoteWorker
from tests.deploy.files import DEPLOY
from tests.support.redis_server import RedisServer


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "healthcheck.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = _load()


BOT = {1: ["python", "-m", "bot", "run"]}


def _bot_env(port: int, enabled: str = "true") -> dict[str, str]:
    return {
        "ANIMAGINE_METRICS__ENABLED": enabled,
        "ANIMAGINE_METRICS__PORT": str(port),
        "DISCORD_TOKEN": "test-token",
    }


async def test_the_bot_is_healthy_while_its_event_loop_answers_healthz() -> None:
    """The bot's own metrics server: healthy while its loop answers, not while it hangs."""
    server = OpsServer("127.0.0.1", 0)
    await server.start()
    try:
        assert server.bound_port is not None
        env = _bot_env(server.bound_port)
        healthy, why = await asyncio.to_thread(healthcheck.check, BOT, env)
        assert healthy, why
        assert "/healthz" in why
        # The loop stuck in blocking work: the probe times out and says so.
        probe = asyncio.get_running_loop().run_in_executor(
            None, lambda: healthcheck.check(BOT, env, timeout=0.5)
        )
        time.sleep(1.5)  # noqa: ASYNC251 - blocking the loop on purpose
        healthy, why = await probe
        assert not healthy, why
    finally:
        await server.stop()


def test_the_bot_is_unhealthy_when_nothing_answers() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    healthy, _ = healthcheck.check(BOT, _bot_env(port), timeout=2)
    assert not healthy


def test_with_metrics_off_there_is_nothing_to_ask() -> None:
    healthy, why = healthcheck.check(BOT, _bot_env(9, enabled="false"))
    assert healthy
    assert "metrics are off" in why


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server with a password, as compose.yaml runs it."""
    server = RedisServer(tmp_path, args=("--requirepass", "pw"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _worker_env(server: RedisServer, prefix: str | None = None) -> dict[str, str]:
    env = {
        "ANIMAGINE_QUEUE__BACKEND": "redis",
        "ANIMAGINE_QUEUE__REDIS_URL": f"redis://:pw@127.0.0.1:{server.port}/0",
        "ANIMAGINE_DISCORD__TOKEN_FILE": "",
    }
    if prefix is not None:
        env["ANIMAGINE_QUEUE__REDIS_PREFIX"] = prefix
    return env


def _set(server: RedisServer, key: str) -> None:
    client = redis.Redis.from_url(f"redis://:pw@127.0.0.1:{server.port}/0")
    try:
        client.set(key, b"{}", px=60_000)
    finally:
        client.close()


def _workers_own_key(pid: int, monkeypatch: pytest.MonkeyPatch, name: str | None = None) -> str:
    """The key the worker itself beats under: RemoteWorker names itself."""
    monkeypatch.setattr("os.getpid", lambda: pid)
    settings = Settings()
    worker = RemoteWorker(settings, engine=None, redis=None, name=name)  # type: ignore[arg-type]
    try:
        return worker.keys.worker(worker.name)
    finally:
        worker._gpu.shutdown()


def test_a_worker_is_healthy_while_its_heartbeat_is_in_redis(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "c0ffee123456")
    table = {1: ["python", "-m", "bot", "worker", "--grace", "60"]}
    healthy, why = healthcheck.check(table, _worker_env(redis_server))
    assert not healthy, why
    _set(redis_server, _workers_own_key(1, monkeypatch))
    healthy, why = healthcheck.check(table, _worker_env(redis_server))
    assert healthy, why


def test_a_named_worker_behind_an_init_process(redis_server: RedisServer) -> None:
    table = {
        1: ["/sbin/docker-init", "--", "python", "-m", "bot", "worker", "--name", "gpu-1"],
        7: ["python", "-m", "bot", "worker", "--name", "gpu-1"],
    }
    _set(redis_server, Keys("bot2").worker("gpu-1"))
    healthy, why = healthcheck.check(table, _worker_env(redis_server, prefix="bot2"))
    assert healthy, why


def test_a_worker_is_unhealthy_when_redis_does_not_answer(redis_server: RedisServer) -> None:
    env = _worker_env(redis_server)
    redis_server.stop()
    healthy, why = healthcheck.check({1: ["python", "-m", "bot", "worker"]}, env)
    assert not healthy
    assert "refused" in why.lower() or "connect" in why.lower(), why


def test_other_commands_and_no_bot_process() -> None:
    table = {1: ["python", "-m", "bot", "db", "upgrade"]}
    assert healthcheck.check(table, {"DISCORD_TOKEN": "x"})[0]
    assert not healthcheck.check({1: ["sleep", "infinity"]}, {})[0]


def test_processes_reads_proc(tmp_path: Path) -> None:
    (tmp_path / "12").mkdir()
    (tmp_path / "12" / "cmdline").write_bytes(b"python\0-m\0bot\0run\0")
    (tmp_path / "self").mkdir()
    assert healthcheck.processes(tmp_path) == {12: ["python", "-m", "bot", "run"]}


def test_main_says_why_and_exits_1_when_unhealthy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(healthcheck, "processes", dict)
    assert healthcheck.main() == 1
    assert "no `python -m bot` process" in capsys.readouterr().err
