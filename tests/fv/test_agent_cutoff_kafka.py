"""The agent's max_lag cut-off over the real Kafka broker: skip to the partition's end, resync.

A private 4-partition topic. The agent's clock is skewed ahead to make what it reads look old (no
sleeping): it must seek its `KafkaDiffSubscriber` to the end, never hand the skipped messages to
the applier, fetch a snapshot covering them, and then apply fresh messages as usual.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from iokit.bus import DiffMessage, one_by_one
from iokit.kafka_bus import KafkaDiffSubscriber
from iokit.kafka_publisher import KafkaDiffPublisher
from node_agent.agent import NodeAgent
from node_agent.dataplane.memory import MemoryDataPlane
from policycore.diff import IpSetDelta, IpSetReplace, NodeDiff, StreamPosition
from policycore.ir import IpSet
from wire.codec import encode_diff

pytestmark = pytest.mark.fv
SET = "s:web"


async def _admin(bootstrap: str, action: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if action == "create":
            await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
        else:
            await admin.delete_topics([topic])
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def kafka_topic(kafka_bootstrap: str) -> Iterator[str]:
    topic = f"kaliko.test-cutoff-{uuid.uuid4().hex[:12]}"
    with ThreadPoolExecutor(1) as thread:  # the tests' loops are running: the admin gets its own
        thread.submit(asyncio.run, _admin(kafka_bootstrap, "create", topic)).result()
        yield topic
        thread.submit(asyncio.run, _admin(kafka_bootstrap, "delete", topic)).result()


class Source:
    """One node's stream of a growing ip set, and snapshots of it."""

    def __init__(self, node: str) -> None:
        self.node, self.seq, self.members, self.fetches = node, 0, set[str](), 0

    def diff(self) -> NodeDiff:
        self.seq += 1
        member = f"10.0.0.{self.seq}"
        self.members.add(member)
        op = IpSetDelta(SET, frozenset({member}), frozenset())
        return NodeDiff(self.node, StreamPosition(1, self.seq, self.seq), (op,))

    async def snapshot(self, node: str) -> NodeDiff:
        self.fetches += 1
        ipset = IpSet(SET, "ip", frozenset(self.members))
        return NodeDiff(node, StreamPosition(1, self.seq, self.seq), (IpSetReplace(ipset),), True)


class Reports:
    def __init__(self, node: str) -> None:
        self.node, self.seq, self._changed = node, -1, asyncio.Event()

    async def start(self) -> None:
        return None

    def offer(self, status: Mapping[str, Any]) -> None:
        self.seq = int(status["seq"])
        self._changed.set()

    async def publish(self, status: Mapping[str, Any]) -> None:
        self.offer(status)

    async def stop(self, graceful: bool = True) -> None:
        return None

    async def until(self, seq: int) -> None:
        async with asyncio.timeout(20):
            while self.seq < seq:
                self._changed.clear()
                await self._changed.wait()


class Gated:
    """Holds each batch it read until ``open`` is set; records the payloads it handed over."""

    def __init__(self, inner: KafkaDiffSubscriber) -> None:
        self.inner, self.node, self.partition = inner, inner.node, -1
        self.open, self.holding = asyncio.Event(), asyncio.Event()
        self.open.set()
        self.handed: list[bytes] = []

    async def start(self) -> None:
        await self.inner.start()
        self.partition = self.inner.partition

    def __aiter__(self) -> AsyncIterator[DiffMessage]:
        return one_by_one(self.batches())

    async def batches(self) -> AsyncGenerator[list[DiffMessage], None]:
        async for batch in self.inner.batches():
            if not self.open.is_set():
                self.holding.set()
            await self.open.wait()
            self.handed += [message.payload for message in batch]
            yield batch

    async def skip_to_end(self) -> None:
        await self.inner.skip_to_end()

    async def position(self) -> int:
        return await self.inner.position()

    async def stop(self) -> None:
        await self.inner.stop()


async def test_an_agent_too_far_behind_seeks_to_the_end_and_resyncs(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    node = f"node-{uuid.uuid4().hex[:8]}"
    source, reports, skew = Source(node), Reports(node), [0.0]
    subscriber = Gated(KafkaDiffSubscriber(kafka_bootstrap, node, kafka_topic))
    dataplane = MemoryDataPlane()
    agent = NodeAgent(
        node,
        subscriber=subscriber,
        status=reports,
        fetch_snapshot=source.snapshot,
        dataplane=dataplane,
        max_lag=10.0,
        clock=lambda: time.time() + skew[0],
    )
    publisher = KafkaDiffPublisher(kafka_bootstrap, kafka_topic)
    await publisher.start()
    task = asyncio.create_task(agent.run())
    try:
        async with asyncio.timeout(20):
            await agent.started.wait()
        await reports.until(0)
        subscriber.open.clear()
        await publisher.publish(node, encode_diff(source.diff()))
        await publisher.flush()
        async with asyncio.timeout(20):
            await subscriber.holding.wait()  # read and held: the node is busy
        skipped = [encode_diff(source.diff()) for _ in range(4)]
        for payload in skipped:
            await publisher.publish(node, payload)
        await publisher.flush()
        skew[0] = 20.0  # what it holds is now 20 s old
        subscriber.open.set()
        await reports.until(5)
        assert agent.cutoffs == 1 and source.fetches == 2
        assert not set(subscriber.handed) & set(skipped), "skipped messages reached the agent"

        skew[0] = 0.0
        await publisher.publish(node, encode_diff(source.diff()))
        await publisher.flush()
        await reports.until(6)
        assert agent.cutoffs == 1 and source.fetches == 2
        ipset = dataplane.programmed().ipsets[SET]
        assert set(ipset.members) == source.members
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await agent.stop()
        await publisher.stop()
