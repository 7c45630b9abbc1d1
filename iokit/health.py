"""Health and metrics over HTTP on loopback: /liveness, /readiness and /metrics (aiohttp).

Owns one small aiohttp server. Liveness and readiness are decided by callables the service passes
in (cheap, synchronous, no I/O: they read state its tasks keep up to date), answered as Felix does:
200 "ok" when true, 503 with the reason when false or when the callable raised. /metrics renders
the `prometheus_client.CollectorRegistry` passed in; this module registers no metric itself and
does nothing at import time. It does not decide what healthy means.

Invariants: binds 127.0.0.1 unless told otherwise; port 0 picks a free port, readable from `port`
after `start`; a failing health callable makes the probe fail, never the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

Check = Callable[[], bool]


def _probe(check: Check, what: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(_: web.Request) -> web.Response:
        try:
            healthy = bool(check())
        except Exception as error:
            log.exception("%s check raised", what)
            return web.Response(status=503, text=f"{what} check failed: {error!r}\n")
        return (
            web.Response(status=200, text="ok\n")
            if healthy
            else web.Response(status=503, text=f"not {what}\n")
        )

    return handle


class HealthServer:
    """Serves /liveness, /readiness and /metrics until stopped."""

    def __init__(
        self,
        *,
        liveness: Check,
        readiness: Check,
        registry: CollectorRegistry | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._registry = registry
        self._runner: web.AppRunner | None = None
        self.port = 0
        app = web.Application()
        app.router.add_get("/liveness", _probe(liveness, "live"))
        app.router.add_get("/readiness", _probe(readiness, "ready"))
        app.router.add_get("/metrics", self._metrics)
        self._app = app

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def _metrics(self, _: web.Request) -> web.Response:
        if self._registry is None:
            return web.Response(status=404, text="no metrics registry\n")
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        runner = web.AppRunner(self._app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._requested_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("health endpoint on %s", self.url)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def serve(self) -> None:
        """Start, serve until cancelled, then stop: the form a `Supervisor` task takes."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
