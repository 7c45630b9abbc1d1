"""The node-status contract over MQTT: topic layout, payload codec and the publisher/watcher protocols.

Owns what both status adapters (`iokit.mqtt_status` on aiomqtt, `iokit.memory_status` in memory)
agree on: one retained message per node on ``<cluster>/nodes/<node>/status`` (`StatusTopics`; the
default cluster's is ``kaliko/nodes/<node>/status``), a JSON object with at least ``node`` (equal
to the topic's node) and ``online`` (bool), plus whatever the agent reports (ready, epoch, seq,
revision, last_error, state_hash); the will / graceful-stop payload ``{"node": <node>, "online":
false}``; and parsing that rejects anything else with a reason.
It does not own what the fields mean (the controller's convergence tracker does).

Invariants: `encode_status` output always parses back with `parse_status` to the same dict; a
payload that `parse_status` rejects raises `MalformedStatus` naming the field and never yields a
partial status; an empty payload is a cleared retained message, not a status; a topic outside
the cluster's prefix is malformed, so one cluster never takes another's reports.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from iokit.cluster_name import DEFAULT_CLUSTER, status_prefix

NodeStatus = tuple[str, dict[str, Any]]
T = TypeVar("T")


class StatusError(Exception):
    """Base of the status adapters' errors."""


class MalformedStatus(StatusError):
    """A received status message that is not a valid node status; the watcher skips it."""


@dataclass(frozen=True, slots=True)
class StatusTopics:
    """One cluster's status topics: ``<cluster>/nodes/<node>/status`` and the filter over them."""

    cluster: str = DEFAULT_CLUSTER

    def __post_init__(self) -> None:
        status_prefix(self.cluster)  # raises InvalidClusterName

    @property
    def prefix(self) -> str:
        return status_prefix(self.cluster)

    @property
    def filter(self) -> str:
        """The MQTT subscription filter that matches every node of this cluster, and no other."""
        return f"{self.prefix}/+/status"

    def topic(self, node: str) -> str:
        if not node or "/" in node or "+" in node or "#" in node:
            raise ValueError(f"node: {node!r} is not usable in an MQTT topic (empty or has / + #)")
        return f"{self.prefix}/{node}/status"

    def node_of(self, topic: str) -> str:
        """The node a status topic names; `MalformedStatus` for a topic outside this cluster's."""
        parts = topic.split("/")
        if len(parts) != 4 or "/".join(parts[:2]) != self.prefix or parts[3] != "status" or not parts[2]:
            raise MalformedStatus(f"topic {topic!r}: not {self.prefix}/<node>/status")
        return parts[2]


def encode_status(node: str, status: Mapping[str, Any]) -> bytes:
    """The retained payload for ``status``; ``node`` is filled in and must match if present."""
    if status.get("node", node) != node:
        raise ValueError(f"status.node: {status.get('node')!r} differs from the publisher's node {node!r}")
    if not isinstance(status.get("online", True), bool):
        raise ValueError(f"status.online: must be a bool, got {status.get('online')!r}")
    body = {"online": True, **status, "node": node}
    try:
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    except (TypeError, ValueError) as error:
        raise ValueError(f"status: not JSON-serializable: {error}") from error


def offline_payload(node: str) -> bytes:
    """What the broker publishes for a node that vanished (its will) or that stopped gracefully."""
    return encode_status(node, {"online": False})


def parse_status(topic: str, payload: bytes, topics: StatusTopics) -> NodeStatus:
    """(node, status dict) from one message on ``topics``; raises `MalformedStatus` with the reason."""
    node = topics.node_of(topic)
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedStatus(f"{topic}: payload is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise MalformedStatus(f"{topic}: payload must be a JSON object, got {type(body).__name__}")
    if body.get("node") != node:
        raise MalformedStatus(f"{topic}: status.node {body.get('node')!r} does not match the topic")
    if not isinstance(body.get("online"), bool):
        raise MalformedStatus(f"{topic}: status.online must be a bool, got {body.get('online')!r}")
    return node, body


class LatestStatus(Generic[T]):
    """A publisher's latest status, numbered, and waiting for the broker to acknowledge it.

    One value, not a queue: offers made while disconnected collapse into the newest. Sends are
    spaced at least ``min_interval`` seconds apart (Felix's ``EndpointReportingDelaySecs``): the
    first after a quiet spell may go at once (`spacing` is 0), and what is offered within the
    interval collapses into the newest, sent when it ends. The adapters keep the status unencoded
    and encode what they `take`: an agent offers one per apply, and most are replaced first.
    """

    def __init__(self, min_interval: float = 0.0) -> None:
        if not 0 <= min_interval < float("inf"):
            raise ValueError(f"min_interval: must be a finite number of seconds >= 0, got {min_interval}")
        self.min_interval = min_interval
        self._last_take = float("-inf")
        self.payload: T | None = None
        self.generation = 0
        self.acked = 0
        self.pending = asyncio.Event()
        self._acked_event = asyncio.Event()
        self.closed = False

    def offer(self, payload: T) -> int:
        if self.closed:
            raise StatusError("status publisher stopped")
        self.generation += 1
        self.payload = payload
        self.pending.set()
        return self.generation

    def resend(self) -> None:
        """After a reconnect: send the latest payload again (the broker may have lost it)."""
        if self.payload is not None:
            self.pending.set()

    def spacing(self) -> float:
        """Seconds to wait before the next send may go (0: now)."""
        return max(0.0, self._last_take + self.min_interval - time.monotonic())

    def take(self) -> tuple[int, T]:
        self._last_take = time.monotonic()
        self.pending.clear()
        assert self.payload is not None
        return self.generation, self.payload

    def ack(self, generation: int) -> None:
        self.acked = max(self.acked, generation)
        event, self._acked_event = self._acked_event, asyncio.Event()
        event.set()

    def close(self) -> None:
        self.closed = True
        self.ack(self.acked)

    async def wait_acked(self, generation: int) -> None:
        while self.acked < generation:
            if self.closed:
                raise StatusError("status publisher stopped before the broker acknowledged")
            await self._acked_event.wait()


class StatusPublisher(Protocol):
    node: str

    async def start(self) -> None: ...

    def offer(self, status: Mapping[str, Any]) -> None:
        """Make ``status`` the node's latest; it is sent when connected (newer offers replace it).
        It is encoded when it is sent, so the caller must not change it after offering it."""
        ...

    async def publish(self, status: Mapping[str, Any]) -> None:
        """`offer`, then wait until the broker acknowledged it (or a newer status)."""
        ...

    async def stop(self, graceful: bool = True) -> None:
        """graceful: publish offline, then disconnect; otherwise drop the connection (the will fires)."""
        ...


class StatusWatcher(Protocol):
    malformed: int

    async def start(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[NodeStatus]: ...

    async def stop(self) -> None: ...
