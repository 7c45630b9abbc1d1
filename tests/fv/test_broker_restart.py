"""A real Kafka broker restart: SIGKILL, changes while it is down, start again; every node converges.

Proves, on a private KRaft broker (`lab.private_kafka.PrivateKafka`: the cached jars, its own ports
and storage, so the shared broker on 9092 is never touched), a private etcd, the shared Mosquitto,
a real ``kaliko-controller`` process and three in-process agents on the real adapters
(`lab.live_cluster`): after the broker is killed without a clean shutdown, a change is written
while it is down, and the broker is started again from the same storage, every node's programmed
state equals what the controller compiled for it (hash compared by `LiveCluster.wait_converged`,
also as reported over MQTT), the change made while the broker was down is programmed, the
pipeline keeps following changes afterwards, and no agent applied a position out of order.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from lab.live_cluster import LiveCluster
from lab.private_kafka import PrivateKafka
from lab.processes import ProcessFailed, ProcessSet, etcd_healthy, spawn_etcd

pytestmark = pytest.mark.fv


async def _until(check: Callable[[], bool], timeout: float) -> None:
    """Poll an external process (there is no event to await) until ``check()`` holds."""
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(check):
            await asyncio.sleep(0.1)


@pytest.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[str]:
    processes = ProcessSet(tmp_path / "etcd-logs")
    try:
        process, endpoint = spawn_etcd(processes, tmp_path / "etcd", "fv-broker-restart")
        await _until(lambda: process.exited() or etcd_healthy(endpoint), 30)
        if process.exited():
            pytest.fail(f"private etcd exited; see {process.log}")
        yield endpoint
    except ProcessFailed as err:
        pytest.fail(str(err))
    finally:
        await asyncio.to_thread(processes.stop)


@pytest.fixture
async def kafka(tmp_path: Path) -> AsyncIterator[PrivateKafka]:
    broker = PrivateKafka(tmp_path / "kafka", partitions=4)
    try:
        await asyncio.to_thread(broker.start)
        yield broker
    except ProcessFailed as err:
        pytest.fail(str(err))
    finally:
        await asyncio.to_thread(broker.stop)


@pytest.fixture
async def cluster(
    etcd: str, kafka: PrivateKafka, mqtt_endpoint: str, tmp_path: Path
) -> AsyncIterator[LiveCluster]:
    names = [f"fv-{uuid.uuid4().hex[:8]}-{i}" for i in range(1, 4)]
    live = LiveCluster(names, etcd=etcd, kafka=kafka.bootstrap, mqtt=mqtt_endpoint, log_dir=tmp_path / "logs")
    try:
        await live.start()
        yield live
        assert live.order_violations() == []
    finally:
        await live.stop()


def _pod(name: str, node: str, ip: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": app}},
        "spec": {"nodeName": node},
        "status": {"podIP": ip},
    }


POLICY = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "NetworkPolicy",
    "metadata": {"name": "web-from-client", "namespace": "shop"},
    "spec": {
        "selector": "app == 'web'",
        "types": ["Ingress"],
        "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": "app == 'client'"}}],
    },
}


def _members(cluster: LiveCluster, node: str) -> set[str]:
    programmed = cluster.agents[node].dataplane.programmed()
    return {member for ipset in programmed.ipsets.values() for member in ipset.members}


async def test_broker_kill_and_restart_then_every_node_converges(
    cluster: LiveCluster, kafka: PrivateKafka
) -> None:
    web, client, other = cluster.nodes
    revision = await cluster.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        _pod("web-1", web, "10.8.0.1", "web"),
        _pod("client-1", client, "10.8.0.2", "client"),
        POLICY,
    )
    await cluster.wait_converged(revision)
    assert _members(cluster, web) == {"10.8.0.2"}

    await asyncio.to_thread(kafka.kill)
    revision = await cluster.apply(_pod("client-2", other, "10.8.0.3", "client"))  # etcd only: broker down
    started = time.monotonic()
    await asyncio.to_thread(kafka.start)
    restarted = time.monotonic() - started
    await cluster.wait_converged(revision, timeout=90)
    print(f"\nbroker restart: ready {restarted:.1f}s after start; every node converged after it")
    assert _members(cluster, web) == {"10.8.0.2", "10.8.0.3"}

    revision = await cluster.apply(_pod("client-3", other, "10.8.0.4", "client"))
    await cluster.wait_converged(revision, timeout=30)
    assert "10.8.0.4" in _members(cluster, web)
