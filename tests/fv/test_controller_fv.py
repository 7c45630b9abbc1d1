"""The controller process, three agent processes and kalikoctl against real etcd, Kafka and Mosquitto.

Proves: ``kaliko-controller`` (settings → composition root) leads, lists, compiles and publishes
on the real Kafka topic; real ``kaliko-agent --dataplane memory`` processes fetch snapshots over
NodeSync, follow their partition and report over the real Mosquitto, serve AgentService Status and
Dump (the programmed state, whose hash is what the controller compiled), /metrics, and /readiness
only once a first snapshot is programmed; ``kalikoctl apply -f ...
--wait -o json`` (a real subprocess) reports convergence on the three nodes; a standby takes
over when the leader stops, and a leader whose key disappears exits with status 3. It measures
the cold start (controller spawned → every agent has applied the first epoch) and the
apply→converged latency over 50 applies, printed (``pytest -s``) and checked against loose bounds.

Isolation on shared services: etcd is a private instance on free ports (other test runs and
``kalikoctl lab`` run controllers against the shared etcd, and two controllers on one etcd would
elect one leader between them); Kafka (9092) and Mosquitto (1883) are the shared ones, with node
names unique to this run, and the retained statuses of those nodes are cleared at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import socket
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controller.app import EXIT_LEADERSHIP_LOST
from controller.resource_store import KeyLayout, ResourceStore
from iokit.etcd_store import EtcdStore
from iokit.status import StatusTopics
from iokit.store import StoreUnavailable
from policycore.model import parse_resource
from wire.gen.kaliko.v1 import admin_pb2 as pb
from wire.gen.kaliko.v1 import admin_pb2_grpc as pb_grpc
from wire.gen.kaliko.v1 import agent_pb2, agent_pb2_grpc

pytestmark = [pytest.mark.fv, pytest.mark.asyncio(loop_scope="module")]

BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
RUN = f"fv{uuid.uuid4().hex[:6]}"
NODES = [f"{RUN}-node-{i}" for i in (1, 2, 3)]
NAMESPACE = RUN


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def policy(port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kaliko.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web", "namespace": NAMESPACE},
        "spec": {
            "selector": "app == 'web'",
            "types": ["Ingress"],
            "ingress": [
                {"action": "Allow", "protocol": "TCP", "source": {"selector": "app == 'client'"},
                 "destination": {"ports": [port]}}
            ],
        },
    }  # fmt: skip


def topology() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}} for n in NODES]
    out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    for i, node in enumerate(NODES, start=1):
        for role, host in (("web", 1), ("client", 2)):
            out.append({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"{role}-{i}", "namespace": NAMESPACE, "labels": {"app": role}},
                "spec": {"nodeName": node},
                "status": {"podIP": f"10.99.{i}.{host}", "phase": "Running"},
            })  # fmt: skip
    return out


@dataclass
class Processes:
    """Spawned processes by name, their logs in one directory."""

    logs: Path
    running: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    async def spawn(self, name: str, *argv: str) -> asyncio.subprocess.Process:
        log = (self.logs / f"{name}.log").open("ab")
        process = await asyncio.create_subprocess_exec(*argv, stdout=log, stderr=log, env={**os.environ})
        self.running[name] = process
        return process

    async def stop(self, name: str, timeout: float = 15.0) -> int:
        process = self.running.pop(name)
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
        assert process.returncode is not None
        return process.returncode

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")


async def start_etcd(processes: Processes, data: Path) -> str:
    binary = shutil.which("etcd")
    if binary is None:
        pytest.fail("the etcd binary is not installed; run `make services`")
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    await processes.spawn(
        "etcd", binary, "--name=fv", f"--data-dir={data}", f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}", f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}", f"--initial-cluster=fv={peer}",
    )  # fmt: skip
    endpoint = client.removeprefix("http://")
    probe = EtcdStore.from_endpoint(endpoint, timeout=1.0)
    try:
        async with asyncio.timeout(30):
            while True:  # an external process coming up: there is no event to await
                with contextlib.suppress(StoreUnavailable):
                    await probe.list("/")
                    return endpoint
                await asyncio.sleep(0.1)
    finally:
        await probe.close()


def logged_at(log: str, marker: str) -> float:
    """The wall-clock time of the first log line containing ``marker``."""
    line = next(line for line in log.splitlines() if marker in line)
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


@dataclass
class Cluster:
    processes: Processes
    etcd: str
    kafka: str
    mqtt: str
    controllers: list[str]
    seeded_revision: int
    cold_start_seconds: float = 0.0
    health_ports: dict[str, int] = field(default_factory=dict)
    agent_ports: dict[str, int] = field(default_factory=dict)

    @property
    def servers(self) -> str:
        return ",".join(self.controllers)

    async def start_controller(self, name: str, listen: str) -> None:
        self.health_ports[name] = free_port()
        await self.processes.spawn(
            name, str(BIN / "kaliko-controller"), "--etcd", self.etcd, "--kafka", self.kafka,
            "--mqtt", self.mqtt, "--listen", listen, "--identity", f"{RUN}-{name}", "--lease-ttl", "2",
            "--health-port", str(self.health_ports[name]),
        )  # fmt: skip

    async def http(self, name: str, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.health_ports[name]}{path}"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status, await response.text()

    async def kalikoctl(self, *args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            str(BIN / "kalikoctl"), *args, "--server", self.servers,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()


async def until_serving(address: str, timeout: float = 60.0) -> None:
    """Follow gRPC health (a stream: no polling) until the AdminService is SERVING."""
    options = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 200)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        request = health_pb2.HealthCheckRequest(service="kaliko.v1.AdminService")
        stream = health_pb2_grpc.HealthStub(channel).Watch(request, wait_for_ready=True, timeout=timeout)
        async for reply in stream:
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                stream.cancel()
                return
    raise AssertionError(f"{address} never became SERVING")


async def wait_converged(address: str, revision: int, timeout: float = 60.0) -> pb.WaitConvergedReply:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AdminServiceStub(channel)
        request = pb.WaitConvergedRequest(revision=revision, timeout_seconds=timeout)
        reply: pb.WaitConvergedReply = await stub.WaitConverged(request, timeout=timeout + 10)
        return reply


async def clear_statuses(mqtt: str) -> None:
    host, _, port = mqtt.rpartition(":")
    async with aiomqtt.Client(host, int(port), identifier=f"{RUN}-cleanup") as client:
        for node in NODES:
            await client.publish(StatusTopics().topic(node), b"", qos=1, retain=True)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, mqtt_endpoint: str
) -> AsyncIterator[Cluster]:
    directory = tmp_path_factory.mktemp("controller-fv")
    processes = Processes(directory)
    try:
        etcd = await start_etcd(processes, directory / "etcd")
        store = EtcdStore.from_endpoint(etcd)
        try:
            revision = max([await ResourceStore(store).create(parse_resource(d)) for d in topology()])
        finally:
            await store.close()
        controllers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
        cluster = Cluster(processes, etcd, kafka_bootstrap, mqtt_endpoint, controllers, revision)
        started = time.monotonic()
        await cluster.start_controller("controller-a", controllers[0])
        for node in NODES:
            cluster.health_ports[node], cluster.agent_ports[node] = free_port(), free_port()
            await processes.spawn(
                node, str(BIN / "kaliko-agent"), "--node", node, "--dataplane", "memory",
                "--kafka", kafka_bootstrap, "--mqtt", mqtt_endpoint, "--controller", cluster.servers,
                "--health-port", str(cluster.health_ports[node]),
                "--grpc-listen", f"127.0.0.1:{cluster.agent_ports[node]}",
            )  # fmt: skip
        await until_serving(controllers[0])
        serving = time.monotonic() - started
        converged = await wait_converged(controllers[0], revision)
        cluster.cold_start_seconds = time.monotonic() - started
        ready_at = time.time()
        assert converged.converged, f"cold start did not converge; lagging {list(converged.lagging)}"
        print(
            f"\ncold start: controller spawned -> leader SERVING {serving:.2f}s -> 3 agents applied epoch 1"
            f" {cluster.cold_start_seconds:.2f}s (after the process logged its port:"
            f" {ready_at - logged_at(processes.log('controller-a'), 'campaigning'):.3f}s)"
        )
        yield cluster
    finally:
        for name in reversed(list(processes.running)):
            await processes.stop(name)
        await clear_statuses(mqtt_endpoint)


async def test_kalikoctl_apply_wait_reports_convergence_on_three_nodes(
    cluster: Cluster, tmp_path: Path
) -> None:
    manifest = tmp_path / "policy.json"
    manifest.write_text(json.dumps(policy(80)))
    code, out, err = await cluster.kalikoctl(
        "apply", "-f", str(manifest), "--wait", "--timeout", "30", "-o", "json"
    )
    assert code == 0, err
    found = json.loads(out)
    assert found["converged"] is True and found["lagging"] == []
    assert sorted(found["nodes"]) == NODES
    assert all(n["ready"] and n["revision"] >= found["revision"] for n in found["nodes"].values())
    code, out, err = await cluster.kalikoctl("node", "status", "-o", "json")
    ours = [n for n in json.loads(out)["nodes"] if n["name"] in NODES]
    assert code == 0 and len(ours) == 3 and all(n["online"] and n["ready"] for n in ours)
    code, out, _ = await cluster.kalikoctl("reach", "--port", "80", "-o", "json")
    allowed = json.loads(out)["allowed"]
    assert allowed[f"{NAMESPACE}/client-1"][f"{NAMESPACE}/web-3"] is True
    assert allowed[f"{NAMESPACE}/web-1"][f"{NAMESPACE}/web-3"] is False
    assert cluster.cold_start_seconds < 60


async def test_apply_to_converged_latency_over_50_applies(cluster: Cluster) -> None:
    latencies = []
    async with grpc.aio.insecure_channel(cluster.controllers[0]) as channel:
        stub = pb_grpc.AdminServiceStub(channel)
        for i in range(50):
            started = time.perf_counter()
            written = await stub.Apply(pb.WriteRequest(documents_json=[json.dumps(policy(1000 + i))]))
            request = pb.WaitConvergedRequest(revision=written.revision, timeout_seconds=30)
            done = await stub.WaitConverged(request)
            latencies.append(time.perf_counter() - started)
            assert done.converged and len(done.nodes) == 3, list(done.lagging)
    latencies.sort()
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))]
    print(
        f"\napply->converged over {len(latencies)} applies, 3 nodes:"
        f" p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )
    assert p99 < 5.0


async def test_agents_serve_status_dump_health_and_metrics(cluster: Cluster) -> None:
    """Each agent's AgentService says what it programmed; its hash is what the controller compiled."""
    async with grpc.aio.insecure_channel(cluster.controllers[0]) as channel:
        status = await pb_grpc.AdminServiceStub(channel).NodeStatus(pb.NodeStatusRequest())
    expected = {n.name: n.expected_hash for n in status.nodes}
    for node in NODES:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{cluster.agent_ports[node]}") as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            state = await stub.Status(agent_pb2.AgentStatusRequest(), timeout=10)
            dump = await stub.Dump(agent_pb2.DumpRequest(), timeout=10)
        assert (state.node, state.ready, state.dataplane) == (node, True, "memory") and state.epoch >= 1
        assert state.state_hash == dump.state_hash == expected[node] != ""
        assert hashlib.sha256(dump.state_json.encode()).hexdigest() == dump.state_hash
        assert json.loads(dump.state_json)["policies"], f"{node} programmed no policy"
        assert (await cluster.http(node, "/readiness"))[0] == 200
        code, metrics = await cluster.http(node, "/metrics")
        assert code == 200 and "kaliko_agent_messages_total" in metrics
        assert "kaliko_int_dataplane_apply_time_seconds_count" in metrics


async def test_an_agent_without_a_snapshot_is_live_but_not_ready(cluster: Cluster) -> None:
    node = f"{RUN}-orphan"
    cluster.health_ports[node] = free_port()
    await cluster.processes.spawn(
        node, str(BIN / "kaliko-agent"), "--node", node, "--dataplane", "memory", "--kafka", cluster.kafka,
        "--mqtt", cluster.mqtt, "--controller", f"127.0.0.1:{free_port()}",  # no controller there
        "--health-port", str(cluster.health_ports[node]),
    )  # fmt: skip
    try:
        async with asyncio.timeout(30):
            while True:  # an external process coming up: there is no event to await
                with contextlib.suppress(aiohttp.ClientError):
                    if (await cluster.http(node, "/liveness"))[0] == 200:
                        break
                await asyncio.sleep(0.1)
        assert (await cluster.http(node, "/readiness"))[0] == 503
    finally:
        assert await cluster.processes.stop(node) == 0
        host, _, port = cluster.mqtt.rpartition(":")
        async with aiomqtt.Client(host, int(port), identifier=f"{node}-cleanup") as client:
            await client.publish(StatusTopics().topic(node), b"", qos=1, retain=True)


async def test_a_standby_takes_over_and_a_leader_without_its_key_exits_3(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Runs last: it stops the fixture's first controller and ends the second's term."""
    await cluster.start_controller("controller-b", cluster.controllers[1])
    async with grpc.aio.insecure_channel(cluster.controllers[1]) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), wait_for_ready=True, timeout=60)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING  # a standby
    assert (await cluster.http("controller-b", "/readiness"))[0] == 503
    assert (await cluster.http("controller-b", "/liveness"))[0] == 200
    assert (await cluster.http("controller-a", "/readiness"))[0] == 200
    status, metrics = await cluster.http("controller-a", "/metrics")
    assert status == 200 and "kaliko_leader 1.0" in metrics and "kaliko_admin_requests_total" in metrics
    async with asyncio.timeout(10):  # the standby says whom it waits for (its log: nothing to await)
        while "holds /kaliko/v1/leader" not in cluster.processes.log("controller-b"):
            await asyncio.sleep(0.1)
    assert f"{RUN}-controller-a holds" in cluster.processes.log("controller-b")
    stopped = time.monotonic()
    assert await cluster.processes.stop("controller-a") == 0  # graceful: resigns its lease
    await until_serving(cluster.controllers[1])
    took_over = time.monotonic() - stopped
    manifest = tmp_path / "policy.json"
    manifest.write_text(json.dumps(policy(8443)))
    code, out, err = await cluster.kalikoctl(
        "apply", "-f", str(manifest), "--wait", "--timeout", "30", "-o", "json"
    )
    assert code == 0, err  # --server lists both: the dead first one is skipped
    assert json.loads(out)["converged"] is True
    print(
        f"\nfailover: SIGTERM to the leader -> standby SERVING {took_over:.2f}s -> a kalikoctl apply --wait"
        f" through it converged on 3 nodes {time.monotonic() - stopped:.2f}s"
    )

    store = EtcdStore.from_endpoint(cluster.etcd)
    try:
        await store.delete(KeyLayout().leader)
    finally:
        await store.close()
    process = cluster.processes.running["controller-b"]
    assert await asyncio.wait_for(process.wait(), 30) == EXIT_LEADERSHIP_LOST
    assert "leadership lost" in cluster.processes.log("controller-b")
