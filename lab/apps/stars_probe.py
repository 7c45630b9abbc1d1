"""kaliko/stars-probe: Calico's star-probe, polling a list of URLs and serving the results at /status.

Owns one pod's view of the Stars demo: every `--interval` seconds it GETs each of `--urls` (a fresh
TCP connection each time, resolved through the pod's hosts file) and serves

    GET /status -> {"name": "stars/frontend",
                    "status": {"targets": [{"url", "reachable", "checked_at", "error"}]}}

on `--http-port` (default 9000, as in Calico). This is the shape Calico's star-collect reads
(`status.targets[].url/reachable`). It does not own the graph (`lab.apps.management_ui`) nor any
policy; "reachable" only means the last GET answered HTTP 200 within `--timeout`.

Invariants: `StarsProbe` is owned by the task that runs `run()`; each URL has one poll loop; a
target is unreachable until a poll proves otherwise; every poll is a new connection and every
response closes its connection (`lab.apps.httpkit`). A change shows in /status within
`interval + timeout` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
from aiohttp import web

from lab.apps.httpkit import check_http_url, close_after_response, fetch, fresh_connection_session, start_site

DEFAULT_HTTP_PORT = 9000
DEFAULT_INTERVAL = 0.5
DEFAULT_TIMEOUT = 0.4

Status = dict[str, Any]


@dataclass(frozen=True)
class TargetStatus:
    """The outcome of the last poll of one URL (`checked_at` is wall-clock seconds, None: not yet)."""

    url: str
    reachable: bool = False
    checked_at: float | None = None
    error: str | None = None


def parse_urls(text: str) -> list[str]:
    """Split `--urls` on commas; each must be an absolute http URL (the error names the item)."""
    urls = [part.strip() for part in text.split(",") if part.strip()]
    return [check_http_url(url, f"--urls[{index}]") for index, url in enumerate(urls)]


async def fetch_ok(session: aiohttp.ClientSession, url: str) -> tuple[bool, str | None]:
    """GET `url`: (True, None) on HTTP 200, else (False, a short reason)."""
    status, _, error = await fetch(session, url)
    if status == 200:
        return True, None
    return False, error or f"HTTP {status}"


class StarsProbe:
    """Polls each URL on its own loop and keeps the latest `TargetStatus` per URL."""

    def __init__(
        self,
        name: str,
        urls: Sequence[str],
        interval: float = DEFAULT_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.interval = interval
        self.timeout = timeout
        self._clock = clock
        self._targets = {url: TargetStatus(url) for url in urls}
        self._tick = asyncio.Event()

    def status(self) -> Status:
        """The /status document."""
        return {"name": self.name, "status": {"targets": [asdict(t) for t in self._targets.values()]}}

    def _record(self, url: str, reachable: bool, error: str | None) -> None:
        self._targets[url] = TargetStatus(url, reachable, self._clock(), error)
        self._tick.set()
        self._tick = asyncio.Event()

    async def wait_until(self, predicate: Callable[[Status], bool], timeout: float) -> Status:
        """Wait (at most `timeout` s) until `predicate(self.status())` holds after a poll; return it."""
        async with asyncio.timeout(timeout):
            while not predicate(status := self.status()):
                await self._tick.wait()
        return status

    async def run(self) -> None:
        """Poll forever (until cancelled)."""
        async with fresh_connection_session(self.timeout) as session, asyncio.TaskGroup() as group:
            for url in self._targets:
                group.create_task(self._poll_forever(session, url))

    async def _poll_forever(self, session: aiohttp.ClientSession, url: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            self._record(url, *await fetch_ok(session, url))
            await asyncio.sleep(max(0.0, started + self.interval - loop.time()))


def status_app(status: Callable[[], Status]) -> web.Application:
    """An aiohttp app serving `GET /status` (JSON) and `GET /` (a one-line hint)."""

    async def get_status(_: web.Request) -> web.Response:
        return web.json_response(status())

    async def get_root(_: web.Request) -> web.Response:
        return web.Response(text="kaliko/stars-probe: GET /status\n")

    app = web.Application(middlewares=[close_after_response])
    app.router.add_get("/status", get_status)
    app.router.add_get("/", get_root)
    return app


async def serve(probe: StarsProbe, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve /status and poll until `stop` is set."""
    runner, bound = await start_site(status_app(probe.status), host, port)
    print(f"kaliko/stars-probe {probe.name} serving on {host}:{bound}", flush=True)
    poller = asyncio.create_task(probe.run())
    try:
        await stop.wait()
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        await runner.cleanup()


async def _main(probe: StarsProbe, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(probe, host, port, stop)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kaliko/stars-probe", description=__doc__.splitlines()[0])
    parser.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT, help="port serving /status")
    parser.add_argument("--urls", default="", help="comma-separated URLs to poll")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, help="seconds between polls")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per poll")
    parser.add_argument("--name", default=None, help="name in /status (default: $KALIKO_POD_NAME)")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default: all)")
    args = parser.parse_args(argv)
    try:
        urls = parse_urls(args.urls)
    except ValueError as error:
        parser.error(str(error))
    if args.interval <= 0 or args.timeout <= 0:
        parser.error("--interval and --timeout must be > 0")
    name = args.name or os.environ.get("KALIKO_POD_NAME") or socket.gethostname()
    asyncio.run(_main(StarsProbe(name, urls, args.interval, args.timeout), args.host, args.http_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
