"""The distributed pipeline under faults, on the real etcd, Kafka and Mosquitto (marked fv).

Proves, with real ``kaliko-controller`` processes and in-process agents on the real adapters
(`lab.live_cluster`): malformed values written straight into etcd (not JSON, wrong schema,
1.4 MiB, an unparsable selector) are counted in ``kaliko_invalid_resources_total`` and treated as
absent while the controller stays ready; a garbage Kafka record keyed for a node is counted and
skipped by its agent; after an agent restart, a leader failover (two controllers; the leader is
SIGKILLed and the standby takes over with a new epoch within a few lease TTLs) and a broker pause
(SIGSTOP/SIGCONT of the Kafka JVM), every node's programmed state — read from the agent, and as
reported over MQTT — equals what the leader compiled for it, and no agent ever applied a
position out of order.

Isolation: etcd is private to each test (the leader and epoch keys are cluster-wide, and other
test runs elect controllers on the shared etcd); Kafka and Mosquitto are shared, so node names
are unique per test (``fv-<uuid>-i``) and the nodes' retained statuses are cleared afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiokafka import AIOKafkaProducer

from controller.resource_store import KeyLayout
from iokit.bus import partition_for
from iokit.etcd_store import EtcdStore
from lab.live_cluster import LiveCluster
from lab.processes import ProcessFailed, ProcessSet, etcd_healthy, spawn_etcd
from policycore.model import ResourceKey

pytestmark = pytest.mark.fv


@pytest.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[str]:
    """A private etcd on free loopback ports (removed with the test's tmp_path)."""
    processes = ProcessSet(tmp_path / "logs")
    try:
        process, endpoint = spawn_etcd(processes, tmp_path / "etcd", "fv-faults")
    except ProcessFailed as err:
        pytest.fail(str(err))

    def healthy() -> bool:
        if process.exited():
            pytest.fail(f"private etcd exited; see {process.log}")
        return etcd_healthy(endpoint)

    await _until(healthy, 30, "private etcd healthy")
    yield endpoint
    await asyncio.to_thread(processes.stop)


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll an external process (there is no event to await) until ``check()`` holds."""
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(check):
            await asyncio.sleep(0.1)


MakeCluster = Callable[..., Awaitable[LiveCluster]]


@pytest.fixture
async def make_cluster(
    etcd: str, kafka_bootstrap: str, mqtt_endpoint: str, tmp_path: Path
) -> AsyncIterator[MakeCluster]:
    clusters: list[LiveCluster] = []

    async def make(controllers: int = 1, nodes: int = 3) -> LiveCluster:
        names = [f"fv-{uuid.uuid4().hex[:8]}-{i}" for i in range(1, nodes + 1)]
        cluster = LiveCluster(
            names,
            etcd=etcd,
            kafka=kafka_bootstrap,
            mqtt=mqtt_endpoint,
            log_dir=tmp_path / "logs",
            controllers=controllers,
        )
        clusters.append(cluster)
        await cluster.start()
        return cluster

    yield make
    for cluster in clusters:
        violations = cluster.order_violations()
        await cluster.stop()
        assert violations == []


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _pod(name: str, node: str, ip: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": labels},
        "spec": {"nodeName": node},
        "status": {"podIP": ip},
    }


def _policy(name: str = "web-from-client", selector: str = "app == 'web'") -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "selector": selector,
            "types": ["Ingress"],
            "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": "app == 'client'"}}],
        },
    }


async def _shop(cluster: LiveCluster) -> int:
    first, second, third = cluster.nodes
    revision = await cluster.apply(
        _namespace("shop"),
        _pod("web-1", first, "10.7.0.1", app="web"),
        _pod("client-1", second, "10.7.0.2", app="client"),
        _pod("db-1", third, "10.7.0.3", app="db"),
        _policy(),
    )
    await cluster.wait_converged(revision)
    return revision


def _policies(cluster: LiveCluster, node: str) -> set[str]:
    return set(cluster.agents[node].dataplane.programmed().policies)


async def _put_raw(endpoint: str, writes: dict[str, bytes]) -> int:
    store = EtcdStore.from_endpoint(endpoint)
    try:
        revision = 0
        for key, value in writes.items():
            revision = await store.put(key, value)
        return revision
    finally:
        await store.close()


def _calico_key(name: str) -> str:
    return KeyLayout().etcd_key(ResourceKey("NetworkPolicy", "shop", name))


async def test_malformed_etcd_values_are_counted_and_treated_as_absent(
    make_cluster: MakeCluster, etcd: str
) -> None:
    cluster = await make_cluster()
    web = cluster.nodes[0]
    await _shop(cluster)
    assert _policies(cluster, web), "the valid policy is programmed on the web node"

    too_big = json.dumps({**_policy("too-big"), "padding": "x" * (1400 * 1024)}).encode()
    wrong_schema = json.dumps(
        {**_policy("wrong-schema"), "spec": {"selector": "all()", "ingress": "all"}}
    ).encode()
    revision = await _put_raw(
        etcd,
        {
            _calico_key("web-from-client"): b"\x00\xffnot json at all {",  # overwrites the valid policy
            _calico_key("wrong-schema"): wrong_schema,
            _calico_key("too-big"): too_big,
            _calico_key("bad-selector"): json.dumps(_policy("bad-selector", "app == 'web' &&& (")).encode(),
        },
    )
    await cluster.wait_converged(revision)
    leader = await cluster.wait_leader()
    metrics = cluster.metrics(leader)
    assert metrics["kaliko_invalid_resources_total"] == 4
    assert metrics["kaliko_compiled_revision"] >= revision
    assert await cluster.serving(leader) and cluster.controllers[leader].ready()
    assert not _policies(cluster, web), "a value that does not decode counts as a deletion"

    # A valid value under the same key applies again; the others stay absent.
    revision = await cluster.apply(_policy())
    await cluster.wait_converged(revision)
    assert _policies(cluster, web)


async def test_garbage_kafka_record_is_counted_and_skipped(
    make_cluster: MakeCluster, kafka_bootstrap: str
) -> None:
    cluster = await make_cluster()
    await _shop(cluster)
    web = cluster.agents[cluster.nodes[0]]
    consumed, snapshots = web.subscriber.consumed, web.agent.applier.snapshots
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        partitions = len(await producer.partitions_for(cluster.topic))
        # Not protobuf at all; then a valid NodeMessage naming another node (ignored as stale).
        for payload in (b"\xff\xff\xff garbage", b"\x0a\x03abc"):
            await producer.send_and_wait(
                cluster.topic, payload, key=web.node.encode(), partition=partition_for(web.node, partitions)
            )
    finally:
        await producer.stop()
    async with asyncio.timeout(30):
        await web.subscriber.wait_consumed(consumed + 2)
    assert web.metric("kaliko_agent_malformed_messages_total") == 1

    revision = await cluster.apply(_pod("client-2", cluster.nodes[2], "10.7.0.4", app="client"))
    await cluster.wait_converged(revision)
    assert web.agent.applier.snapshots == snapshots, "the agent kept following the stream"


async def test_agent_restart_resyncs_to_the_compiled_state(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster()
    await _shop(cluster)
    web = cluster.nodes[0]
    await cluster.stop_agent(web, graceful=False)
    revision = await cluster.apply(_pod("client-2", cluster.nodes[2], "10.7.0.4", app="client"))
    restarted = cluster.start_agent(web)
    await cluster.wait_converged(revision)
    assert restarted.metric("kaliko_agent_snapshots") == 1
    members = {m for s in restarted.dataplane.programmed().ipsets.values() for m in s.members}
    assert {"10.7.0.2", "10.7.0.4"} <= members


async def test_leader_failover_new_epoch_and_every_node_resyncs(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster(controllers=2)
    await _shop(cluster)
    leader = await cluster.wait_leader()
    standby = 1 - leader
    old_epoch = cluster.metrics(leader)["kaliko_epoch"]
    assert not await cluster.serving(standby)

    killed_at = time.monotonic()
    cluster.kill_controller(leader, signal.SIGKILL)
    await cluster.wait_serving(standby, timeout=30)
    failover = time.monotonic() - killed_at
    new_epoch = cluster.metrics(standby)["kaliko_epoch"]
    assert new_epoch > old_epoch
    print(
        f"\nleader failover: standby serving {failover:.2f}s after SIGKILL (lease TTL {cluster.lease_ttl}s)"
    )
    assert failover < 5 * cluster.lease_ttl, f"failover took {failover:.1f}s"

    revision = await cluster.apply(_pod("client-2", cluster.nodes[2], "10.7.0.4", app="client"))
    await cluster.wait_converged(revision)
    for node, running in cluster.agents.items():
        position = running.agent.applier.programmed_position
        assert position is not None and position.epoch == new_epoch, node

    # The killed controller comes back as a standby and does not serve.
    cluster.start_controller(leader)
    await _until(cluster.controllers[leader].live, 30, "restarted controller answering /liveness")
    assert not cluster.controllers[leader].ready()
    assert await cluster.serving(standby) and not await cluster.serving(leader)


def _kafka_pid(bootstrap: str) -> int:
    """The pid of the Kafka JVM listening on ``bootstrap`` (whoever started it)."""
    port = int(bootstrap.rpartition(":")[2])
    for connection in psutil.net_connections(kind="tcp"):
        listening = connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
        if (
            listening
            and connection.pid
            and "kafka.Kafka" in " ".join(psutil.Process(connection.pid).cmdline())
        ):
            return connection.pid
    pytest.fail(f"no Kafka broker process listens on {bootstrap}; run `make services`")


async def test_broker_pause_then_every_node_converges(
    make_cluster: MakeCluster, kafka_bootstrap: str
) -> None:
    cluster = await make_cluster()
    await _shop(cluster)
    pid = _kafka_pid(kafka_bootstrap)
    os.kill(pid, signal.SIGSTOP)  # shared broker: keep the pause short, and always resume it
    try:
        revision = await cluster.apply(_pod("client-2", cluster.nodes[2], "10.7.0.4", app="client"))
        await asyncio.sleep(3.0)  # the fault *is* time passing with the broker frozen
    finally:
        os.kill(pid, signal.SIGCONT)
    await cluster.wait_converged(revision, timeout=60)
    members = {
        m for s in cluster.agents[cluster.nodes[0]].dataplane.programmed().ipsets.values() for m in s.members
    }
    assert "10.7.0.4" in members
