"""Status contract: the memory twin and Mosquitto (real broker, marked fv) keep node status the same way.

Every test uses fresh node names and clears the retained messages it created, because the shared
broker also serves other tests' controllers. Two clusters on one broker keep to their own topics:
the same node name in each is two different nodes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from iokit.backoff import Backoff
from iokit.memory_status import MemoryMqttBroker, MemoryStatusPublisher, MemoryStatusWatcher
from iokit.mqtt_status import MqttStatusPublisher, MqttStatusWatcher
from iokit.status import NodeStatus, StatusTopics

FAST: dict[str, Any] = {"keepalive": 5, "timeout": 5.0}


class Status:
    """Builds publishers/watchers of one adapter; stops them and clears retained topics afterwards."""

    def __init__(self, kind: str, endpoint: str = "") -> None:
        self.kind = kind
        self.endpoint = endpoint
        self.broker = MemoryMqttBroker() if kind == "memory" else None
        self.publishers: list[Any] = []
        self.watchers: list[Any] = []
        self.topics: set[str] = set()

    async def publisher(
        self, node: str, topics: StatusTopics = StatusTopics(), *, min_interval: float = 0.0
    ) -> Any:
        self.topics.add(topics.topic(node))
        if self.broker is not None:
            publisher: Any = MemoryStatusPublisher(
                self.broker, node, topics=topics, min_interval=min_interval
            )
        else:
            backoff = Backoff(0.05, 0.5, seed=1)
            publisher = MqttStatusPublisher(
                node, self.endpoint, topics=topics, backoff=backoff, min_interval=min_interval, **FAST
            )
        await publisher.start()
        self.publishers.append(publisher)
        return publisher

    async def watcher(self, topics: StatusTopics = StatusTopics()) -> Any:
        if self.broker is not None:
            watcher: Any = MemoryStatusWatcher(self.broker, topics=topics)
            await watcher.start()
        else:
            watcher = MqttStatusWatcher(self.endpoint, topics=topics, **FAST)
            await watcher.start()
            async with asyncio.timeout(10):
                await watcher.wait_subscribed()
        self.watchers.append(watcher)
        return watcher

    async def raw(self, topic: str, payload: bytes, retain: bool = True) -> None:
        self.topics.add(topic)
        if self.broker is not None:
            self.broker.publish(topic, payload, retain=retain)
            return
        host, _, port = self.endpoint.rpartition(":")
        async with aiomqtt.Client(host, int(port)) as client:
            await client.publish(topic, payload, qos=1, retain=retain)

    async def close(self) -> None:
        for publisher in self.publishers:
            await publisher.stop()
        for watcher in self.watchers:
            await watcher.stop()
        for topic in self.topics:
            await self.raw(topic, b"")


@pytest.fixture(params=["memory", pytest.param("mosquitto", marks=pytest.mark.fv)])
async def status(request: pytest.FixtureRequest) -> AsyncIterator[Status]:
    made = (
        Status("memory")
        if request.param == "memory"
        else Status("real", request.getfixturevalue("mqtt_endpoint"))
    )
    yield made
    await made.close()


def fresh_node() -> str:
    return f"iokit-test-{uuid.uuid4().hex[:10]}"


async def next_for(watcher: Any, node: str, **expected: Any) -> dict[str, Any]:
    """The next status of ``node`` whose fields include ``expected`` (others' and older ones skipped)."""
    statuses = aiter(watcher)
    async with asyncio.timeout(15):
        while True:
            seen: NodeStatus = await anext(statuses)
            if seen[0] == node and all(seen[1].get(k) == v for k, v in expected.items()):
                return seen[1]


def report(node: str, seq: int) -> dict[str, Any]:
    return {
        "node": node,
        "online": True,
        "ready": True,
        "epoch": 7,
        "seq": seq,
        "revision": 100 + seq,
        "last_error": None,
        "state_hash": "abc",
    }


async def test_retained_status_is_seen_by_a_late_subscriber(status: Status) -> None:
    node = fresh_node()
    publisher = await status.publisher(node)
    await publisher.publish(report(node, 1))
    watcher = await status.watcher()
    assert await next_for(watcher, node) == report(node, 1)


async def test_live_updates_arrive_in_order(status: Status) -> None:
    node = fresh_node()
    watcher = await status.watcher()
    publisher = await status.publisher(node)
    for seq in range(1, 4):
        await publisher.publish(report(node, seq))
    assert [(await next_for(watcher, node))["seq"] for _ in range(3)] == [1, 2, 3]


async def test_graceful_stop_says_offline(status: Status) -> None:
    node = fresh_node()
    live = await status.watcher()
    publisher = await status.publisher(node)
    await publisher.publish(report(node, 1))
    await next_for(live, node, online=True)
    await publisher.stop(graceful=True)
    assert await next_for(live, node) == {"node": node, "online": False}
    late = await status.watcher()
    assert await next_for(late, node) == {"node": node, "online": False}


async def test_abrupt_disconnect_fires_the_will(status: Status) -> None:
    node = fresh_node()
    live = await status.watcher()
    publisher = await status.publisher(node)
    await publisher.publish(report(node, 1))
    await next_for(live, node, online=True)
    await publisher.stop(graceful=False)
    assert await next_for(live, node) == {"node": node, "online": False}
    late = await status.watcher()
    assert (await next_for(late, node))["online"] is False


async def test_reconnect_resends_the_latest_status(status: Status) -> None:
    node = fresh_node()
    live = await status.watcher()
    publisher = await status.publisher(node)
    await publisher.publish(report(node, 5))
    await next_for(live, node, seq=5)
    publisher.drop_connection()
    assert await next_for(live, node) == {"node": node, "online": False}
    assert await next_for(live, node, online=True) == report(node, 5)
    assert publisher.connects == 2


async def test_two_clusters_on_one_broker_see_only_their_own_nodes(status: Status) -> None:
    node, suffix = fresh_node(), uuid.uuid4().hex[:8]
    clusters = {name: StatusTopics(f"{name}-{suffix}") for name in ("iokit-a", "iokit-b")}
    for seq, topics in enumerate(clusters.values(), start=1):  # the same node name in both clusters
        await (await status.publisher(node, topics)).publish(report(node, seq))
    for seq, topics in enumerate(clusters.values(), start=1):
        watcher = await status.watcher(topics)
        sentinel = fresh_node()
        await (await status.publisher(sentinel, topics)).publish(report(sentinel, 0))
        seen: list[NodeStatus] = []
        async with asyncio.timeout(15):
            async for item in watcher:
                if item[0] == sentinel:
                    break
                seen.append(item)
        assert seen == [(node, report(node, seq))], f"{topics.cluster} saw {seen}"


async def test_malformed_payloads_are_counted_and_skipped(status: Status) -> None:
    node = fresh_node()
    watcher = await status.watcher()
    topic = StatusTopics().topic(node)
    for bad in [
        b"{not json",
        b"[1, 2]",
        b'{"node": "someone-else", "online": true}',
        b'{"node": "%s"}' % node.encode(),
    ]:
        await status.raw(topic, bad, retain=False)
    await status.raw(topic, b'{"node": "%s", "online": true, "seq": 9}' % node.encode(), retain=False)
    assert (await next_for(watcher, node))["seq"] == 9
    # The shared broker may also carry other tests' malformed messages; the twin carries only ours.
    assert watcher.malformed == 4 if status.kind == "memory" else watcher.malformed >= 4


@pytest.mark.fv
async def test_killed_process_leaves_offline_via_the_will(mqtt_endpoint: str) -> None:
    node = fresh_node()
    script = (
        "import asyncio, sys\n"
        "from iokit.mqtt_status import MqttStatusPublisher\n"
        "async def main():\n"
        f"    p = MqttStatusPublisher({node!r}, {mqtt_endpoint!r}, keepalive=5)\n"
        "    await p.start()\n"
        f"    await p.publish({{'online': True, 'seq': 1}})\n"
        "    print('ready', flush=True)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    status = Status("real", mqtt_endpoint)
    live = await status.watcher()
    status.topics.add(StatusTopics().topic(node))
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, cwd=os.getcwd()
    )
    try:
        async with asyncio.timeout(20):
            assert child.stdout is not None
            assert (await child.stdout.readline()).strip() == b"ready"
        assert (await next_for(live, node, online=True))["seq"] == 1
        child.send_signal(signal.SIGKILL)
        await child.wait()
        assert await next_for(live, node) == {"node": node, "online": False}
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await status.close()


async def test_reports_are_spaced_and_the_newest_wins_meanwhile(status: Status) -> None:
    node = fresh_node()
    watcher = await status.watcher()
    publisher = await status.publisher(node, min_interval=0.4)
    await publisher.publish(report(node, 1))  # after a quiet spell: sent at once
    first = await next_for(watcher, node, seq=1)
    first_at = time.monotonic()
    for seq in range(2, 8):  # all within the interval: they collapse into the newest
        publisher.offer(report(node, seq))
        await asyncio.sleep(0.02)
    seen = await next_for(watcher, node)
    waited = time.monotonic() - first_at
    assert first["seq"] == 1 and seen["seq"] == 7, seen
    assert 0.2 <= waited < 5.0, waited


async def test_report_interval_must_be_a_finite_non_negative_number() -> None:
    with pytest.raises(ValueError, match="min_interval"):
        MqttStatusPublisher("node-x", "127.0.0.1:1883", min_interval=-1)
