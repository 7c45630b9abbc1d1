"""kaliko/stars-probe on loopback: /status follows a target going down and up, one connection per poll."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from lab.apps.httpkit import start_site
from lab.apps.stars_probe import StarsProbe, Status, parse_urls, status_app

LOOPBACK = "127.0.0.1"


@dataclass
class FakeTarget:
    """An HTTP server whose /status answers 200 or 503, and which counts client connections."""

    healthy: bool = True
    peers: set[tuple[str, int]] = field(default_factory=set)
    port: int = 0
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            assert request.transport is not None
            self.peers.add(request.transport.get_extra_info("peername"))
            return web.json_response({"ok": self.healthy}, status=200 if self.healthy else 503)

        app = web.Application()
        app.router.add_get("/status", handle)
        self.runner, self.port = await start_site(app, LOOPBACK, self.port)

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()
        self.runner = None


@pytest.fixture
async def target() -> AsyncIterator[FakeTarget]:
    fake = FakeTarget()
    await fake.start()
    yield fake
    if fake.runner is not None:
        await fake.stop()


def _reach(url: str, reachable: bool) -> Callable[[Status], bool]:
    def check(status: Status) -> bool:
        entry = next(t for t in status["status"]["targets"] if t["url"] == url)
        return bool(entry["reachable"] is reachable and entry["checked_at"] is not None)

    return check


@pytest.fixture
async def running(target: FakeTarget) -> AsyncIterator[tuple[StarsProbe, str]]:
    url = f"http://{LOOPBACK}:{target.port}/status"
    probe = StarsProbe("stars/frontend", [url], interval=0.1, timeout=0.3)
    task = asyncio.create_task(probe.run())
    yield probe, url
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_parse_urls_requires_absolute_http_urls() -> None:
    assert parse_urls("http://frontend.stars:80/status, http://backend.stars:6379/status") == [
        "http://frontend.stars:80/status",
        "http://backend.stars:6379/status",
    ]
    with pytest.raises(ValueError, match=r"--urls\[1\]: 'backend.stars:6379' is not an absolute http:// URL"):
        parse_urls("http://frontend.stars:80/status,backend.stars:6379")


async def test_targets_start_unreachable_and_unchecked() -> None:
    probe = StarsProbe("client/client", ["http://frontend.stars:80/status"])
    assert probe.status() == {
        "name": "client/client",
        "status": {
            "targets": [
                {
                    "url": "http://frontend.stars:80/status",
                    "reachable": False,
                    "checked_at": None,
                    "error": None,
                }
            ]
        },
    }


async def test_status_follows_target_down_and_up(target: FakeTarget, running: tuple[StarsProbe, str]) -> None:
    probe, url = running
    await probe.wait_until(_reach(url, True), timeout=3)

    target.healthy = False  # answers, but not 200
    status = await probe.wait_until(_reach(url, False), timeout=3)
    assert status["status"]["targets"][0]["error"] == "HTTP 503"

    target.healthy = True
    await probe.wait_until(_reach(url, True), timeout=3)

    await target.stop()  # nothing listens: connection refused
    status = await probe.wait_until(_reach(url, False), timeout=3)
    assert "Connect" in status["status"]["targets"][0]["error"]

    await target.start()  # same port again
    await probe.wait_until(_reach(url, True), timeout=3)


async def test_every_poll_opens_a_new_connection(target: FakeTarget, running: tuple[StarsProbe, str]) -> None:
    probe, _ = running
    polls = 0

    def counted(status: Status) -> bool:
        nonlocal polls
        polls += 1
        return polls > 4

    await probe.wait_until(counted, timeout=5)
    assert len(target.peers) >= 4, "each poll must be a new TCP connection (keep-alive would hide policy)"


async def test_names_resolve_through_the_hosts_file(target: FakeTarget) -> None:
    url = f"http://localhost:{target.port}/status"  # /etc/hosts, as `ip netns exec` mounts it per pod
    probe = StarsProbe("stars/backend", [url], interval=0.1, timeout=0.5)
    task = asyncio.create_task(probe.run())
    try:
        await probe.wait_until(_reach(url, True), timeout=3)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_status_endpoint_serves_json_and_closes_connections(target: FakeTarget) -> None:
    url = f"http://{LOOPBACK}:{target.port}/status"
    probe = StarsProbe("stars/backend", [url])
    runner, port = await start_site(status_app(probe.status), LOOPBACK, 0)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{LOOPBACK}:{port}/status") as resp,
        ):
            assert resp.status == 200
            assert resp.headers.get("Connection", "").lower() == "close"
            assert await resp.json() == probe.status()
    finally:
        await runner.cleanup()


async def test_cli_serves_status_and_stops_on_sigterm(target: FakeTarget) -> None:
    url = f"http://{LOOPBACK}:{target.port}/status"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lab.apps.stars_probe", "--http-port=0", f"--urls={url}", "--interval=0.1",
        "--host", LOOPBACK, "--name", "stars/frontend",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
    match = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
    assert match, line
    status_url = f"http://{LOOPBACK}:{match.group(1)}/status"
    async with aiohttp.ClientSession() as session:
        for _ in range(50):
            async with session.get(status_url) as resp:
                body = json.loads(await resp.text())
            if body["status"]["targets"][0]["reachable"]:
                break
            await asyncio.sleep(0.1)  # polling a separate process: there is no event to await
    assert body["name"] == "stars/frontend"
    assert body["status"]["targets"][0] == {**body["status"]["targets"][0], "url": url, "reachable": True}
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 10) == 0
