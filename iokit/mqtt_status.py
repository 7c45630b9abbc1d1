"""The MQTT adapter of node status, on aiomqtt: a retained publisher with a last will, and a watcher.

Owns one aiomqtt connection per object and its reconnect loop (aiomqtt does not reconnect): the
publisher connects with a will of ``{"node": <node>, "online": false}`` (retained, qos 1), sends its
latest status retained at qos 1 and re-sends it after every reconnect; the watcher subscribes to
its cluster's ``<cluster>/nodes/+/status`` (`iokit.status.StatusTopics`), parses each message with
`iokit.status.parse_status`, counts and skips malformed ones, and hands ``(node, status)`` to its
consumer through a bounded queue. It does not interpret statuses and does not keep history: a
status is a state, the newest one wins.

Invariants: after a graceful `stop` the node's retained status says offline (published explicitly,
then a clean DISCONNECT, so the will is not needed); after an abrupt loss of the connection the
broker publishes the will; `publish` returns only once the broker acknowledged that status or a
newer one; a connection that stops answering is dropped by the keepalive (about 1.5 keepalive
periods), not by a per-publish timeout, and the status re-sent on the next; reconnect delays come
from a jittered `Backoff` that resets on each successful connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiomqtt

from iokit.backoff import Backoff
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
DEFAULT_REPORT_INTERVAL = 0.2
"""Seconds between two status reports of a node, at least (0: as fast as the broker acknowledges)."""

Sleep = Callable[[float], Awaitable[object]]


def _split(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"mqtt endpoint: expected host:port, got {endpoint!r}")
    return host, int(port)


async def until_disconnected(client: aiomqtt.Client) -> None:
    """Raises `aiomqtt.MqttError` when the connection drops (the messages iterator does)."""
    async for _ in client.messages:
        pass


class MqttStatusPublisher:
    """Keeps ``<cluster>/nodes/<node>/status`` equal to the node's latest status, across reconnects."""

    def __init__(
        self,
        node: str,
        endpoint: str = "127.0.0.1:1883",
        *,
        topics: StatusTopics = StatusTopics(),
        keepalive: int = 10,
        timeout: float = 10.0,
        backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
        min_interval: float = DEFAULT_REPORT_INTERVAL,
    ) -> None:
        self.node = node
        self.topic = topics.topic(node)
        self._host, self._port = _split(endpoint)
        self._keepalive = keepalive
        self._timeout = timeout
        self._backoff = backoff if backoff is not None else Backoff(initial=0.2, maximum=5.0)
        self._sleep = sleep
        self._latest: LatestStatus[Mapping[str, Any]] = LatestStatus(min_interval)
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.connects = 0

    async def start(self) -> None:
        """Begin connecting (in the background, retrying forever); returns at once."""
        self._task = asyncio.create_task(self._run(), name=f"mqtt-status-{self.node}")

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def offer(self, status: Mapping[str, Any]) -> None:
        self._latest.offer(status)

    async def publish(self, status: Mapping[str, Any]) -> None:
        generation = self._latest.offer(status)
        await self._latest.wait_acked(generation)

    async def _run(self) -> None:
        will = aiomqtt.Will(self.topic, offline_payload(self.node), qos=1, retain=True)
        while not self._stopping:
            client = aiomqtt.Client(
                self._host,
                self._port,
                identifier=f"kaliko-status-{self.node}-{uuid.uuid4().hex[:8]}",
                will=will,
                keepalive=self._keepalive,
                timeout=self._timeout,
                clean_session=True,
            )
            try:
                async with client:
                    self._client = client
                    self.connects += 1
                    self._backoff.reset()
                    self._connected.set()
                    self._latest.resend()
                    async with asyncio.TaskGroup() as group:
                        group.create_task(until_disconnected(client))
                        group.create_task(self._send(client))
            except* aiomqtt.MqttError as errors:
                log.warning("status %s: MQTT connection lost: %s", self.node, errors.exceptions[0])
            finally:
                self._client = None
                self._connected.clear()
            if not self._stopping:
                await self._sleep(self._backoff.next_delay())

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            await self._latest.pending.wait()
            if self._stopping:
                return
            spacing = self._latest.spacing()
            if spacing:
                await asyncio.sleep(spacing)  # newer statuses collapse into the latest meanwhile
                if self._stopping:
                    return
            generation, status = self._latest.take()
            payload = encode_status(self.node, status)
            # No per-publish timeout: aiomqtt wraps each wait in `asyncio.wait_for`, a task and a
            # timer per report (a tenth of a simulated fleet's CPU). A broker that stops answering
            # is found by the keepalive instead: paho drops the connection, `until_disconnected`
            # ends this task group, and the status is re-sent after the reconnect.
            await client.publish(self.topic, payload, qos=1, retain=True, timeout=math.inf)
            self._latest.ack(generation)

    def drop_connection(self) -> None:
        """Cut the current connection as a network fault would: the will fires, then we reconnect."""
        if self._client is not None:
            _cut(self._client)

    async def stop(self, graceful: bool = True) -> None:
        """graceful: retained offline + clean DISCONNECT; otherwise the socket is cut (the will fires)."""
        self._stopping = True
        self._latest.pending.set()
        client = self._client
        if client is not None:
            if graceful:
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.publish(self.topic, offline_payload(self.node), qos=1, retain=True)
            else:
                _cut(client)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
        self._latest.close()


def _cut(client: aiomqtt.Client) -> None:
    """Drop the TCP connection without an MQTT DISCONNECT, as a crashed process would."""
    # aiomqtt has no abort; the paho client underneath owns the socket.
    sock = client._client.socket()
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class MqttStatusWatcher:
    """Yields ``(node, status)`` for every valid status message under ``<cluster>/nodes/+/status``."""

    def __init__(
        self,
        endpoint: str = "127.0.0.1:1883",
        *,
        topics: StatusTopics = StatusTopics(),
        queue_size: int = 10_000,
        keepalive: int = 10,
        timeout: float = 10.0,
        backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._host, self._port = _split(endpoint)
        self._topics = topics
        self._keepalive = keepalive
        self._timeout = timeout
        self._backoff = backoff if backoff is not None else Backoff(initial=0.2, maximum=5.0)
        self._sleep = sleep
        self._queue: asyncio.Queue[NodeStatus] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self.malformed = 0
        self.received = 0
        self.connects = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mqtt-status-watcher")

    async def wait_subscribed(self) -> None:
        """Until the current connection's subscription is acknowledged."""
        await self._subscribed.wait()

    async def _run(self) -> None:
        while True:
            client = aiomqtt.Client(
                self._host,
                self._port,
                identifier=f"kaliko-status-watcher-{uuid.uuid4().hex[:8]}",
                keepalive=self._keepalive,
                timeout=self._timeout,
                clean_session=True,
            )
            try:
                async with client:
                    await client.subscribe(self._topics.filter, qos=1)
                    self.connects += 1
                    self._backoff.reset()
                    self._subscribed.set()
                    async for message in client.messages:
                        await self._deliver(str(message.topic), message.payload)
            except aiomqtt.MqttError as error:
                log.warning("status watcher: MQTT connection lost: %s", error)
            finally:
                self._subscribed.clear()
            await self._sleep(self._backoff.next_delay())

    async def _deliver(self, topic: str, payload: Any) -> None:
        if not payload:
            return  # a cleared retained message
        raw = payload if isinstance(payload, bytes) else str(payload).encode()
        try:
            status = parse_status(topic, raw, self._topics)
        except MalformedStatus as error:
            self.malformed += 1
            log.warning("status watcher: skipping malformed status: %s", error)
            return
        self.received += 1
        await self._queue.put(status)

    def __aiter__(self) -> AsyncIterator[NodeStatus]:
        return self._statuses()

    async def _statuses(self) -> AsyncGenerator[NodeStatus, None]:
        task = self._task
        if task is None:
            raise StatusError("watcher not started")
        while True:
            if self._queue.empty() and task.done():
                failure = None if task.cancelled() else task.exception()
                raise StatusError("status watcher stopped") from failure
            getter = asyncio.ensure_future(self._queue.get())
            waiters: list[asyncio.Future[Any]] = [getter, task]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                yield getter.result()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
