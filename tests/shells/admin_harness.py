"""A controller and its agents in one process, over the in-memory twins, for the admin API tests.

Owns `AdminCluster`: a real `Controller` (engine, graph, tracker) with `LocalElection`, the real
`ControllerServer` (AdminService, NodeSync, health, reflection) on an ephemeral loopback port, and
real `NodeAgent`s on `MemoryDataPlane`s fed by the memory bus, reporting on the memory MQTT
broker, fetching snapshots from the NodeSync servicer over gRPC. Also manifest builders the tests
share. Nothing sleeps: readiness is awaited on ``Controller.changed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc

from controller.controller import Controller
from controller.grpc_server import ControllerServer
from controller.leader import LocalElection
from iokit.memory_bus import MemoryBroker, MemoryDiffPublisher, MemoryDiffSubscriber
from iokit.memory_status import MemoryMqttBroker, MemoryStatusPublisher, MemoryStatusWatcher
from iokit.memory_store import MemoryStore
from node_agent.agent import NodeAgent
from node_agent.dataplane.memory import MemoryDataPlane
from node_agent.snapshot_client import SnapshotClient
from wire.gen.kaliko.v1 import admin_pb2 as pb
from wire.gen.kaliko.v1 import admin_pb2_grpc as pb_grpc

KALIKO_API = "kaliko.io/v1"


def node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


def pod(ns: str, name: str, node_name: str, ip: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node_name},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}], "phase": "Running"},
    }


def allow_from(ns: str, name: str, selector: str, source: str, port: int) -> dict[str, Any]:
    """A Calico NetworkPolicy: pods matching ``selector`` accept TCP ``port`` only from ``source``."""
    return {
        "apiVersion": KALIKO_API,
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": selector,
            "types": ["Ingress"],
            "ingress": [
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {"selector": source},
                    "destination": {"ports": [port]},
                }
            ],
        },
    }


def docs(*documents: dict[str, Any]) -> list[str]:
    return [json.dumps(d) for d in documents]


def cluster_manifests(nodes: list[str]) -> list[dict[str, Any]]:
    """Nodes, a namespace and one web and one client pod per node (10.10.<i>.{1,2})."""
    out: list[dict[str, Any]] = [node(n) for n in nodes] + [namespace("shop", {"team": "a"})]
    for i, n in enumerate(nodes, start=1):
        out.append(pod("shop", f"web-{i}", n, f"10.10.{i}.1", {"app": "web"}))
        out.append(pod("shop", f"client-{i}", n, f"10.10.{i}.2", {"app": "client"}))
    return out


class AdminCluster:
    """See the module docstring; use through `running_cluster`."""

    def __init__(self, nodes: list[str]) -> None:
        self.node_names = nodes
        self.store = MemoryStore()
        self.bus = MemoryBroker(partitions=4)
        self.mqtt = MemoryMqttBroker()
        self.controller = Controller(
            store=self.store,
            publisher=MemoryDiffPublisher(self.bus),
            status_watcher=MemoryStatusWatcher(self.mqtt),
            election=LocalElection(),
            flush_interval=0.001,
        )
        self.server = ControllerServer(self.controller)
        self.agents: dict[str, NodeAgent] = {}
        self.dataplanes: dict[str, MemoryDataPlane] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._snapshots: list[SnapshotClient] = []
        self.address = ""
        self.channel: grpc.aio.Channel | None = None
        self.stub: pb_grpc.AdminServiceAsyncStub

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def start(self) -> None:
        port = await self.server.start("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        self._spawn(self.controller.run(), "controller")
        self._spawn(self.controller.run_status(), "status")
        self._spawn(self.server.follow_readiness(), "health")
        await self.until(lambda: self.controller.ready)
        for name in self.node_names:
            self.start_agent(name)
        self.channel = grpc.aio.insecure_channel(self.address)
        self.stub = pb_grpc.AdminServiceStub(self.channel)  # type: ignore[assignment]

    def start_agent(self, name: str) -> NodeAgent:
        snapshots = SnapshotClient([self.address])
        self._snapshots.append(snapshots)
        dataplane = MemoryDataPlane()
        agent = NodeAgent(
            name,
            subscriber=MemoryDiffSubscriber(self.bus, name),
            status=MemoryStatusPublisher(self.mqtt, name),
            fetch_snapshot=snapshots.fetch,
            dataplane=dataplane,
        )
        self.agents[name] = agent
        self.dataplanes[name] = dataplane
        self._spawn(agent.run(), f"agent-{name}")
        return agent

    async def until(self, condition: Any, timeout: float = 10.0) -> None:
        """Wait (on Controller.changed, no polling) until ``condition()`` holds."""
        changed = self.controller.changed

        async def wait() -> None:
            while True:
                changed.clear()
                if condition():
                    return
                for task in self._tasks:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                await changed.wait()

        await asyncio.wait_for(wait(), timeout)

    async def agents_ready(self) -> None:
        epoch = self.controller.engine.epoch if self.controller.engine else -1

        def ready() -> bool:
            latest = self.controller.status.latest
            return all(n in latest and latest[n].ready and latest[n].epoch == epoch for n in self.node_names)

        await self.until(ready)

    async def apply(self, *documents: dict[str, Any], dry_run: bool = False) -> pb.WriteReply:
        return await self.stub.Apply(pb.WriteRequest(documents_json=docs(*documents), dry_run=dry_run))

    async def stop(self) -> None:
        for agent in self.agents.values():
            await agent.stop(graceful=True)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.channel is not None:
            await self.channel.close()
        for client in self._snapshots:
            await client.close()
        await self.server.stop(0)


@contextlib.asynccontextmanager
async def running_cluster(nodes: list[str]) -> AsyncIterator[AdminCluster]:
    cluster = AdminCluster(nodes)
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()
