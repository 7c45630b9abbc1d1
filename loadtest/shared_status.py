"""One MQTT connection carrying the retained statuses of many simulated nodes (``--mqtt-mode shared``).

Owns `SharedStatusConnection` (one aiomqtt client per agent worker process, reconnecting with
backoff; per node only the newest payload is kept, so a burst of reports collapses) and
`SharedStatusPublisher`, the per-node `StatusPublisher` view of it. Topics and payloads are the
real ones (`iokit.status.encode_status` on ``kaliko/nodes/<node>/status``, retained, qos 1).

The trade-off, documented for the bench: MQTT gives one will per connection, so there are no
per-node wills — a node stopping abruptly publishes its offline status explicitly instead, and a
worker that dies leaves its nodes' last statuses retained. Use ``--mqtt-mode per-node`` (one
`iokit.mqtt_status.MqttStatusPublisher` per node, the real agent's client) to exercise wills.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import aiomqtt

from iokit.backoff import Backoff
from iokit.status import StatusTopics, encode_status, offline_payload

log = logging.getLogger(__name__)


class SharedStatusConnection:
    def __init__(self, endpoint: str, name: str, topics: StatusTopics | None = None) -> None:
        host, _, port = endpoint.rpartition(":")
        self._topics = topics or StatusTopics()
        self._host, self._port = host, int(port)
        self._name = name
        self._pending: dict[str, bytes] = {}
        self._wakeup = asyncio.Event()
        self._backoff = Backoff(initial=0.2, maximum=5.0)
        self._client: aiomqtt.Client | None = None
        self.published = 0

    def put(self, node: str, payload: bytes) -> None:
        self._pending[node] = payload
        self._wakeup.set()

    def publisher(self, node: str) -> SharedStatusPublisher:
        return SharedStatusPublisher(self, node)

    async def run(self) -> None:
        """Connect and publish pending statuses (forever, reconnecting)."""
        while True:
            client = aiomqtt.Client(
                self._host,
                self._port,
                identifier=f"kaliko-bench-{self._name}-{uuid.uuid4().hex[:8]}",
                keepalive=30,
            )
            try:
                async with client:
                    self._client = client
                    self._backoff.reset()
                    while True:
                        await self._wakeup.wait()
                        self._wakeup.clear()
                        batch, self._pending = self._pending, {}
                        for node, payload in batch.items():
                            await client.publish(self._topics.topic(node), payload, qos=1, retain=True)
                            self.published += 1
            except aiomqtt.MqttError as error:
                log.warning("shared status connection lost: %s", error)
            finally:
                self._client = None
            await asyncio.sleep(self._backoff.next_delay())

    async def stop(self) -> None:
        client = self._client
        if client is not None:
            for node, payload in list(self._pending.items()):
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.publish(self._topics.topic(node), payload, qos=1, retain=True)
        self._pending.clear()


class SharedStatusPublisher:
    """A node's `StatusPublisher` on a `SharedStatusConnection`."""

    def __init__(self, connection: SharedStatusConnection, node: str) -> None:
        self.node = node
        self._connection = connection

    async def start(self) -> None:
        return None

    def offer(self, status: Mapping[str, Any]) -> None:
        self._connection.put(self.node, encode_status(self.node, status))

    async def publish(self, status: Mapping[str, Any]) -> None:
        self.offer(status)

    async def stop(self, graceful: bool = True) -> None:
        """No per-node will on a shared connection: say offline explicitly either way."""
        del graceful
        self._connection.put(self.node, offline_payload(self.node))
