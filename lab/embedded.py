"""`EmbeddedCluster`: one controller and N node agents in one process, on the in-memory twins.

Owns the in-memory "services" (a `MemoryStore`, a `MemoryBroker` bus, a `MemoryMqttBroker` status
broker, one `LocalElection`), a real grpc.aio server on loopback (NodeSync for the agents'
snapshots, and the admin API when `controller.admin` provides one), the controller's tasks and
each agent's tasks, plus the knobs the system tests turn: restart or kill an agent, kill the
controller and start a new one (new epoch), write raw bytes into the store, drop or duplicate an
agent's messages (`lab.faults`). The code paths are the real ones (`Controller`, `NodeAgent`,
`SnapshotClient`); only the transports are twins, on the keys and topics of its ``cluster``
(`KeyLayout`, `StatusTopics`). ``python -m lab.embedded_process`` runs it as the ``lab up
--backend embedded`` process.

::

    MemoryStore ─list/watch─▶ Controller ─NodeDiff─▶ MemoryBroker ─▶ FaultySubscriber ─▶ NodeAgent (N)
      ▲ apply/put_raw          │   ▲ MemoryStatusWatcher                          │     │ MemoryDataPlane
    tests                      │   └──── MemoryMqttBroker ◀── RecordingStatus ◀───┘     │
                               └─ NodeSync.Snapshot, grpc.aio 127.0.0.1 ◀── SnapshotClient

Invariants: Node resources for every node are in the store before the controller starts (so a
new epoch reaches every node); `start` returns only when the controller is in sync and every agent
has programmed its first snapshot; a component task that fails is reported by `wait_for` and
`supervise` instead of being waited on forever; `stop` stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from controller.controller import Controller
from controller.engine import Engine
from controller.leader import LocalElection
from controller.node_sync import NodeSyncServicer
from controller.resource_store import KeyLayout, ResourceStore
from iokit.bus import partition_for
from iokit.cluster_name import DEFAULT_CLUSTER
from iokit.memory_bus import MemoryBroker, MemoryDiffPublisher, MemoryDiffSubscriber
from iokit.memory_status import MemoryMqttBroker, MemoryStatusPublisher, MemoryStatusWatcher
from iokit.memory_store import MemoryStore
from iokit.status import StatusTopics
from lab.admin_api import add_admin_api
from lab.faults import AppliedLog, FaultySubscriber, RecordingStatus
from node_agent.agent import NodeAgent
from node_agent.dataplane.memory import MemoryDataPlane
from node_agent.dataplane.protocol import DataPlane
from node_agent.snapshot_client import SnapshotClient
from policycore.model import Resource, ResourceKey, parse_resource
from wire.gen.kaliko.v1 import node_stream_pb2_grpc

log = logging.getLogger("kaliko.lab.embedded")


def node_names(nodes: int | Iterable[str]) -> list[str]:
    """``3`` → node-1..node-3; a list of names is kept (duplicates refused)."""
    names = [f"node-{i}" for i in range(1, nodes + 1)] if isinstance(nodes, int) else list(nodes)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"nodes: need at least one node and unique names, got {names!r}")
    return names


def node_document(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


@dataclass(slots=True)
class EmbeddedAgent:
    """One running agent incarnation and the parts a test looks at."""

    node: str
    agent: NodeAgent
    dataplane: DataPlane
    subscriber: FaultySubscriber
    status: RecordingStatus
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.agent.applier.ready

    @property
    def applied(self) -> AppliedLog:
        return self.status.log

    def programmed_hash(self) -> str:
        return self.dataplane.programmed().content_hash()

    def metric(self, name: str) -> float:
        value = self.agent.metrics.registry.get_sample_value(name)
        return 0.0 if value is None else value


class ComponentFailed(RuntimeError):
    """A controller or agent task of the embedded cluster raised."""


class EmbeddedCluster:
    def __init__(
        self,
        nodes: int | Iterable[str],
        *,
        listen: str = "127.0.0.1:0",
        partitions: int = 8,
        flush_interval: float = 0.005,
        register_nodes: bool = True,
        dataplanes: Callable[[str], DataPlane] | None = None,
        cluster: str = DEFAULT_CLUSTER,
    ) -> None:
        self.nodes = node_names(nodes)
        self._dataplanes = dataplanes
        """node → a new data plane for each agent incarnation (default: a `MemoryDataPlane`)"""
        self.layout = KeyLayout(cluster)
        self.topics = StatusTopics(cluster)
        self.store = MemoryStore()
        self.resources = ResourceStore(self.store, self.layout)
        self.broker = MemoryBroker(partitions)
        self.mqtt = MemoryMqttBroker()
        self.election = LocalElection()
        self.controller: Controller | None = None
        self.agents: dict[str, EmbeddedAgent] = {}
        self.history: dict[str, list[AppliedLog]] = {node: [] for node in self.nodes}
        self.last_revision = 0
        self.address = ""
        self._listen = listen
        self._flush_interval = flush_interval
        self._register_nodes = register_nodes
        self._controller_tasks: list[asyncio.Task[None]] = []
        self._server: grpc.aio.Server | None = None
        self._snapshots: SnapshotClient | None = None
        self._wakeup = asyncio.Event()
        self._failures: list[BaseException] = []
        self._status_subscription: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, timeout: float = 60.0) -> None:
        """Serve gRPC, register the nodes, start the controller, then every agent; wait for ready."""
        self._status_subscription = self.mqtt.subscribe(self.topics.filter, lambda _t, _p: self._tick())
        server = grpc.aio.server()
        node_stream_pb2_grpc.add_NodeSyncServicer_to_server(NodeSyncServicer(self.engine), server)
        add_admin_api(server, lambda: self.controller)
        port = server.add_insecure_port(self._listen)
        await server.start()
        self._server = server
        self.address = f"{self._listen.rpartition(':')[0]}:{port}"
        self._snapshots = SnapshotClient([self.address])
        if self._register_nodes:
            for node in self.nodes:
                await self.apply(node_document(node))
        await self.start_controller(timeout=timeout)
        for node in self.nodes:
            self.start_agent(node)
        await self.wait_for(lambda: self.ready, timeout, "every agent ready")

    async def stop(self) -> None:
        for node in list(self.agents):
            await self.stop_agent(node, graceful=True)
        await self.kill_controller()
        if self._server is not None:
            await self._server.stop(0.5)
            self._server = None
        if self._snapshots is not None:
            await self._snapshots.close()
            self._snapshots = None
        if self._status_subscription is not None:
            self.mqtt.unsubscribe(self._status_subscription)
            self._status_subscription = None

    async def __aenter__(self) -> EmbeddedCluster:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    @property
    def ready(self) -> bool:
        controller_ready = self.controller is not None and self.controller.ready
        return controller_ready and all(a.ready for a in self.agents.values())

    def engine(self) -> Engine | None:
        return self.controller.engine if self.controller is not None else None

    # -- controller ----------------------------------------------------------------------------

    async def start_controller(self, timeout: float = 30.0) -> int:
        """A new controller (it takes the next epoch); returns once it is in sync."""
        if self.controller is not None:
            raise RuntimeError("a controller is already running; kill_controller() first")
        controller = Controller(
            store=self.store,
            publisher=MemoryDiffPublisher(self.broker),
            status_watcher=MemoryStatusWatcher(self.mqtt, topics=self.topics),
            election=self.election,
            registry=CollectorRegistry(),
            flush_interval=self._flush_interval,
            layout=self.layout,
        )
        self.controller = controller
        self._controller_tasks = [
            self._spawn(controller.run_status(), "controller/status"),
            self._spawn(controller.run(), "controller/run"),
            self._spawn(self._forward_changes(controller), "controller/changes"),
        ]
        await self.wait_for(lambda: controller.ready, timeout, "controller in sync")
        return self.election.epoch

    async def kill_controller(self) -> None:
        """Stop the controller abruptly (no resignation): its tasks are cancelled mid-flight."""
        controller, self.controller = self.controller, None
        await _cancel(self._controller_tasks)
        self._controller_tasks = []
        if controller is not None:
            await controller.publisher.stop()
            await controller.status.watcher.stop()
        self._tick()

    async def restart_controller(self, timeout: float = 30.0) -> int:
        """Kill the controller and start a new one; returns the new epoch."""
        await self.kill_controller()
        return await self.start_controller(timeout)

    async def _forward_changes(self, controller: Controller) -> None:
        while True:
            await controller.changed.wait()
            controller.changed.clear()
            self._tick()

    # -- agents --------------------------------------------------------------------------------

    def start_agent(self, node: str) -> EmbeddedAgent:
        """A new agent incarnation for ``node`` with an empty memory data plane (not awaited)."""
        if node in self.agents:
            raise RuntimeError(f"agent {node} is already running")
        if node not in self.history:
            raise KeyError(f"node {node!r} is not one of this cluster's nodes")
        assert self._snapshots is not None, "start() the cluster first"
        dataplane = self._dataplanes(node) if self._dataplanes is not None else MemoryDataPlane()
        subscriber = FaultySubscriber(MemoryDiffSubscriber(self.broker, node))
        status = RecordingStatus(MemoryStatusPublisher(self.mqtt, node, topics=self.topics))
        agent = NodeAgent(
            node,
            subscriber=subscriber,
            status=status,
            fetch_snapshot=self._snapshots.fetch,
            dataplane=dataplane,
            registry=CollectorRegistry(),
        )
        running = EmbeddedAgent(node, agent, dataplane, subscriber, status)
        running.tasks = [
            self._spawn(agent.run(), f"agent/{node}/stream"),
            self._spawn(agent.repair_drift(), f"agent/{node}/drift"),
        ]
        self.agents[node] = running
        self.history[node].append(status.log)
        return running

    async def stop_agent(self, node: str, *, graceful: bool = False) -> None:
        """Stop ``node``'s agent: graceful says offline itself, otherwise the will fires."""
        running = self.agents.pop(node)
        await _cancel(running.tasks)
        await running.agent.stop(graceful=graceful)
        running.dataplane.close()
        self._tick()

    async def restart_agent(
        self, node: str, *, graceful: bool = False, timeout: float = 30.0
    ) -> EmbeddedAgent:
        """Stop and start ``node``'s agent; returns once the new one has programmed its snapshot."""
        await self.stop_agent(node, graceful=graceful)
        running = self.start_agent(node)
        await self.wait_for(lambda: running.ready, timeout, f"agent {node} ready after restart")
        return running

    # -- datastore -----------------------------------------------------------------------------

    async def apply(self, *documents: Mapping[str, Any] | Resource) -> int:
        """Create or replace each resource (validated); returns the newest revision written."""
        for document in documents:
            resource = parse_resource(document) if isinstance(document, Mapping) else document
            revision, _ = await self.resources.apply(resource)
            self.last_revision = max(self.last_revision, revision)
        return self.last_revision

    async def delete(self, kind: str, name: str, namespace: str = "") -> int:
        self.last_revision = await self.resources.delete(ResourceKey(kind, namespace, name))
        return self.last_revision

    async def put_raw(self, key: str, value: bytes) -> int:
        """Write bytes straight into the store, bypassing validation (as a broken writer would)."""
        self.last_revision = await self.store.put(key, value)
        return self.last_revision

    # -- observation ---------------------------------------------------------------------------

    def expected_hash(self, node: str) -> str:
        engine = self.engine()
        if engine is None:
            raise RuntimeError("no controller is running")
        return engine.expected_hash(node)

    def mismatched(self) -> dict[str, str]:
        """Why each running agent is not in step with the controller (empty: all are)."""
        controller, engine = self.controller, self.engine()
        if controller is None or engine is None:
            return {node: "no controller" for node in self.agents}
        out = {}
        for node, running in self.agents.items():
            programmed, expected = running.programmed_hash(), engine.expected_hash(node)
            position = running.agent.applier.programmed_position
            seen = controller.status.latest.get(node)
            if not running.ready or programmed != expected:
                out[node] = f"programmed {programmed[:12]}, compiled {expected[:12]}"
            elif (
                position is None
                or seen is None
                or not seen.online
                or (seen.epoch, seen.seq)
                != (
                    position.epoch,
                    position.seq,
                )
            ):
                out[node] = f"controller has not seen its report of {position} yet (has {seen})"
        return out

    def converged(self, revision: int | None = None) -> bool:
        wanted = self.last_revision if revision is None else revision
        controller = self.controller
        engine = self.engine()
        if controller is None or engine is None or not controller.ready:
            return False
        return engine.tracker.is_converged(wanted) and not self.mismatched()

    def compiled(self, revision: int | None = None) -> bool:
        engine = self.engine()
        wanted = self.last_revision if revision is None else revision
        return engine is not None and engine.in_sync and engine.tracker.compiled_revision >= wanted

    async def wait_compiled(self, revision: int | None = None, timeout: float = 10.0) -> None:
        """Until the controller has compiled and published everything up to ``revision``."""
        await self.wait_for(lambda: self.compiled(revision), timeout, "compile")

    async def wait_converged(self, revision: int | None = None, timeout: float = 10.0) -> None:
        """Until the controller compiled ``revision`` (default: the last write), every affected node
        acknowledged it and every agent's programmed state hashes equal to what was compiled."""
        await self.wait_for(lambda: self.converged(revision), timeout, "convergence", self.mismatched)

    def messages_for(self, node: str) -> list[bytes]:
        """Every payload on the bus keyed for ``node``, in order."""
        partition = partition_for(node, self.broker.partitions)
        return [m.payload for m in self.broker.records(partition) if m.node == node]

    def order_violations(self) -> list[str]:
        return [v for logs in self.history.values() for applied in logs for v in applied.violations()]

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 10.0,
        what: str = "condition",
        detail: Callable[[], object] | None = None,
    ) -> None:
        """Until ``predicate()`` holds, re-checked on every flush, report and component exit."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    wakeup = self._wakeup
                    self._raise_failures()
                    if predicate():
                        return
                    await wakeup.wait()
        except TimeoutError:
            shown = f": {detail()}" if detail is not None else ""
            raise TimeoutError(f"embedded cluster: no {what} within {timeout}s{shown}") from None

    async def supervise(self) -> None:
        """Run until a component fails (raises `ComponentFailed`); the form a `Supervisor` task takes."""
        while True:
            wakeup = self._wakeup
            self._raise_failures()
            await wakeup.wait()

    # -- internals -----------------------------------------------------------------------------

    def _tick(self) -> None:
        wakeup, self._wakeup = self._wakeup, asyncio.Event()
        wakeup.set()

    def _spawn(self, coroutine: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coroutine, name=name)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            log.error("embedded cluster: %s failed: %r", task.get_name(), error)
            self._failures.append(ComponentFailed(f"{task.get_name()} failed: {error!r}"))
        self._tick()

    def _raise_failures(self) -> None:
        if self._failures:
            raise self._failures[0]


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
