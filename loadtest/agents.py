"""Simulated nodes: the real `NodeAgent`, many per event loop, over injected transports.

Owns `SimNode` (one agent incarnation: `NodeAgent` + the recorders around its subscription,
status publisher and in-memory data plane, reporting into a `RecordSink`) and `AgentHost` (the
nodes of one process: spawning them at a rate, restarting one, the hashes of what each programmed,
stopping them all). Transports are factories, so the same host runs in the embedded backend (memory
twins) and in each agent worker process of the services backend (one Kafka consumer for the host's
nodes, MQTT, gRPC snapshots). The code path is the one a real agent runs, minus the kernel:
stream position, snapshot on gap, desired state, throttled apply, reports.

Invariants: a node's incarnation is stopped before the next one starts, and the next one takes a
snapshot before reading deltas; a throttled (slow) node gets a dedicated subscriber, because a full
per-node queue of a shared subscriber pauses dispatch for every node of the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from iokit.bus import DiffMessage
from iokit.status import StatusPublisher
from loadtest.recorders import RecordingDataPlane, RecordingStatus, RecordingSubscriber, RecordSink
from node_agent.agent import NodeAgent
from node_agent.applier import FetchSnapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Transports:
    """Per-node factories. ``subscription(node, dedicated)`` → (source, owned by the node?)."""

    subscription: Callable[[str, bool], tuple[Any, bool]]
    status: Callable[[str], StatusPublisher]
    fetch_snapshot: FetchSnapshot


class SimNode:
    """One incarnation of one simulated node's agent."""

    def __init__(
        self, node: str, transports: Transports, sink: RecordSink, *, min_apply_interval: float
    ) -> None:
        self.node = node
        self.sink = sink
        self.dataplane = RecordingDataPlane()
        source, own = transports.subscription(node, min_apply_interval > 0)
        self._subscriber = RecordingSubscriber(node, source, self._on_message, own=own)
        self._status = RecordingStatus(transports.status(node), self._on_status)
        self.agent = NodeAgent(
            node,
            subscriber=self._subscriber,
            status=self._status,
            fetch_snapshot=transports.fetch_snapshot,
            dataplane=self.dataplane,
            min_apply_interval=min_apply_interval,
            hash_reports=False,
        )
        self._applied = 0
        self._snapshots = 0
        self._last_bytes = 0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.agent.run(), name=f"agent-{self.node}")

    def _on_message(self, message: DiffMessage) -> None:
        now = time.time()
        self._last_bytes = len(message.payload)
        self.sink.hop(now, max(0.0, now * 1000.0 - message.timestamp_ms))

    def _on_status(self, status: Mapping[str, Any]) -> None:
        if not status.get("ready"):
            return
        revision = int(status.get("revision", 0))
        if revision <= self._applied:
            return
        self._applied = revision
        self.sink.applied(self.node, revision, time.time())
        snapshots = self.agent.applier.snapshots
        if snapshots != self._snapshots:
            self._snapshots = snapshots
            self.sink.snapshot()
        elif self.dataplane.last_noop:
            self.sink.unaffected(self.node, revision, self._last_bytes)

    async def stop(self, *, graceful: bool) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.agent.stop(graceful=graceful)
        self.dataplane.close()

    def programmed_hash(self) -> str:
        return self.dataplane.programmed().content_hash()

    @property
    def failed(self) -> BaseException | None:
        task = self.task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()


class AgentHost:
    """The simulated nodes of one process; see the module docstring."""

    def __init__(self, transports: Transports, sink: RecordSink) -> None:
        self.transports = transports
        self.sink = sink
        self.nodes: dict[str, SimNode] = {}
        self.slow: dict[str, float] = {}

    def _new(self, node: str) -> SimNode:
        sim = SimNode(node, self.transports, self.sink, min_apply_interval=self.slow.get(node, 0.0))
        self.nodes[node] = sim
        sim.start()
        return sim

    async def spawn(self, nodes: list[str], rate: float, slow: Mapping[str, float] | None = None) -> None:
        """Start an agent per node, ``rate`` per second (0: all at once)."""
        self.slow = dict(slow or {})
        began = time.monotonic()
        for index, node in enumerate(nodes):
            if rate > 0:
                delay = began + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            self._new(node)

    async def restart(self, node: str) -> tuple[float, float]:
        """Kill ``node``'s agent (abruptly: its will fires) and start a fresh one; (started, ready)."""
        started = time.time()
        old = self.nodes[node]
        await old.stop(graceful=False)
        sim = self._new(node)
        await sim.agent.started.wait()
        ready = time.time()
        self.sink.restarted(node, started, ready)
        return started, ready

    def hashes(self) -> dict[str, str]:
        return {node: sim.programmed_hash() for node, sim in self.nodes.items()}

    def failures(self) -> dict[str, str]:
        return {node: repr(sim.failed) for node, sim in self.nodes.items() if sim.failed is not None}

    async def stop(self) -> None:
        for sim in list(self.nodes.values()):
            try:
                await sim.stop(graceful=True)
            except Exception as error:  # one node failing to stop must not keep the others running
                log.warning("%s: stop failed: %r", sim.node, error)
