"""`LiveCluster`: real controller processes and in-process agents on the real etcd, Kafka and MQTT.

Owns, for fault tests and experiments, a set of ``kaliko-controller`` processes (`lab.processes`;
with several, `EtcdElection` makes one the leader and the others standbys) and one in-process
`NodeAgent` per node built from the real adapters — `KafkaDiffSubscriber` inside a
`FaultySubscriber`, `MqttStatusPublisher` inside a `RecordingStatus`, a `SnapshotClient` that
knows every controller, a `MemoryDataPlane` — so a test can kill and restart any of them, watch
what each agent programmed and in which order, and ask the leader through the admin API what it
compiled. Everything runs on the keys and topics of its ``cluster`` (``--cluster`` of the
controllers; the agents' topic and status topics), so two live clusters with the same node names
may share the services. It does not start the services themselves (``make services``; tests may
point it at a private etcd) and does not own assertions.

::

    etcd ◀── kaliko-controller (K processes: admin, NodeSync, gRPC health, /metrics)
                 │ Kafka (<cluster>.node-diffs)         ▲ NodeSync.Snapshot
                 ▼                                      │
    FaultySubscriber ──▶ NodeAgent (in this process) ───┘ ──▶ RecordingStatus ──▶ MQTT ──▶ controllers

Invariants: Node resources for every node are registered through the admin API before any agent
starts (so each new epoch reaches every node); `stop` stops the agents (gracefully), then the
controller processes, deregisters nothing and clears the nodes' retained MQTT statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from iokit.cluster_name import DEFAULT_CLUSTER, diff_topic
from iokit.kafka_bus import KafkaDiffSubscriber
from iokit.mqtt_status import MqttStatusPublisher
from iokit.status import StatusTopics
from lab.embedded import node_document
from lab.faults import AppliedLog, FaultySubscriber, RecordingStatus
from lab.processes import ManagedProcess, ProcessSet, free_port, venv_bin
from node_agent.agent import NodeAgent
from node_agent.dataplane.memory import MemoryDataPlane
from node_agent.snapshot_client import SnapshotClient
from wire.gen.kaliko.v1 import admin_pb2 as admin_pb
from wire.gen.kaliko.v1 import admin_pb2_grpc as admin_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass(slots=True)
class LiveAgent:
    node: str
    agent: NodeAgent
    dataplane: MemoryDataPlane
    subscriber: FaultySubscriber
    status: RecordingStatus
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def programmed_hash(self) -> str:
        return self.dataplane.programmed().content_hash()

    def metric(self, name: str) -> float:
        return self.agent.metrics.registry.get_sample_value(name) or 0.0


class LiveCluster:
    def __init__(
        self,
        nodes: list[str],
        *,
        etcd: str,
        kafka: str,
        mqtt: str,
        log_dir: Path,
        controllers: int = 1,
        lease_ttl: int = 2,
        controller_bin: str | None = None,
        cluster: str = DEFAULT_CLUSTER,
    ) -> None:
        self.nodes = list(nodes)
        self.cluster = cluster
        self.topic = diff_topic(cluster)
        self.topics = StatusTopics(cluster)
        self.etcd, self.kafka, self.mqtt = etcd, kafka, mqtt
        self.lease_ttl = lease_ttl
        self.processes = ProcessSet(log_dir)
        self.controllers: list[ManagedProcess] = []
        self.agents: dict[str, LiveAgent] = {}
        self.history: dict[str, list[AppliedLog]] = {node: [] for node in nodes}
        self._controller_count = controllers
        self._controller_bin = controller_bin or venv_bin("kaliko-controller")
        self._addresses = [f"127.0.0.1:{free_port()}" for _ in range(controllers)]
        self._snapshots = SnapshotClient(self._addresses)
        self._wakeup = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, timeout: float = 60.0) -> None:
        for index in range(self._controller_count):
            self.start_controller(index)
        await self.wait_leader(timeout)
        await self.admin(
            "Apply", admin_pb.WriteRequest(documents_json=[json.dumps(node_document(n)) for n in self.nodes])
        )
        for node in self.nodes:
            self.start_agent(node)
        async with asyncio.timeout(timeout):
            for running in self.agents.values():
                await running.agent.started.wait()

    async def stop(self) -> None:
        for node in list(self.agents):
            await self.stop_agent(node, graceful=True)
        await asyncio.to_thread(self.processes.stop)
        await self._snapshots.close()
        await self._clear_retained()

    async def _clear_retained(self) -> None:
        host, _, port = self.mqtt.rpartition(":")
        with contextlib.suppress(aiomqtt.MqttError):
            async with aiomqtt.Client(host, int(port)) as client:
                for node in self.nodes:
                    await client.publish(self.topics.topic(node), b"", qos=1, retain=True)

    # -- controllers ---------------------------------------------------------------------------

    def start_controller(self, index: int) -> ManagedProcess:
        """(Re)start controller ``index`` on its fixed gRPC address (a new process, a new identity)."""
        health = free_port()
        argv = [
            self._controller_bin,
            f"--etcd={self.etcd}",
            f"--kafka={self.kafka}",
            f"--mqtt={self.mqtt}",
            f"--cluster={self.cluster}",
            f"--listen={self._addresses[index]}",
            f"--health-port={health}",
            f"--lease-ttl={self.lease_ttl}",
            f"--identity=lab-controller-{index}-{time.monotonic_ns()}",
        ]
        process = self.processes.spawn(f"controller-{index}", argv, health_port=health)
        process.ports["grpc"] = int(self._addresses[index].rpartition(":")[2])
        if index < len(self.controllers):
            self.controllers[index] = process
        else:
            self.controllers.append(process)
        return process

    def kill_controller(self, index: int, sig: signal.Signals = signal.SIGKILL) -> None:
        process = self.controllers[index]
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)

    def address(self, index: int) -> str:
        return self._addresses[index]

    async def serving(self, index: int) -> bool:
        async with grpc.aio.insecure_channel(self._addresses[index]) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=2.0
                )
            except grpc.aio.AioRpcError:
                return False
            return bool(reply.status == SERVING)

    async def wait_serving(self, index: int, timeout: float = 30.0) -> float:
        """Until controller ``index`` leads and is in sync (gRPC health Watch); returns the seconds."""
        started = time.monotonic()
        async with asyncio.timeout(timeout):
            while True:
                async with grpc.aio.insecure_channel(self._addresses[index]) as channel:
                    stream = health_pb2_grpc.HealthStub(channel).Watch(
                        health_pb2.HealthCheckRequest(service="")
                    )
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        async for reply in stream:
                            if reply.status == SERVING:
                                return time.monotonic() - started
                await asyncio.sleep(0.1)  # not listening yet: an external process, nothing to await

    async def wait_leader(self, timeout: float = 30.0) -> int:
        """The index of the controller that leads (and is in sync), once one does."""
        waits = {
            asyncio.ensure_future(self.wait_serving(i, timeout)): i for i in range(len(self.controllers))
        }
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            first = done.pop()
            first.result()
            return waits[first]
        finally:
            for task in waits:
                task.cancel()

    def metrics(self, index: int) -> dict[str, float]:
        """Controller ``index``'s /metrics as {sample name: value} (unlabelled samples)."""
        url = f"http://127.0.0.1:{self.controllers[index].health_port}/metrics"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=5.0) as response:
            text = response.read().decode()
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if not sample.labels
        }

    # -- agents --------------------------------------------------------------------------------

    def start_agent(self, node: str) -> LiveAgent:
        dataplane = MemoryDataPlane()
        subscriber = FaultySubscriber(KafkaDiffSubscriber(self.kafka, node, self.topic))
        publisher = MqttStatusPublisher(node, self.mqtt, topics=self.topics)
        status = RecordingStatus(_Ticking(publisher, self._tick))
        agent = NodeAgent(
            node,
            subscriber=subscriber,
            status=status,
            fetch_snapshot=self._snapshots.fetch,
            dataplane=dataplane,
            registry=CollectorRegistry(),
        )
        running = LiveAgent(node, agent, dataplane, subscriber, status)
        running.tasks = [asyncio.create_task(agent.run(), name=f"live-agent/{node}")]
        self.agents[node] = running
        self.history[node].append(status.log)
        return running

    async def stop_agent(self, node: str, *, graceful: bool = False) -> None:
        running = self.agents.pop(node)
        for task in running.tasks:
            task.cancel()
        for task in running.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await running.agent.stop(graceful=graceful)
        running.dataplane.close()

    async def restart_agent(self, node: str, *, graceful: bool = False, timeout: float = 30.0) -> LiveAgent:
        await self.stop_agent(node, graceful=graceful)
        running = self.start_agent(node)
        async with asyncio.timeout(timeout):
            await running.agent.started.wait()
        return running

    def order_violations(self) -> list[str]:
        return [v for logs in self.history.values() for log in logs for v in log.violations()]

    # -- admin API -----------------------------------------------------------------------------

    async def admin(self, method: str, request: Any, timeout: float = 30.0) -> Any:
        """Call ``method`` on whichever controller answers (standbys say UNAVAILABLE)."""
        last: grpc.aio.AioRpcError | None = None
        for address in self._addresses:
            async with grpc.aio.insecure_channel(address) as channel:
                try:
                    return await getattr(admin_grpc.AdminServiceStub(channel), method)(
                        request, timeout=timeout
                    )
                except grpc.aio.AioRpcError as err:
                    if err.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    last = err
        raise ConnectionError(f"no controller answered {method}: {last.details() if last else ''}")

    async def apply(self, *documents: Mapping[str, Any]) -> int:
        reply = await self.admin(
            "Apply", admin_pb.WriteRequest(documents_json=[json.dumps(d) for d in documents])
        )
        return int(reply.revision)

    async def node_status(self) -> dict[str, Any]:
        reply = await self.admin("NodeStatus", admin_pb.NodeStatusRequest())
        return {n.name: n for n in reply.nodes}

    async def mismatched(self) -> dict[str, str]:
        """Why each of our nodes is not programmed as compiled (empty: every one is)."""
        try:
            status = await self.node_status()
        except ConnectionError as err:
            return {node: str(err) for node in self.nodes}
        out = {}
        for node in self.nodes:
            entry, running = status.get(node), self.agents.get(node)
            if entry is None or running is None:
                out[node] = "no agent" if running is None else "unknown to the controller"
                continue
            programmed = running.programmed_hash()
            if not entry.expected_hash or programmed != entry.expected_hash or entry.state_hash != programmed:
                out[node] = (
                    f"programmed {programmed[:12]}, reported {entry.state_hash[:12]}, "
                    f"compiled {entry.expected_hash[:12]}"
                )
        return out

    async def wait_converged(self, revision: int = 0, timeout: float = 30.0) -> None:
        """Until the leader says ``revision`` converged and every node programmed what it compiled."""
        deadline = time.monotonic() + timeout
        problems: dict[str, str] = {}
        while True:
            wakeup = self._wakeup
            remaining = deadline - time.monotonic()
            with contextlib.suppress(ConnectionError):
                reply = await self.admin(
                    "WaitConverged",
                    admin_pb.WaitConvergedRequest(revision=revision, timeout_seconds=max(remaining, 0)),
                )
                if reply.converged:
                    problems = await self.mismatched()
                    if not problems:
                        return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"live cluster: not converged at revision {revision} within {timeout}s: {problems}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), 0.5)  # an agent report, or re-ask the controller

    def _tick(self) -> None:
        wakeup, self._wakeup = self._wakeup, asyncio.Event()
        wakeup.set()


class _Ticking:
    """A status publisher that calls ``tick`` after every offer (the cluster's "something changed")."""

    def __init__(self, inner: MqttStatusPublisher, tick: Any) -> None:
        self.inner = inner
        self.node = inner.node
        self._tick = tick

    async def start(self) -> None:
        await self.inner.start()

    def offer(self, status: Mapping[str, Any]) -> None:
        self.inner.offer(status)
        self._tick()

    async def publish(self, status: Mapping[str, Any]) -> None:
        await self.inner.publish(status)
        self._tick()

    async def stop(self, graceful: bool = True) -> None:
        await self.inner.stop(graceful)
