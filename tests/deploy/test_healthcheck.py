"""deploy/healthcheck.py, the image's HEALTHCHECK: the bot is asked /healthz over HTTP, a
worker is looked up by its heartbeat in Redis under the name the worker itself uses."""

from __future__ import annotations

import importlib.util
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest
import redis

from bot.config import Settings
from bot.queue.redis_backend import Keys
from bot.queue.remote_worker import RemoteWorker
from tests.deploy.files import DEPLOY


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "healthcheck.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = _load()


class _Status:
    code = 200


@pytest.fixture
def metrics_server() -> Iterator[tuple[int, type[_Status]]]:
    """A stand-in for the bot's metrics server: /healthz answers _Status.code."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(_Status.code if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Status.code = 200
    try:
        yield server.server_address[1], _Status
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


BOT = {1: ["python", "-m", "bot", "run"]}


def _bot_env(port: int, enabled: str = "true") -> dict[str, str]:
    return {
        "ANIMAGINE_METRICS__ENABLED": enabled,
        "ANIMAGINE_METRICS__PORT": str(port),
        "DISCORD_TOKEN": "test-token",
    }


def test_the_bot_is_healthy_while_healthz_answers(
    metrics_server: tuple[int, type[_Status]],
) -> None:
    port, status = metrics_server
    healthy, why = healthcheck.check(BOT, _bot_env(port))
    assert healthy, why
    assert "/healthz" in why
    status.code = 503
    assert not healthcheck.check(BOT, _bot_env(port))[0]


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


class _FakeRedis:
    keys: ClassVar[set[str]] = set()
    asked: ClassVar[list[str]] = []
    fail: ClassVar[bool] = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> _FakeRedis:
        assert url == "redis://:pw@redis:6379/0"
        assert options["socket_timeout"] > 0
        return cls()

    def exists(self, key: str) -> int:
        if self.fail:
            raise redis.ConnectionError("Connection refused")
        self.asked.append(key)
        return int(key in self.keys)

    def close(self) -> None:
        pass


WORKER_ENV = {
    "ANIMAGINE_QUEUE__BACKEND": "redis",
    "ANIMAGINE_QUEUE__REDIS_URL": "redis://:pw@redis:6379/0",
    "ANIMAGINE_DISCORD__TOKEN_FILE": "",
}


@pytest.fixture
def fake_redis(monkeypatch: pytest.MonkeyPatch) -> type[_FakeRedis]:
    monkeypatch.setattr(redis.Redis, "from_url", _FakeRedis.from_url)
    monkeypatch.setattr(socket, "gethostname", lambda: "c0ffee123456")
    _FakeRedis.keys, _FakeRedis.asked, _FakeRedis.fail = set(), [], False
    return _FakeRedis


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
    fake_redis: type[_FakeRedis], monkeypatch: pytest.MonkeyPatch
) -> None:
    table = {1: ["python", "-m", "bot", "worker", "--grace", "60"]}
    healthy, why = healthcheck.check(table, WORKER_ENV)
    assert not healthy, why
    (asked,) = fake_redis.asked
    assert asked == _workers_own_key(1, monkeypatch)
    fake_redis.keys = {asked}
    assert healthcheck.check(table, WORKER_ENV)[0]


def test_a_named_worker_behind_an_init_process(
    fake_redis: type[_FakeRedis], monkeypatch: pytest.MonkeyPatch
) -> None:
    table = {
        1: ["/sbin/docker-init", "--", "python", "-m", "bot", "worker", "--name", "gpu-1"],
        7: ["python", "-m", "bot", "worker", "--name", "gpu-1"],
    }
    env = {**WORKER_ENV, "ANIMAGINE_QUEUE__REDIS_PREFIX": "bot2"}
    fake_redis.keys = {Keys("bot2").worker("gpu-1")}
    healthy, why = healthcheck.check(table, env)
    assert healthy, why


def test_a_worker_is_unhealthy_when_redis_does_not_answer(
    fake_redis: type[_FakeRedis],
) -> None:
    fake_redis.fail = True
    healthy, why = healthcheck.check({1: ["python", "-m", "bot", "worker"]}, WORKER_ENV)
    assert not healthy
    assert "Connection refused" in why


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
