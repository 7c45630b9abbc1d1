"""Two Kaliko clusters with the same node names on the same real etcd, Kafka and Mosquitto keep apart.

Proves, with real processes (``kalikoctl lab up --backend services``'s launcher: one
``kaliko-controller --cluster`` and two ``kaliko-agent --cluster`` processes per lab, nodes
``node-1`` and ``node-2`` in both) on the shared services (127.0.0.1:2379, :9092, :1883):

* each controller leads its own cluster (two leader keys, two identities, both SERVING) — neither
  waits as the other's standby — and a third lab naming an already-led cluster is refused at once;
* a policy applied in one cluster converges there and reaches none of the other's agents: their
  programmed states (AgentService Dump) stay policy-free and their compiled hashes unchanged;
* status reports do not cross: each controller knows exactly its two nodes, and the state hash
  each reports is the one its own agent programmed, although the other cluster's node of the same
  name reports a different one at the same time.

Everything the labs leave on the shared services is removed afterwards: their etcd prefixes
(``/<cluster>/``), Kafka topics (``<cluster>.node-diffs``) and retained MQTT statuses.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import grpc
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from iokit.cluster_name import diff_topic
from iokit.etcd_store import EtcdStore
from iokit.status import StatusTopics
from lab.cluster import ClusterSpec, LabError, LabState, down, up
from lab.cluster_leader import leader_of
from lab.processes import free_port
from wire.gen.kaliko.v1 import admin_pb2 as pb
from wire.gen.kaliko.v1 import admin_pb2_grpc as pb_grpc
from wire.gen.kaliko.v1 import agent_pb2, agent_pb2_grpc

pytestmark = pytest.mark.fv

NODES = ["node-1", "node-2"]
RUN = uuid.uuid4().hex[:6]


def shop(policy_port: int) -> list[dict[str, Any]]:
    """A namespace, a web pod on node-1, a client pod on node-2, and a policy letting client reach web."""
    pods = [
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": role, "namespace": "shop", "labels": {"app": role}},
         "spec": {"nodeName": node}, "status": {"podIP": ip, "phase": "Running"}}
        for role, node, ip in (("web", "node-1", "10.98.1.1"), ("client", "node-2", "10.98.2.1"))
    ]  # fmt: skip
    policy = {
        "apiVersion": "kaliko.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "selector": "app == 'web'",
            "types": ["Ingress"],
            "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": "app == 'client'"},
                         "destination": {"ports": [policy_port]}}],
        },
    }  # fmt: skip
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}, *pods, policy]


class Lab:
    """One running services lab and the calls a test makes to it."""

    def __init__(self, state: LabState) -> None:
        self.state = state
        self.cluster = state.spec.cluster

    def admin(self, method: str, request: Any, timeout: float = 60.0) -> Any:
        with grpc.insecure_channel(self.state.admin) as channel:
            return getattr(pb_grpc.AdminServiceStub(channel), method)(request, timeout=timeout)

    def apply(self, documents: list[dict[str, Any]]) -> int:
        written = self.admin("Apply", pb.WriteRequest(documents_json=[json.dumps(d) for d in documents]))
        reply = self.admin(
            "WaitConverged", pb.WaitConvergedRequest(revision=written.revision, timeout_seconds=60), 70
        )
        assert reply.converged, f"{self.cluster}: revision {written.revision} lagging {list(reply.lagging)}"
        return int(written.revision)

    def node_status(self) -> dict[str, Any]:
        return {n.name: n for n in self.admin("NodeStatus", pb.NodeStatusRequest(), 10).nodes}

    def dump(self, node: str) -> agent_pb2.DumpReply:
        port = self.state.processes.get(node).ports["grpc"]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply: agent_pb2.DumpReply = agent_pb2_grpc.AgentServiceStub(channel).Dump(
                agent_pb2.DumpRequest(), timeout=10
            )
            return reply

    def policies(self, node: str) -> list[Any]:
        return list(json.loads(self.dump(node).state_json)["policies"])

    def reports_match_agents(self) -> dict[str, tuple[str, str, str]]:
        """node → (reported, compiled, programmed) hashes, once every node reports what it programmed."""
        deadline = time.monotonic() + 30
        while True:  # the controller hears a report shortly after WaitConverged: nothing to await here
            status = self.node_status()
            hashes = {
                n: (status[n].state_hash, status[n].expected_hash, self.dump(n).state_hash) for n in NODES
            }
            if set(status) == set(NODES) and all(len(set(h)) == 1 for h in hashes.values()):
                return hashes
            assert time.monotonic() < deadline, f"{self.cluster}: nodes {sorted(status)}, hashes {hashes}"
            time.sleep(0.2)


def spec(tmp_path: Path, name: str, cluster: str, etcd: str, kafka: str, mqtt: str) -> ClusterSpec:
    return ClusterSpec(
        nodes=len(NODES),
        backend="services",
        listen=f"127.0.0.1:{free_port()}",
        etcd=etcd,
        kafka=kafka,
        mqtt=mqtt,
        run_dir=str(tmp_path / name),
        cluster=cluster,
    )


async def _remove_leftovers(clusters: list[str], etcd: str, kafka: str, mqtt: str) -> None:
    store = EtcdStore.from_endpoint(etcd)
    try:
        for cluster in clusters:
            entries, _ = await store.list(f"/{cluster}/")
            for entry in entries:
                await store.delete(entry.key)
    finally:
        await store.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        topics = [diff_topic(c) for c in clusters if diff_topic(c) in existing]
        if topics:
            await admin.delete_topics(topics)
    finally:
        await admin.close()
    host, _, port = mqtt.rpartition(":")
    async with aiomqtt.Client(host, int(port), identifier=f"fv-clusters-{RUN}-cleanup") as client:
        for cluster in clusters:
            for node in NODES:
                await client.publish(StatusTopics(cluster).topic(node), b"", qos=1, retain=True)


@pytest.fixture
def labs(
    tmp_path: Path, etcd_endpoint: str, kafka_bootstrap: str, mqtt_endpoint: str
) -> Iterator[tuple[Lab, Lab]]:
    clusters = [f"fva{RUN}", f"fvb{RUN}"]
    started: list[str] = []
    try:
        running = []
        for name, cluster in zip(("a", "b"), clusters, strict=True):
            lab_spec = spec(tmp_path, name, cluster, etcd_endpoint, kafka_bootstrap, mqtt_endpoint)
            started.append(lab_spec.run_dir)
            running.append(Lab(up(lab_spec)))
        yield running[0], running[1]
    finally:
        for run_dir in reversed(started):
            down(run_dir)
        asyncio.run(_remove_leftovers(clusters, etcd_endpoint, kafka_bootstrap, mqtt_endpoint))


def test_two_clusters_with_the_same_node_names_converge_independently(
    labs: tuple[Lab, Lab], tmp_path: Path, etcd_endpoint: str, kafka_bootstrap: str, mqtt_endpoint: str
) -> None:
    a, b = labs
    assert [a.state.spec.node_names, b.state.spec.node_names] == [NODES, NODES]

    # Each controller leads its own cluster: two leader keys, two identities, both ready.
    leaders = [leader_of(etcd_endpoint, a.cluster), leader_of(etcd_endpoint, b.cluster)]
    assert None not in leaders and leaders[0] != leaders[1], leaders
    assert a.state.processes.get("controller").ready() and b.state.processes.get("controller").ready()

    # A cluster someone leads is refused at once, before any process starts.
    third = spec(tmp_path, "c", a.cluster, etcd_endpoint, kafka_bootstrap, mqtt_endpoint)
    asked = time.monotonic()
    with pytest.raises(LabError, match=f"cluster '{a.cluster}' .* already led by controller '{leaders[0]}'"):
        up(third)
    assert time.monotonic() - asked < 15 and not Path(third.run_dir, "state.json").exists()

    b_before = b.reports_match_agents()
    a_before = a.reports_match_agents()
    assert a_before == b_before  # two empty clusters: the same (empty) state on each node

    # A policy in A converges in A and reaches neither of B's agents.
    a.apply(shop(80))
    assert a.policies("node-1") and not b.policies("node-1") and not b.policies("node-2")
    a_after = a.reports_match_agents()
    assert b.reports_match_agents() == b_before
    assert a_after["node-1"] != b_before["node-1"], "A's node-1 reports A's state, B's node-1 B's"

    # And the other way round: B's own (different) policy leaves A as it was.
    b.apply(shop(443))
    assert b.policies("node-1") and b.reports_match_agents()["node-1"] != a_after["node-1"]
    assert a.reports_match_agents() == a_after
    assert json.loads(a.dump("node-1").state_json) != json.loads(b.dump("node-1").state_json)
