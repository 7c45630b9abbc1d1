"""In-memory twin of MQTT node status: a tiny retained-message broker and the same publisher/watcher.

Owns `MemoryMqttBroker` (retained messages by topic, subscriptions with ``+``/``#`` filters) and
`MemoryStatusPublisher` / `MemoryStatusWatcher`, which pass the same contract tests as
`iokit.mqtt_status`. Semantics kept from MQTT: a retained message is replayed to every later
subscriber, an empty retained payload clears it, a publisher's will is published (retained) when
it stops without a graceful disconnect. It does not model QoS, sessions or network delay: a
publish is delivered synchronously and acknowledged at once.

Invariants: each subscriber sees the retained messages that match its filter first, then live
messages in publish order; a watcher whose bounded queue is full drops the message and counts it
(``dropped``), as mosquitto does for a slow client, instead of blocking the publisher.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any

from iokit.status import (
    LatestStatus,
    MalformedStatus,
    NodeStatus,
    StatusError,
    StatusTopics,
    encode_status,
    offline_payload,
    parse_status,
)

log = logging.getLogger(__name__)

Deliver = Callable[[str, bytes], None]


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching: ``+`` is one level, a trailing ``#`` is any number of levels."""
    wanted, actual = topic_filter.split("/"), topic.split("/")
    for index, level in enumerate(wanted):
        if level == "#":
            return True
        if index >= len(actual) or (level != "+" and level != actual[index]):
            return False
    return len(wanted) == len(actual)


class MemoryMqttBroker:
    """Retained messages and subscriptions, delivered synchronously."""

    def __init__(self) -> None:
        self.retained: dict[str, bytes] = {}
        self._subscriptions: dict[int, tuple[str, Deliver]] = {}
        self._next_id = 0

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        if retain:
            if payload:
                self.retained[topic] = payload
            else:
                self.retained.pop(topic, None)
        for topic_filter, deliver in list(self._subscriptions.values()):
            if topic_matches(topic_filter, topic):
                deliver(topic, payload)

    def subscribe(self, topic_filter: str, deliver: Deliver) -> int:
        self._next_id += 1
        self._subscriptions[self._next_id] = (topic_filter, deliver)
        for topic, payload in sorted(self.retained.items()):
            if topic_matches(topic_filter, topic):
                deliver(topic, payload)
        return self._next_id

    def unsubscribe(self, subscription: int) -> None:
        self._subscriptions.pop(subscription, None)


class MemoryStatusPublisher:
    """`StatusPublisher` over a `MemoryMqttBroker`; its will fires on `stop(graceful=False)`."""

    def __init__(
        self,
        broker: MemoryMqttBroker,
        node: str,
        *,
        topics: StatusTopics = StatusTopics(),
        min_interval: float = 0.0,
    ) -> None:
        """``min_interval``: seconds between two reports at least, as `MqttStatusPublisher`'s."""
        self.node = node
        self.topic = topics.topic(node)
        self._broker = broker
        self._latest: LatestStatus[Mapping[str, Any]] = LatestStatus(min_interval)
        self._connected = False
        self._timer: asyncio.TimerHandle | None = None
        self.connects = 0

    async def start(self) -> None:
        self._connected = True
        self.connects += 1
        self._latest.resend()
        self._flush()

    def _flush(self) -> None:
        if not (self._connected and self._latest.pending.is_set()):
            return
        spacing = self._latest.spacing()
        if spacing:  # too soon after the last report: the newest one goes when the interval ends
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(spacing, self._spaced)
            return
        generation, status = self._latest.take()
        self._broker.publish(self.topic, encode_status(self.node, status), retain=True)
        self._latest.ack(generation)

    def _spaced(self) -> None:
        self._timer = None
        self._flush()

    def offer(self, status: Mapping[str, Any]) -> None:
        self._latest.offer(status)
        self._flush()

    async def publish(self, status: Mapping[str, Any]) -> None:
        generation = self._latest.offer(status)
        self._flush()
        await self._latest.wait_acked(generation)

    def drop_connection(self) -> None:
        """A network fault: the broker publishes the will, then the publisher reconnects and resends."""
        if self._connected:
            self._broker.publish(self.topic, offline_payload(self.node), retain=True)
            self.connects += 1
            self._latest.resend()
            self._flush()

    async def stop(self, graceful: bool = True) -> None:
        if self._connected:
            # Graceful: the node says so itself. Abrupt: the broker publishes the will for it.
            self._broker.publish(self.topic, offline_payload(self.node), retain=True)
        self._connected = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._latest.close()


class MemoryStatusWatcher:
    """`StatusWatcher` over a `MemoryMqttBroker`."""

    def __init__(
        self, broker: MemoryMqttBroker, *, topics: StatusTopics = StatusTopics(), queue_size: int = 10_000
    ) -> None:
        self._broker = broker
        self._topics = topics
        self._queue: asyncio.Queue[NodeStatus] = asyncio.Queue(maxsize=queue_size)
        self._subscription: int | None = None
        self._stopped: asyncio.Future[None] | None = None
        self.malformed = 0
        self.received = 0
        self.dropped = 0

    async def start(self) -> None:
        self._stopped = asyncio.get_running_loop().create_future()
        self._subscription = self._broker.subscribe(self._topics.filter, self._deliver)

    def _deliver(self, topic: str, payload: bytes) -> None:
        if not payload:
            return
        try:
            status = parse_status(topic, payload, self._topics)
        except MalformedStatus as error:
            self.malformed += 1
            log.warning("status watcher: skipping malformed status: %s", error)
            return
        try:
            self._queue.put_nowait(status)
        except asyncio.QueueFull:
            self.dropped += 1
            return
        self.received += 1

    def __aiter__(self) -> AsyncIterator[NodeStatus]:
        return self._statuses()

    async def _statuses(self) -> AsyncGenerator[NodeStatus, None]:
        stopped = self._stopped
        if stopped is None:
            raise StatusError("watcher not started")
        while True:
            if not self._queue.empty():
                yield self._queue.get_nowait()
                continue
            if stopped.done():
                raise StatusError("status watcher stopped")
            getter = asyncio.ensure_future(self._queue.get())
            waiters: list[asyncio.Future[Any]] = [getter, stopped]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                yield getter.result()

    async def stop(self) -> None:
        if self._subscription is not None:
            self._broker.unsubscribe(self._subscription)
            self._subscription = None
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)
