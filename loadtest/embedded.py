"""The embedded backend: the controller and every simulated agent in this one process, on twins.

Owns one in-memory world — `MemoryStore`, a `MemoryBroker` bus, a `MemoryMqttBroker` for status —
and the real `Controller` (with `LocalElection`) and an `AgentHost` on it. Agents share one
`MemoryMultiNodeSubscriber` (one dispatch task, per-node queues), the slow node too: its full
queue overflows into a resync marker rather than pausing the others, and ``max_lag`` (every
agent's) cuts it off when it falls that far behind. Snapshots are served by the engine and go
through the wire codec, as over gRPC. Writes go through `ResourceStore` after `parse_resource`
(what the admin API does). It does not measure: recorders feed the sink it is given.

::

    ResourceStore ─▶ MemoryStore ─▶ Controller ─▶ RecordingPublisher ─▶ MemoryBroker ─▶ multi-node subscriber
                                        ▲  └── observe_flushes ──▶ sink ◀── SimNode x N ◀──────┘
                                        └─ MemoryStatusWatcher ◀─ MemoryMqttBroker ◀─┘

Invariant: everything runs on this process's loop, so controller and agent CPU cannot be told
apart; `pids` names this process for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from controller.controller import Controller
from controller.leader import LocalElection
from controller.resource_store import ResourceStore
from iokit.memory_bus import MemoryBroker, MemoryDiffPublisher, MemoryMultiNodeSubscriber
from iokit.memory_status import MemoryMqttBroker, MemoryStatusPublisher, MemoryStatusWatcher
from iokit.memory_store import MemoryStore
from loadtest.agents import AgentHost, Transports
from loadtest.backend import preload
from loadtest.recorders import (
    RecordingPublisher,
    RecordSink,
    measure_lag,
    observe_flushes,
    record_controller,
    watch_ready,
)
from loadtest.workload import Change
from node_agent.agent import DEFAULT_MAX_LAG
from policycore.diff import NodeDiff
from policycore.model import ResourceKey, parse_resource
from wire.codec import diff_from_pb, diff_to_pb


class EmbeddedBackend:
    name = "embedded"

    def __init__(
        self,
        sink: RecordSink,
        *,
        partitions: int = 16,
        queue_size: int = 100,
        max_lag: float = DEFAULT_MAX_LAG,
    ) -> None:
        self.sink = sink
        self.store = MemoryStore()
        self.resources = ResourceStore(self.store)
        self.broker = MemoryBroker(partitions)
        self.mqtt = MemoryMqttBroker()
        self.publisher = RecordingPublisher(MemoryDiffPublisher(self.broker), sink)
        self.controller = Controller(
            store=self.store,
            publisher=self.publisher,
            status_watcher=MemoryStatusWatcher(self.mqtt, queue_size=1_000_000),
            election=LocalElection(),
        )
        record_controller(self.controller, self.publisher)
        self._queue_size = queue_size
        self._max_lag = max_lag
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._multi: MemoryMultiNodeSubscriber | None = None
        self.host: AgentHost | None = None
        self.nodes: list[str] = []

    async def prepare(self) -> None:
        return None

    async def preload(self, documents: Sequence[Mapping[str, Any]]) -> int:
        return await preload(self.resources, documents)

    async def start_controller(self) -> float:
        self._spawn(self.controller.run(), "controller")
        self._spawn(self.controller.run_status(), "status")
        self._spawn(observe_flushes(self.controller, self.sink), "flushes")
        self._spawn(self._watch_ready(), "ready")
        self._spawn(watch_ready(self.controller, self.sink), "milestone")
        self._spawn(measure_lag(self.sink, "controller"), "lag")
        return time.time()

    async def start_agents(self, nodes: list[str], spawn_rate: float, slow: Mapping[str, float]) -> None:
        self.nodes = list(nodes)
        self._multi = MemoryMultiNodeSubscriber(self.broker, nodes, queue_size=self._queue_size)
        await self._multi.start()
        transports = Transports(
            self._multi.subscription, lambda node: MemoryStatusPublisher(self.mqtt, node), self._snapshot
        )
        self.host = AgentHost(transports, self.sink, max_lag=self._max_lag)
        self._spawn(self.host.spawn(self.nodes, spawn_rate, slow), "spawn")

    def _spawn(self, coroutine: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coroutine, name=f"embedded-{name}"))

    async def _watch_ready(self) -> None:
        while not self.controller.ready:
            await asyncio.sleep(0.005)  # readiness has no event of its own; the engine sets in_sync
        self._ready.set()

    async def _snapshot(self, node: str) -> NodeDiff:
        await self._ready.wait()
        engine = self.controller.engine
        assert engine is not None
        return diff_from_pb(diff_to_pb(await engine.snapshot(node)))

    async def write(self, change: Change) -> tuple[int, str]:
        if change.action == "apply":
            assert change.document is not None
            return await self.resources.apply(parse_resource(change.document))
        key = ResourceKey(change.kind, change.namespace, change.name)
        return await self.resources.delete(key), "deleted"

    async def restart_agent(self, node: str) -> None:
        assert self.host is not None
        await self.host.restart(node)

    async def hashes(self) -> tuple[dict[str, str], dict[str, str]]:
        engine = self.controller.engine
        assert engine is not None and self.host is not None
        expected = {node: engine.expected_hash(node) for node in self.nodes}
        return expected, self.host.hashes()

    def pids(self) -> dict[str, list[int]]:
        return {"controller": [os.getpid()], "agents": [os.getpid()]}

    def problems(self) -> list[str]:
        out = [
            f"{task.get_name()}: {task.exception()!r}"
            for task in self._tasks
            if task.done() and not task.cancelled() and task.exception() is not None
        ]
        if self.host is not None:
            out += [f"agent {node}: {error}" for node, error in self.host.failures().items()]
        return out

    async def stop(self) -> None:
        if self.host is not None:
            await self.host.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._multi is not None:
            await self._multi.stop()
        with contextlib.suppress(Exception):
            await self.controller.stop()
