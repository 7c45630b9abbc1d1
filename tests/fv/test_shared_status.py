"""The load harness's shared status connection on the real Mosquitto (fv).

Many simulated nodes' statuses go over one connection: each arrives retained on its own topic
where the controller's watcher reads it, a node's reports within its interval collapse into the
newest, a cut connection is re-established and re-sends every node's newest, and a node that
stops says offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from test_adapters_status import next_for

from iokit.mqtt_status import MqttStatusWatcher, _cut
from iokit.status import StatusTopics
from loadtest.shared_status import SharedStatusConnection

pytestmark = pytest.mark.fv


async def latest_of(watcher: Any, want: dict[str, int]) -> dict[str, int]:
    """Read statuses until every node in ``want`` has shown that seq; the seqs seen last."""
    seen: dict[str, int] = {}
    statuses = aiter(watcher)
    async with asyncio.timeout(15):
        while any(seen.get(node) != seq for node, seq in want.items()):
            node, status = await anext(statuses)
            seen[node] = status.get("seq", -1)
    return seen


@pytest.fixture
async def topics() -> StatusTopics:
    return StatusTopics(f"shared{uuid.uuid4().hex[:8]}")  # a cluster of its own: no retained leftovers


@pytest.fixture
async def watcher(mqtt_endpoint: str, topics: StatusTopics) -> AsyncIterator[MqttStatusWatcher]:
    made = MqttStatusWatcher(mqtt_endpoint, topics=topics, keepalive=5, timeout=5.0)
    await made.start()
    async with asyncio.timeout(10):
        await made.wait_subscribed()
    yield made
    await made.stop()


@pytest.fixture
async def connection(mqtt_endpoint: str, topics: StatusTopics) -> AsyncIterator[SharedStatusConnection]:
    made = SharedStatusConnection(mqtt_endpoint, "fv", topics, min_interval=0.3)
    running = asyncio.create_task(made.run())
    yield made
    await made.stop()
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


async def test_many_nodes_report_over_one_connection_and_the_newest_wins(
    connection: SharedStatusConnection, watcher: MqttStatusWatcher
) -> None:
    nodes = [f"node-{index}" for index in range(50)]
    publishers = [connection.publisher(node) for node in nodes]
    for publisher in publishers:
        publisher.offer({"online": True, "seq": 1})
    await latest_of(watcher, dict.fromkeys(nodes, 1))
    for seq in range(2, 6):  # within the interval: only the newest goes when it ends
        publishers[0].offer({"online": True, "seq": seq})
    seen = await next_for(watcher, nodes[0])
    assert seen["seq"] == 5, seen
    await asyncio.sleep(0.5)  # the acknowledgement of the last report is counted after it arrived
    assert connection.published == len(nodes) + 1  # seqs 2-4 collapsed into 5


async def test_a_cut_connection_comes_back_and_resends_every_nodes_newest(
    connection: SharedStatusConnection, watcher: MqttStatusWatcher, mqtt_endpoint: str, topics: StatusTopics
) -> None:
    connection.publisher("node-a").offer({"online": True, "seq": 7})
    connection.publisher("node-b").offer({"online": True, "seq": 3})
    await latest_of(watcher, {"node-a": 7, "node-b": 3})
    sent = connection.published
    assert connection._client is not None
    _cut(connection._client)
    async with asyncio.timeout(15):
        while connection.connects < 2 or connection.published < sent + 2:
            await asyncio.sleep(0.05)
    late = MqttStatusWatcher(mqtt_endpoint, topics=topics, keepalive=5, timeout=5.0)
    await late.start()
    try:
        assert (await next_for(late, "node-a"))["seq"] == 7  # retained, re-sent after the reconnect
    finally:
        await late.stop()


async def test_a_stopping_node_says_offline(
    connection: SharedStatusConnection, watcher: MqttStatusWatcher
) -> None:
    publisher = connection.publisher("node-c")
    publisher.offer({"online": True, "seq": 1})
    await next_for(watcher, "node-c", seq=1)
    await publisher.stop()
    assert (await next_for(watcher, "node-c"))["online"] is False
