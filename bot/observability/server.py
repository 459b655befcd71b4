"""The operations HTTP server: ``/metrics``, ``/healthz`` and ``/readyz``, on the bot's loop.

One aiohttp server (the library discord.py already uses) on ``metrics.host`` and
``metrics.port``, served by the bot's own event loop:

* ``/healthz`` answers 200 whenever the loop answers at all (a loop blocked for good never
  answers it: that is the point), with ``{"status": "ok", "loop_stall_seconds": ...}``, the
  longest lateness of the loop's 0.25 s timer in the last minute.
* ``/readyz`` runs every readiness check at once (the gateway, the renderer, the
  database): 200 with ``{"ready": true, "checks": {name: {"ok": ..., "detail": ...}}}``
  when all pass, else 503 with the same body and ``"failing": [names]``.
* ``/metrics``: the registry in Prometheus' text format, after the on-demand gauges are
  read (:meth:`bot.observability.metrics.Metrics.sample`), written out on a thread.

A port already in use is :class:`PortInUse` (the runner then exits with one error line:
probes and dashboards that silently lack their server are worse than a bot that does not
start).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Mapping
from typing import Final

from aiohttp import web

from bot.observability.health import Check, CheckFn
from bot.observability.metrics import CONTENT_TYPE_LATEST, LoopWatch, Metrics

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S: Final = 5.0


class PortInUse(OSError):
    """Another process listens on the configured address already."""


class OpsServer:
    """Serves the three endpoints; :meth:`start` binds, :meth:`stop` closes."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics: Metrics | None = None,
        checks: Mapping[str, CheckFn] | None = None,
        loop_watch: LoopWatch | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.metrics = metrics
        self.checks: dict[str, CheckFn] = dict(checks or {})
        self.loop_watch = loop_watch or LoopWatch()
        if metrics is not None:
            metrics.loop_watch = self.loop_watch
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.bound_port or self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_page)
        return app

    async def start(self) -> None:
        """Listen (raises :class:`PortInUse`, or :class:`OSError` for another reason)."""
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(exc.errno, f"{self.host}:{self.port} is in use") from exc
            raise
        self._runner = runner
        ports = [a[1] for a in runner.addresses if isinstance(a, tuple) and len(a) >= 2]
        self.bound_port = ports[0] if ports else self.port
        self.loop_watch.start()

    async def stop(self) -> None:
        await self.loop_watch.stop()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # ------------------------------------------------------------------ handlers
    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "loop_stall_seconds": round(self.loop_watch.recent_stall, 4)}
        )

    async def readyz(self, _: web.Request) -> web.Response:
        names = list(self.checks)
        results = await asyncio.gather(*(self._run(self.checks[n]) for n in names))
        checks = {n: {"ok": r.ok, "detail": r.detail} for n, r in zip(names, results, strict=True)}
        failing = [n for n, r in zip(names, results, strict=True) if not r.ok]
        body: dict[str, object] = {"ready": not failing, "checks": checks}
        if failing:
            body["failing"] = failing
        return web.json_response(body, status=503 if failing else 200)

    @staticmethod
    async def _run(check: CheckFn) -> Check:
        try:
            return await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
        except TimeoutError:
            return Check(False, f"no answer within {CHECK_TIMEOUT_S:g} s")
        except Exception as exc:
            log.exception("a readiness check failed")
            return Check(False, f"the check broke: {type(exc).__name__}")

    async def metrics_page(self, _: web.Request) -> web.Response:
        if self.metrics is None:
            raise web.HTTPNotFound(text="metrics are off")
        await self.metrics.sample()
        # Writing the text out takes a few milliseconds for a busy registry: off the loop
        # (prometheus_client's metrics are thread-safe), so a scrape never stalls it.
        body = await asyncio.to_thread(self.metrics.exposition)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
