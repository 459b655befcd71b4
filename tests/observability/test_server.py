"""The operations server on a free port: /healthz, /readyz, /metrics over real HTTP."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from bot.discord_app.http import rate_limit_scope, route_template
from bot.observability.health import Check, DatabaseProbe
from bot.observability.metrics import CONTENT_TYPE_LATEST, LoopWatch, Metrics, Snapshot
from bot.observability.server import OpsServer, PortInUse
from bot.queue import protocol
from bot.storage import Database


class Switch:
    """A readiness check that fails until switched on."""

    def __init__(self) -> None:
        self.on = False

    async def __call__(self) -> Check:
        return Check(self.on, "on" if self.on else "off: waiting")


class FixedSampler:
    async def sample(self) -> Snapshot:
        return Snapshot(
            jobs_waiting=3,
            members_waiting=2,
            deliveries_pending=1,
            workers_up=1,
            gpu_memory_used_bytes={"local": 7 * 2**30},
            gateway_latency_seconds={"0": 0.042, "1": float("inf")},
        )


@pytest.fixture
async def server() -> AsyncIterator[tuple[OpsServer, Switch, Metrics]]:
    switch = Switch()
    metrics = Metrics()
    metrics.sampler = FixedSampler()

    async def always() -> Check:
        return Check(True, "fine")

    ops = OpsServer("127.0.0.1", 0, metrics=metrics, checks={"gateway": switch, "db": always})
    await ops.start()
    try:
        yield ops, switch, metrics
    finally:
        await ops.stop()


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.headers["Content-Type"], await response.text()


async def test_health_readiness_and_metrics_over_http(
    server: tuple[OpsServer, Switch, Metrics],
) -> None:
    ops, switch, metrics = server
    assert ops.bound_port
    assert ops.url == f"http://127.0.0.1:{ops.bound_port}"

    status, _, body = await get(f"{ops.url}/healthz")
    assert status == 200
    assert '"status": "ok"' in body
    assert "loop_stall_seconds" in body

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{ops.url}/readyz") as response:
            assert response.status == 503
            answer = await response.json()
        assert answer["ready"] is False
        assert answer["failing"] == ["gateway"]
        assert answer["checks"]["gateway"] == {"ok": False, "detail": "off: waiting"}
        assert answer["checks"]["db"]["ok"] is True
        switch.on = True
        async with session.get(f"{ops.url}/readyz") as response:
            assert response.status == 200
            answer = await response.json()
        assert answer == {
            "ready": True,
            "checks": {
                "gateway": {"ok": True, "detail": "on"},
                "db": {"ok": True, "detail": "fine"},
            },
        }

    metrics.rate_limited("user")
    metrics.rest_answered("POST", "/channels/{channel_id}/messages", 0.12)
    status, content_type, text = await get(f"{ops.url}/metrics")
    assert status == 200
    assert content_type == CONTENT_TYPE_LATEST  # text/plain; version=...
    families = {f.name: f for f in text_string_to_metric_families(text)}
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert values[("animagine_queue_jobs_waiting", ())] == 3
    assert values[("animagine_queue_members_waiting", ())] == 2
    assert values[("animagine_deliveries_pending", ())] == 1
    assert values[("animagine_workers_up", ())] == 1
    assert values[("animagine_gpu_memory_used_bytes", (("worker", "local"),))] == 7 * 2**30
    assert values[("animagine_discord_gateway_latency_seconds", (("shard", "0"),))] == 0.042
    assert ("animagine_discord_gateway_latency_seconds", (("shard", "1"),)) not in values
    assert values[("animagine_discord_rate_limit_hits_total", (("scope", "user"),))] == 1
    assert values[("animagine_discord_rate_limit_hits_total", (("scope", "global"),))] == 0
    rest = (("method", "POST"), ("route", "/channels/{channel_id}/messages"))
    assert values[("animagine_discord_rest_request_duration_seconds_count", rest)] == 1
    assert values[("animagine_build_info", (("version", "0.1.0"),))] == 1
    assert ("animagine_event_loop_stall_seconds", ()) in values
    assert families["animagine_render_seconds"].type == "histogram"
    assert families["animagine_jobs"].type == "counter"


async def test_a_port_in_use_is_one_clear_error(
    server: tuple[OpsServer, Switch, Metrics],
) -> None:
    ops, _, _ = server
    second = OpsServer("127.0.0.1", ops.bound_port or 0)
    with pytest.raises(PortInUse, match=f"127.0.0.1:{ops.bound_port} is in use"):
        await second.start()


async def test_metrics_off_is_a_404_and_a_broken_sampler_leaves_gauges_out() -> None:
    ops = OpsServer("127.0.0.1", 0)
    await ops.start()
    try:
        status, _, _ = await get(f"{ops.url}/metrics")
        assert status == 404
    finally:
        await ops.stop()

    class Broken:
        async def sample(self) -> Snapshot:
            raise RuntimeError("no database")

    metrics = Metrics()
    metrics.sampler = Broken()
    await metrics.sample()
    text = metrics.exposition().decode()
    assert "\nanimagine_queue_jobs_waiting " not in text  # no sample rather than a stale one
    assert "# TYPE animagine_queue_jobs_waiting gauge" in text


async def test_loop_watch_reports_the_longest_recent_stall() -> None:
    watch = LoopWatch(tick=0.01, window=60.0)
    watch.record(100.0, 0.002)
    watch.record(101.0, 0.5)
    watch.record(102.0, 0.01)
    assert [late for _, late in watch._late] == [0.5, 0.01]  # only what can still be the max
    watch.start()
    try:
        await asyncio.sleep(0.03)
        import time

        time.sleep(0.15)  # block the loop  # noqa: ASYNC251 - the point of the test
        await asyncio.sleep(0.03)
        assert watch.recent_stall >= 0.1
    finally:
        await watch.stop()


async def test_database_probe_writable_locked_and_read_only(tmp_path: Path) -> None:
    path = tmp_path / "probe.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE guild_settings (guild_id INTEGER PRIMARY KEY)")
    db = Database(f"sqlite:///{path}", busy_timeout_ms=2000)
    read_only = Database(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        assert await DatabaseProbe(db)() == Check(True, "writable")
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            check = await DatabaseProbe(db, timeout=0.2)()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert check == Check(False, "no write transaction within 0.2 s")
        check = await DatabaseProbe(read_only)()
        assert not check.ok
        assert "read-only" in check.detail
    finally:
        await asyncio.to_thread(db.close)
        read_only.close()


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/api/v10/channels/123/messages", "/channels/{channel_id}/messages"),
        ("/api/v10/channels/1/messages/2", "/channels/{channel_id}/messages/{message_id}"),
        (
            "/api/v10/webhooks/55/aBc-9_tok/messages/@original",
            "/webhooks/{webhook_id}/{webhook_token}/messages/@original",
        ),
        ("/api/v10/webhooks/55/lowercase", "/webhooks/{webhook_id}/{webhook_token}"),
        (
            "/api/v10/interactions/77/dG9rZW4/callback",
            "/interactions/{interaction_id}/{interaction_token}/callback",
        ),
        ("/api/v10/users/@me/channels", "/users/@me/channels"),
        (
            "/api/v10/applications/9/guilds/8/commands",
            "/applications/{application_id}/guilds/{guild_id}/commands",
        ),
        (
            "/api/v10/channels/1/messages/2/reactions/smile/@me",
            "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
        ),
    ],
)
def test_route_templates_hide_ids_and_tokens(path: str, template: str) -> None:
    assert route_template(path, "/api/v10") == template


def test_rate_limit_scopes() -> None:
    assert rate_limit_scope(CIMultiDict({"X-RateLimit-Scope": "shared"})) == "shared"
    assert rate_limit_scope(CIMultiDict({"x-ratelimit-scope": "USER"})) == "user"
    assert rate_limit_scope(CIMultiDict({"X-RateLimit-Global": "true"})) == "global"
    assert rate_limit_scope(CIMultiDict({"X-RateLimit-Scope": "made-up"})) == "route"
    assert rate_limit_scope(CIMultiDict()) == "route"


def test_heartbeats_carry_gpu_memory_and_old_ones_still_read() -> None:
    beat = protocol.Heartbeat(
        "w1", "box", "H100", "m", "idle", 0, 1.0, gpu_memory_used_bytes=123_456
    )
    assert (
        protocol.read_heartbeat(protocol.heartbeat_message(beat)).gpu_memory_used_bytes == 123_456
    )
    plain = protocol.Heartbeat("w1", "box", "cpu", "m", "idle", 0, 1.0)
    message = protocol.heartbeat_message(plain)
    assert "gpu_memory_used_bytes" not in message  # as a worker before the field wrote it
    assert protocol.read_heartbeat(message).gpu_memory_used_bytes is None
