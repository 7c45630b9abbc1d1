"""One MQTT connection carrying the retained statuses of many simulated nodes (``--mqtt-mode shared``).

Owns `ReportSchedule` (pure: per node the newest payload and when it may be sent), then
`SharedStatusConnection` (one aiomqtt client per agent worker process, reconnecting with backoff)
and `SharedStatusPublisher`, the per-node `StatusPublisher` view of it. Topics and payloads are the
real ones (`iokit.status.encode_status` on ``<cluster>/nodes/<node>/status``, retained, qos 1), and
each node's reports are spaced as the agent's own client spaces them (`iokit.status.LatestStatus`:
at most one per ``min_interval``, the first after a quiet spell at once, what comes within the
interval collapsing into the newest), so the broker and the controller see the same report rate.

Why it exists: a real agent owns its connection on a machine of its own. A thousand simulated
nodes with a connection each cost one process about six system calls and three loop wake-ups
per report (aiomqtt registers the socket for writing through ``call_soon_threadsafe`` for every
publish, then unregisters it), which left the agent workers saturated in the pod-churn bench.
Sharing a connection is the MQTT counterpart of the shared Kafka consumer: the reports of one
loop turn go out in one write and their acknowledgements come back together.

The trade-off, documented for the bench: MQTT gives one will per connection, so there are no
per-node wills — a node stopping abruptly publishes its offline status explicitly instead, and a
worker that dies leaves its nodes' last statuses retained. Use ``--mqtt-mode per-node`` (one
`iokit.mqtt_status.MqttStatusPublisher` per node, the real agent's client) to exercise wills.
It does not own the payloads' meaning (`iokit.status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

import aiomqtt

from iokit.backoff import Backoff
from iokit.mqtt_status import DEFAULT_REPORT_INTERVAL, until_disconnected
from iokit.status import StatusTopics, encode_status

OFFLINE: Mapping[str, Any] = {"online": False}

log = logging.getLogger(__name__)


class ReportSchedule:
    """Per node, the newest status and whether it still has to go; sends spaced per node.

    The unsent nodes sit in a heap by the time they may go, so an offer, the next wait and each
    report taken cost O(log n) however many nodes are waiting out their interval.
    """

    def __init__(self, min_interval: float = DEFAULT_REPORT_INTERVAL) -> None:
        if not 0 <= min_interval < math.inf:
            raise ValueError(f"min_interval: must be a finite number of seconds >= 0, got {min_interval}")
        self.min_interval = min_interval
        self._latest: dict[str, Mapping[str, Any]] = {}
        self._sent_at: dict[str, float] = {}
        self._unsent: set[str] = set()
        self._due: list[tuple[float, str]] = []  # (when it may go, node): one entry per unsent node

    def _may_go_at(self, node: str) -> float:
        return self._sent_at.get(node, -math.inf) + self.min_interval

    def offer(self, node: str, status: Mapping[str, Any]) -> None:
        self._latest[node] = status
        if node not in self._unsent:
            self._unsent.add(node)
            heapq.heappush(self._due, (self._may_go_at(node), node))

    def resend_all(self) -> None:
        """After a reconnect: every node's newest status goes again (the broker may have lost it)."""
        self._unsent = set(self._latest)
        self._due = [(self._may_go_at(node), node) for node in self._unsent]
        heapq.heapify(self._due)

    def take_due(self, now: float, *, all_unsent: bool = False) -> list[tuple[str, bytes]]:
        """The unsent statuses whose node's interval has passed (or all of them), marked sent,
        encoded (only now: most offers are replaced by a newer one before they go)."""
        taken: list[tuple[str, bytes]] = []
        while self._due and (all_unsent or self._due[0][0] <= now):
            _, node = heapq.heappop(self._due)
            self._unsent.discard(node)
            self._sent_at[node] = now
            taken.append((node, encode_status(node, self._latest[node])))
        return taken

    def wait_for(self, now: float) -> float | None:
        """Seconds until the next unsent status may go (0: now; None: nothing is unsent)."""
        return max(0.0, self._due[0][0] - now) if self._due else None


class SharedStatusConnection:
    def __init__(
        self,
        endpoint: str,
        name: str,
        topics: StatusTopics | None = None,
        *,
        min_interval: float = DEFAULT_REPORT_INTERVAL,
        max_inflight: int = 64,
    ) -> None:
        host, _, port = endpoint.rpartition(":")
        self._topics = topics or StatusTopics()
        self._host, self._port = host, int(port)
        self._name = name
        self._schedule = ReportSchedule(min_interval)
        self._max_inflight = max_inflight
        self._wakeup = asyncio.Event()
        self._backoff = Backoff(initial=0.2, maximum=5.0)
        self._client: aiomqtt.Client | None = None
        self.published = 0
        self.connects = 0

    def put(self, node: str, status: Mapping[str, Any]) -> None:
        self._schedule.offer(node, status)
        self._wakeup.set()

    def publisher(self, node: str) -> SharedStatusPublisher:
        return SharedStatusPublisher(self, node)

    async def run(self) -> None:
        """Connect and publish the statuses as they fall due (forever, reconnecting)."""
        while True:
            client = aiomqtt.Client(
                self._host,
                self._port,
                identifier=f"kaliko-bench-{self._name}-{uuid.uuid4().hex[:8]}",
                keepalive=30,
                max_inflight_messages=self._max_inflight,
            )
            client.pending_calls_threshold = self._max_inflight  # its warning, not a limit
            try:
                async with client:
                    self._client = client
                    self.connects += 1
                    self._backoff.reset()
                    self._schedule.resend_all()
                    async with asyncio.TaskGroup() as group:  # a lost connection ends both
                        group.create_task(until_disconnected(client))
                        group.create_task(self._send_forever(client))
            except* aiomqtt.MqttError as errors:
                log.warning("shared status connection lost: %s", errors.exceptions[0])
            finally:
                self._client = None
            await asyncio.sleep(self._backoff.next_delay())

    async def _send_forever(self, client: aiomqtt.Client) -> None:
        while True:
            wait = self._schedule.wait_for(time.monotonic())
            if wait is None or wait > 0:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):  # an offer of a node already due wakes it
                        await self._wakeup.wait()
                continue
            await self._send(client, self._schedule.take_due(time.monotonic()))

    async def _send(self, client: aiomqtt.Client, batch: list[tuple[str, bytes]]) -> None:
        """Publish a batch, ``max_inflight`` at a time (written together, acknowledged together;
        aiomqtt's bookkeeping costs each publish a walk over the pending ones). No per-publish
        timeout: the keepalive finds a silent broker, and the reconnect re-sends every node's newest."""
        for start in range(0, len(batch), self._max_inflight):
            chunk = batch[start : start + self._max_inflight]
            await asyncio.gather(
                *(
                    client.publish(self._topics.topic(node), payload, qos=1, retain=True, timeout=math.inf)
                    for node, payload in chunk
                )
            )
            self.published += len(chunk)

    async def stop(self) -> None:
        """Send what is still unsent, spacing aside (the nodes are stopping)."""
        client = self._client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._send(client, self._schedule.take_due(time.monotonic(), all_unsent=True))


class SharedStatusPublisher:
    """A node's `StatusPublisher` on a `SharedStatusConnection`."""

    def __init__(self, connection: SharedStatusConnection, node: str) -> None:
        self.node = node
        self._connection = connection

    async def start(self) -> None:
        return None

    def offer(self, status: Mapping[str, Any]) -> None:
        self._connection.put(self.node, status)

    async def publish(self, status: Mapping[str, Any]) -> None:
        self.offer(status)

    async def stop(self, graceful: bool = True) -> None:
        """No per-node will on a shared connection: say offline explicitly either way."""
        del graceful
        self._connection.put(self.node, OFFLINE)
