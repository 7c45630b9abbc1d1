"""A status publisher whose broker stops answering recovers through the keepalive (Mosquitto, fv).

The publisher waits for each report's PUBACK without a timeout of its own, so this checks the
path that replaces one: a TCP proxy between it and Mosquitto swallows everything on the current
connection (the socket stays open, as a black-holed route would), the keepalive notices, the
publisher reconnects through the proxy and the report it was waiting on still arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import aiomqtt
import pytest
from test_adapters_status import next_for, report

from iokit.backoff import Backoff
from iokit.mqtt_status import MqttStatusPublisher, MqttStatusWatcher

pytestmark = pytest.mark.fv


class BlackHoleProxy:
    """Forwards TCP to ``upstream``; `black_hole` makes the open connections swallow all bytes."""

    def __init__(self, upstream: str) -> None:
        self._host, _, port = upstream.rpartition(":")
        self._port = int(port)
        self._open: list[asyncio.Event] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def black_hole(self) -> None:
        for swallowing in self._open:
            swallowing.set()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        swallowing = asyncio.Event()
        self._open.append(swallowing)
        upstream_r, upstream_w = await asyncio.open_connection(self._host, self._port)
        pumps = [
            asyncio.create_task(self._pump(client_r, upstream_w, swallowing)),
            asyncio.create_task(self._pump(upstream_r, client_w, swallowing)),
        ]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        for writer in (client_w, upstream_w):
            writer.close()

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, swallowing: asyncio.Event
    ) -> None:
        while data := await reader.read(65536):
            if not swallowing.is_set():
                writer.write(data)
                await writer.drain()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def proxy(mqtt_endpoint: str) -> AsyncIterator[tuple[BlackHoleProxy, str]]:
    made = BlackHoleProxy(mqtt_endpoint)
    address = await made.start()
    yield made, address
    await made.close()


async def test_a_report_waiting_on_a_silent_broker_arrives_after_the_keepalive_reconnect(
    proxy: tuple[BlackHoleProxy, str], mqtt_endpoint: str
) -> None:
    black_hole, address = proxy
    node = f"iokit-test-{uuid.uuid4().hex[:10]}"
    watcher = MqttStatusWatcher(mqtt_endpoint, keepalive=5, timeout=5.0)
    await watcher.start()
    publisher = MqttStatusPublisher(
        node, address, keepalive=1, timeout=5.0, backoff=Backoff(0.05, 0.2, seed=1)
    )
    await publisher.start()
    try:
        async with asyncio.timeout(10):
            await watcher.wait_subscribed()
        await publisher.publish(report(node, 1))
        await next_for(watcher, node, seq=1)
        black_hole.black_hole()
        started = time.monotonic()
        async with asyncio.timeout(15):
            await publisher.publish(report(node, 2))  # returns only once the broker acked it
        assert await next_for(watcher, node, online=True) == report(node, 2)
        assert publisher.connects == 2 and black_hole.connections == 2
        assert time.monotonic() - started < 10  # the keepalive (1 s) found it, not a long timeout
    finally:
        with contextlib.suppress(Exception):
            await publisher.stop()
        await watcher.stop()
        host, _, port = mqtt_endpoint.rpartition(":")
        async with aiomqtt.Client(host, int(port)) as cleaner:  # the shared broker keeps no leftovers
            await cleaner.publish(publisher.topic, b"", qos=1, retain=True)
