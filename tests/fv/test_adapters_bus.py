"""Bus contract: the memory twin and Kafka (real broker, marked fv) deliver node diffs the same way.

That includes the fall-behind contract: a batch is everything already waiting, `skip_to_end`
drops the backlog and keeps every later message, and a multi-node subscriber's full queue
overflows into a resync marker without holding up the other nodes.

Kafka tests use a private 4-partition topic created for this module, so their traffic and their
offsets are their own. Node names are unique per test.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from iokit.bus import BusError, DiffMessage, PublishError, partition_for
from iokit.kafka_bus import KafkaDiffSubscriber
from iokit.kafka_multi_node import KafkaMultiNodeSubscriber
from iokit.kafka_publisher import KafkaDiffPublisher
from iokit.memory_bus import (
    MemoryBroker,
    MemoryDiffPublisher,
    MemoryDiffSubscriber,
    MemoryMultiNodeSubscriber,
)

PARTITIONS = 4


async def _admin(bootstrap: str, action: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if action == "create":
            await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
        else:
            await admin.delete_topics([topic])
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def kafka_topic(kafka_bootstrap: str) -> Iterator[str]:
    topic = f"kaliko.test-bus-{uuid.uuid4().hex[:12]}"
    # Requested from inside a running loop (the bus fixture), so the admin runs on its own thread.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, _admin(kafka_bootstrap, "create", topic)).result()
        yield topic
        thread.submit(asyncio.run, _admin(kafka_bootstrap, "delete", topic)).result()


class Bus:
    """Builds clients of one adapter and stops them all at the end of the test."""

    def __init__(self, kind: str, bootstrap: str = "", topic: str = "") -> None:
        self.kind = kind
        self.bootstrap = bootstrap
        self.topic = topic
        self.broker = MemoryBroker(PARTITIONS) if kind == "memory" else None
        self.clients: list[Any] = []

    async def _started(self, client: Any) -> Any:
        await client.start()
        self.clients.append(client)
        return client

    async def publisher(self) -> Any:
        if self.broker is not None:
            return await self._started(MemoryDiffPublisher(self.broker))
        return await self._started(KafkaDiffPublisher(self.bootstrap, self.topic))

    async def subscriber(self, node: str, start_offset: int | None = None) -> Any:
        if self.broker is not None:
            return await self._started(MemoryDiffSubscriber(self.broker, node, start_offset=start_offset))
        return await self._started(
            KafkaDiffSubscriber(self.bootstrap, node, self.topic, start_offset=start_offset)
        )

    async def multi(
        self, nodes: Sequence[str], start_offsets: Mapping[str, int] | None = None, queue_size: int = 100
    ) -> Any:
        if self.broker is not None:
            client: Any = MemoryMultiNodeSubscriber(
                self.broker, nodes, queue_size=queue_size, start_offsets=start_offsets
            )
        else:
            client = KafkaMultiNodeSubscriber(
                self.bootstrap, nodes, self.topic, queue_size=queue_size, start_offsets=start_offsets
            )
        return await self._started(client)

    async def close(self) -> None:
        for client in reversed(self.clients):
            await client.stop()


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.fv)])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    if request.param == "memory":
        made = Bus("memory")
    else:
        made = Bus(
            "kafka", request.getfixturevalue("kafka_bootstrap"), request.getfixturevalue("kafka_topic")
        )
    yield made
    await made.close()


def names(count: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"node-{run}-{index}" for index in range(count)]


def partner(node: str, same_partition: bool) -> str:
    """A node name that lands on the same (or a different) partition as ``node``."""
    for index in range(1000):
        candidate = f"{node}-p{index}"
        if (partition_for(candidate, PARTITIONS) == partition_for(node, PARTITIONS)) == same_partition:
            return candidate
    raise AssertionError("no partner found")


async def take(messages: Any, count: int) -> list[DiffMessage]:
    iterator = aiter(messages)
    async with asyncio.timeout(20):
        return [await anext(iterator) for _ in range(count)]


async def test_partition_for_is_crc32_mod_partitions() -> None:
    assert partition_for("node-1", 12) == zlib.crc32(b"node-1") % 12
    with pytest.raises(ValueError, match="partitions"):
        partition_for("node-1", 0)


async def test_per_key_order_is_preserved(bus: Bus) -> None:
    (node,) = names(1)
    subscriber = await bus.subscriber(node)
    publisher = await bus.publisher()
    assert publisher.partitions == PARTITIONS and subscriber.partition == partition_for(node, PARTITIONS)
    for index in range(30):
        await publisher.publish(node, b"m%d" % index)
    await publisher.flush()
    got = await take(subscriber, 30)
    assert [message.payload for message in got] == [b"m%d" % index for index in range(30)]
    assert all(message.node == node for message in got)
    offsets = [message.offset for message in got]
    assert offsets == sorted(set(offsets))
    now_ms = time.time() * 1000
    assert all(abs(message.timestamp_ms - now_ms) < 60_000 for message in got)
    assert await subscriber.position() == offsets[-1] + 1


async def test_other_nodes_messages_are_not_delivered(bus: Bus) -> None:
    (node,) = names(1)
    twin, elsewhere = partner(node, same_partition=True), partner(node, same_partition=False)
    subscriber = await bus.subscriber(node)
    publisher = await bus.publisher()
    for index in range(5):
        await publisher.publish(twin, b"twin")
        await publisher.publish(node, b"mine-%d" % index)
        await publisher.publish(elsewhere, b"elsewhere")
    await publisher.publish(twin, b"twin")
    await publisher.publish(node, b"marker")
    await publisher.flush()
    got = await take(subscriber, 6)
    assert [message.payload for message in got] == [b"mine-%d" % i for i in range(5)] + [b"marker"]
    assert subscriber.skipped == 6


async def test_subscriber_starts_at_the_end_by_default(bus: Bus) -> None:
    (node,) = names(1)
    publisher = await bus.publisher()
    await publisher.publish(node, b"before")
    await publisher.flush()
    subscriber = await bus.subscriber(node)
    await publisher.publish(node, b"after")
    await publisher.flush()
    assert [message.payload for message in await take(subscriber, 1)] == [b"after"]


async def test_restart_from_a_given_offset(bus: Bus) -> None:
    (node,) = names(1)
    first = await bus.subscriber(node)
    publisher = await bus.publisher()
    for index in range(5):
        await publisher.publish(node, b"%d" % index)
    await publisher.flush()
    got = await take(first, 5)
    await first.stop()
    restarted = await bus.subscriber(node, start_offset=got[2].offset)
    again = await take(restarted, 3)
    assert [m._replace(received_ms=0.0) for m in again] == [m._replace(received_ms=0.0) for m in got[2:]]
    assert all(m.received_ms >= m.timestamp_ms - 1000 for m in again if m.received_ms)  # stamped at receipt


async def test_many_nodes_on_one_multi_node_subscriber(bus: Bus) -> None:
    nodes = names(40)
    watched = nodes[:30]
    multi = await bus.multi(watched, queue_size=10)
    publisher = await bus.publisher()
    for round_ in range(3):
        for node in nodes:
            await publisher.publish(node, f"{node}/{round_}".encode())
    await publisher.flush()
    for node in watched:
        got = await take(multi.subscription(node), 3)
        assert [message.payload for message in got] == [f"{node}/{r}".encode() for r in range(3)]
        assert {message.node for message in got} == {node}
    with pytest.raises(KeyError):
        multi.subscription(nodes[-1])
    for node in watched:
        assert multi.subscription(node).queue.empty()


async def test_multi_node_start_offsets_are_per_node(bus: Bus) -> None:
    (early,) = names(1)
    late = partner(early, same_partition=True)
    publisher = await bus.publisher()
    await publisher.publish(early, b"old-early")
    await publisher.publish(late, b"old-late")
    await publisher.flush()
    offset = (await take(await bus.subscriber(early, start_offset=0), 1))[0].offset
    multi = await bus.multi([early, late], start_offsets={early: offset})
    await publisher.publish(late, b"new-late")
    await publisher.publish(early, b"new-early")
    await publisher.flush()
    assert [m.payload for m in await take(multi.subscription(early), 2)] == [b"old-early", b"new-early"]
    assert [m.payload for m in await take(multi.subscription(late), 1)] == [b"new-late"]


async def test_memory_rejection_surfaces_in_flush() -> None:
    broker = MemoryBroker(PARTITIONS)
    publisher = MemoryDiffPublisher(broker)
    await publisher.start()
    broker.reject("node-a")
    await publisher.publish("node-a", b"x")
    await publisher.publish("node-b", b"y")
    with pytest.raises(PublishError) as error:
        await publisher.flush()
    assert error.value.nodes == {"node-a"}
    assert [record.payload for record in broker.records(partition_for("node-b", PARTITIONS))] == [b"y"]
    await publisher.flush()


@pytest.mark.fv
async def test_kafka_rejected_message_surfaces_in_flush_naming_the_node(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    """A record over the broker's limit (1 MiB) is not sent: its partition's other nodes' records,
    published around it in the same turn, and later ones, are delivered (a refused batch would
    have broken the partition's idempotent sequence)."""
    (node,) = names(1)
    before, after = partner(node, same_partition=True), partner(f"{node}-b", same_partition=True)
    subscriber = KafkaDiffSubscriber(kafka_bootstrap, before, kafka_topic)
    await subscriber.start()
    publisher = KafkaDiffPublisher(kafka_bootstrap, kafka_topic, request_timeout_ms=10_000)
    await publisher.start()
    try:
        await publisher.publish(before, b"small")
        await publisher.publish(node, b"x" * (2 * 1024 * 1024))  # above the broker's message.max.bytes
        await publisher.publish(after, b"small too")
        assert publisher.published == 2
        with pytest.raises(PublishError, match="max_request_size") as error:
            await publisher.flush()
        assert error.value.nodes == {node}
        await publisher.publish(before, b"again")
        await publisher.flush()  # reported once
        assert [message.payload for message in await take(subscriber, 2)] == [b"small", b"again"]
    finally:
        await publisher.stop()
        await subscriber.stop()


@pytest.mark.fv
async def test_kafka_order_holds_across_many_batches_of_one_partition(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    """Batches of 1 KiB: 300 records of two nodes on one partition fill dozens of them, some sent
    while others are still being filled; each node still reads its records in order."""
    (node,) = names(1)
    twin = partner(node, same_partition=True)
    readers = [KafkaDiffSubscriber(kafka_bootstrap, name, kafka_topic) for name in (node, twin)]
    for reader in readers:
        await reader.start()
    publisher = KafkaDiffPublisher(kafka_bootstrap, kafka_topic, max_batch_size=1024)
    await publisher.start()
    try:
        for index in range(150):
            await publisher.publish(node, b"n%03d" % index + b"." * 100)
            await publisher.publish(twin, b"t%03d" % index + b"." * 100)
            if index % 40 == 0:
                await asyncio.sleep(0)  # some batches leave mid-stream, as between engine turns
        await publisher.flush()
        assert publisher.published == 300
        for reader, prefix in zip(readers, (b"n", b"t"), strict=True):
            got = [message.payload[:4] for message in await take(reader, 150)]
            assert got == [prefix + b"%03d" % index for index in range(150)]
    finally:
        await publisher.stop()
        for reader in readers:
            await reader.stop()


async def first_batch(subscriber: Any) -> list[DiffMessage]:
    async with asyncio.timeout(20):
        return await anext(aiter(subscriber.batches()))


async def test_a_batch_is_everything_already_waiting(bus: Bus) -> None:
    (node,) = names(1)
    start = await (await bus.subscriber(node)).position()
    publisher = await bus.publisher()
    for index in range(5):
        await publisher.publish(node, b"w%d" % index)
    await publisher.publish(partner(node, same_partition=True), b"twin")
    await publisher.flush()
    subscriber = await bus.subscriber(node, start_offset=start)
    batch = await first_batch(subscriber)
    assert [message.payload for message in batch] == [b"w%d" % index for index in range(5)]
    assert not any(message.resync for message in batch)


async def test_skip_to_end_skips_the_backlog_and_keeps_what_follows(bus: Bus) -> None:
    (node,) = names(1)
    subscriber = await bus.subscriber(node)
    publisher = await bus.publisher()
    for index in range(5):
        await publisher.publish(node, b"old-%d" % index)
    await publisher.flush()
    batches = aiter(subscriber.batches())
    async with asyncio.timeout(20):
        first = await anext(batches)  # a fetch of the backlog may already be buffered
    assert first[0].payload == b"old-0"
    await subscriber.skip_to_end()
    end = await subscriber.position()
    await publisher.publish(node, b"new-0")
    await publisher.publish(node, b"new-1")
    await publisher.flush()
    got: list[DiffMessage] = []
    async with asyncio.timeout(20):
        while len(got) < 2:
            got += await anext(batches)
    assert [message.payload for message in got] == [b"new-0", b"new-1"]
    assert got[0].offset >= end


async def test_multi_node_skip_to_end_drops_what_is_queued(bus: Bus) -> None:
    (node,) = names(1)
    twin = partner(node, same_partition=True)
    multi = await bus.multi([node, twin])
    publisher = await bus.publisher()
    for index in range(3):
        await publisher.publish(node, b"old-%d" % index)
    await publisher.publish(twin, b"sent after them")
    await publisher.flush()
    await take(multi.subscription(twin), 1)  # dispatched in offset order: node's three are queued
    subscription = multi.subscription(node)
    assert subscription.queue.qsize() == 3
    await subscription.skip_to_end()
    await publisher.publish(node, b"new")
    await publisher.flush()
    assert [message.payload for message in await take(subscription, 1)] == [b"new"]


async def test_a_full_queue_overflows_into_a_resync_marker_without_blocking_others(bus: Bus) -> None:
    (slow,) = names(1)
    fast = partner(slow, same_partition=True)
    multi = await bus.multi([slow, fast], queue_size=3)
    publisher = await bus.publisher()
    for index in range(11):  # nobody reads the slow node's queue
        await publisher.publish(slow, b"s%d" % index)
        if index % 4 == 0:
            await publisher.publish(fast, b"f%d" % index)
    await publisher.flush()
    assert [m.payload for m in await take(multi.subscription(fast), 3)] == [b"f0", b"f4", b"f8"]

    # 3 fill the queue, the 4th overflows (dropped with them, a marker queued), 2 more fill it
    # again, and so on: overflows at s3, s6 and s9; the queue holds the marker and s10.
    subscription = multi.subscription(slow)
    marker, last = await take(subscription, 2)
    assert marker.resync and marker.payload == b"" and marker.node == slow
    assert last.payload == b"s10" and not last.resync and marker.offset < last.offset
    assert multi.overflows == 3 and subscription.overflows == 3
    assert multi.subscription(fast).overflows == 0
    await publisher.publish(slow, b"after")
    await publisher.flush()
    assert [message.payload for message in await take(subscription, 1)] == [b"after"]


@pytest.mark.fv
async def test_kafka_multi_node_fetches_while_the_callers_loop_is_busy(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    """The consumer has a thread of its own: a record is taken from the broker (and stamped) while
    the nodes' loop is blocked, so the bus hop does not include that loop's queueing."""
    bus = Bus("kafka", kafka_bootstrap, kafka_topic)
    try:
        (node,) = names(1)
        multi = await bus.multi([node])
        publisher = await bus.publisher()
        await publisher.publish(node, b"while-busy")
        await publisher.flush()
        time.sleep(1.5)  # the caller's loop does nothing else meanwhile
        busy_until_ms = time.time() * 1000.0
        (message,) = await take(multi.subscription(node), 1)
        assert message.payload == b"while-busy"
        assert message.received_ms < busy_until_ms - 500, (message.received_ms, busy_until_ms)
        assert any(thread.name == "kafka-multi-node-fetch" for thread in threading.enumerate())
    finally:
        await bus.close()
    assert not any(thread.name == "kafka-multi-node-fetch" for thread in threading.enumerate())


async def test_kafka_multi_node_start_failure_ends_its_thread() -> None:
    multi = KafkaMultiNodeSubscriber("127.0.0.1:1", ["node-x"], "any-topic")  # nothing listens there
    with pytest.raises(KafkaConnectionError):
        await multi.start()
    assert not any(thread.name == "kafka-multi-node-fetch" for thread in threading.enumerate())
    with pytest.raises(BusError, match="not started"):
        multi.subscription("node-x")
