"""Supervisor failure propagation and graceful shutdown; the health/metrics HTTP endpoint."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter

from iokit.health import HealthServer
from iokit.supervise import Supervisor, TaskExited


class Recorder:
    def __init__(self) -> None:
        self.started: set[str] = set()
        self.cleaned: set[str] = set()
        self.all_started = asyncio.Event()

    def forever(self, name: str, expected: int) -> Callable[[], Coroutine[Any, Any, None]]:
        async def task() -> None:
            self.started.add(name)
            if len(self.started) == expected:
                self.all_started.set()
            try:
                await asyncio.Event().wait()
            finally:
                self.cleaned.add(name)

        return task


async def test_first_failure_cancels_the_others_and_is_reraised() -> None:
    record = Recorder()
    supervisor = Supervisor("t", signals=())
    supervisor.add("a", record.forever("a", 2))
    supervisor.add("b", record.forever("b", 2))

    async def failing() -> None:
        await record.all_started.wait()
        raise RuntimeError("boom")

    supervisor.add("failing", failing)
    with pytest.raises(RuntimeError, match="boom"):
        await supervisor.run()
    assert record.cleaned == {"a", "b"}


async def test_a_task_returning_early_is_an_error() -> None:
    supervisor = Supervisor("t", signals=())
    record = Recorder()
    supervisor.add("long", record.forever("long", 1))

    async def quits() -> None:
        await record.all_started.wait()

    supervisor.add("quits", quits)
    with pytest.raises(TaskExited, match="quits"):
        await supervisor.run()
    assert record.cleaned == {"long"}


async def test_stop_is_graceful() -> None:
    record = Recorder()
    supervisor = Supervisor("t", signals=())
    supervisor.add("a", record.forever("a", 2))
    supervisor.add("b", record.forever("b", 2))

    async def stopper() -> None:
        await record.all_started.wait()
        supervisor.stop("test")

    runner = asyncio.create_task(supervisor.run())
    await stopper()
    await asyncio.wait_for(runner, 5)
    assert record.cleaned == {"a", "b"} and supervisor.stop_reason == "test"


async def test_sigterm_shuts_down_gracefully_and_handlers_are_removed() -> None:
    record = Recorder()
    supervisor = Supervisor("t", signals=(signal.SIGTERM,))
    supervisor.add("a", record.forever("a", 1))
    runner = asyncio.create_task(supervisor.run())
    await record.all_started.wait()
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(runner, 5)
    assert record.cleaned == {"a"} and supervisor.stop_reason == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.default_int_handler, None)


def test_duplicate_task_names_are_rejected() -> None:
    supervisor = Supervisor("t", signals=())
    supervisor.add("a", asyncio.Event().wait)
    with pytest.raises(ValueError, match="'a'"):
        supervisor.add("a", asyncio.Event().wait)


async def test_health_endpoints_follow_the_callables_and_serve_metrics() -> None:
    state = {"live": True, "ready": False}
    registry = CollectorRegistry()
    Counter("kaliko_test_events", "events seen", registry=registry).inc(3)

    def broken() -> bool:
        raise RuntimeError("cannot tell")

    server = HealthServer(liveness=lambda: state["live"], readiness=lambda: state["ready"], registry=registry)
    other = HealthServer(liveness=broken, readiness=lambda: True)
    await server.start()
    await other.start()
    try:
        assert server.port > 0 and server.url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as http:

            async def get(base: str, path: str) -> tuple[int, str]:
                async with http.get(base + path) as response:
                    return response.status, await response.text()

            assert await get(server.url, "/liveness") == (200, "ok\n")
            assert (await get(server.url, "/readiness"))[0] == 503
            state["ready"] = True
            assert (await get(server.url, "/readiness"))[0] == 200
            status, body = await get(server.url, "/metrics")
            assert status == 200 and "kaliko_test_events_total 3.0" in body
            status, body = await get(other.url, "/liveness")
            assert status == 503 and "cannot tell" in body
            assert (await get(other.url, "/metrics"))[0] == 404
    finally:
        await server.stop()
        await other.stop()
