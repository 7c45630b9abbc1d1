"""The Kafka adapter of the node-diff bus, on aiokafka: topic helpers and partition readers.

Owns the aiokafka consumers and their settings, and the topic helpers. The publisher
(`iokit.kafka_publisher`) sets each record's partition with `iokit.bus.partition_for`, so an agent
can `assign` its one partition without a consumer group or offset commits. Subscribers start at
the partition's end unless given an offset (an agent asks for a snapshot on start anyway) and skip
messages keyed for other nodes; a subscriber's batch is the records of one fetch, and
`KafkaDiffSubscriber.skip_to_end` seeks to the partition's end. The multi-node subscriber
(`iokit.kafka_multi_node`) builds on `consumer_settings` and `partition_count`. `ensure_topic`
creates a topic with a given partition count if it is absent (the controller's publisher does so
at start, ``create_partitions``): the broker's auto-create would make it with one partition. It
does not own payload encoding or retries above aiokafka's own.

Invariants: the partition count is read from the topic's metadata at start and must not change
while the system runs; `start` (and `skip_to_end`) of a subscriber returns only once its position
is resolved, so a message published after it returns is always seen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from iokit.bus import (
    DEFAULT_TOPIC,
    BusError,
    DiffMessage,
    one_by_one,
    partition_for,
)

log = logging.getLogger(__name__)


async def partition_count(client: AIOKafkaProducer | AIOKafkaConsumer, topic: str) -> int:
    """The topic's partition count from cluster metadata (waits for a just-created topic)."""
    try:
        if isinstance(client, AIOKafkaProducer):
            partitions = await client.partitions_for(topic)
        else:
            # The consumer's public `topics()` does not refresh its cached cluster metadata; this is
            # the same wait the producer's `partitions_for` performs.
            partitions = await client._client._wait_on_metadata(topic)
    except KafkaError as error:
        raise BusError(
            f"topic {topic!r}: no partition metadata ({error!r}); does the topic exist?"
        ) from error
    if not partitions:
        raise BusError(f"topic {topic!r}: no partitions in the cluster metadata (does it exist?)")
    return len(partitions)


async def ensure_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 30.0) -> int:
    """Create ``topic`` with ``partitions`` (replication 1) if absent; return its partition count.

    An existing topic is left as it is, whatever its partition count. Absence is decided from the
    list of all topics: a metadata request naming the topic would let the broker auto-create it.
    """
    if partitions < 1:
        raise ValueError(f"partitions: must be >= 1, got {partitions}")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
        async with asyncio.timeout(timeout):
            if topic not in await admin.list_topics():
                response = await admin.create_topics(
                    [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
                )
                for entry in response.to_object()["topic_errors"]:
                    error = for_code(entry["error_code"])
                    if entry["error_code"] != 0 and error is not TopicAlreadyExistsError:  # lost a race: fine
                        raise error(entry.get("error_message") or topic)
                log.info("topic %s: created with %d partitions", topic, partitions)
            while True:
                described = await admin.describe_topics([topic])
                have = len(described[0].get("partitions", [])) if described else 0
                if have:
                    return have
                await asyncio.sleep(0.1)  # the broker's metadata catches up with the creation
    except (KafkaError, TimeoutError) as error:
        raise BusError(f"topic {topic!r}: could not make sure it exists: {error!r}") from error
    finally:
        await admin.close()


def consumer_settings(bootstrap: str, client_id: str, fetch_max_wait_ms: int, reset: str) -> dict[str, Any]:
    return dict(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset=reset,
        fetch_max_wait_ms=fetch_max_wait_ms,
        client_id=client_id,
    )


class KafkaDiffSubscriber:
    """Reads one node's messages from its partition (manual assignment, no group, no commits)."""

    def __init__(
        self,
        bootstrap: str,
        node: str,
        topic: str = DEFAULT_TOPIC,
        *,
        start_offset: int | None = None,
        reset: str = "earliest",
        fetch_max_wait_ms: int = 100,
        client_id: str | None = None,
    ) -> None:
        self.node = node
        self.partition = -1
        self.skipped = 0
        self._floor = 0  # records below it were skipped by `skip_to_end`
        self._key = node.encode()
        self._topic = topic
        self._start_offset = start_offset
        self._settings = consumer_settings(
            bootstrap, client_id or f"kaliko-agent-{node}", fetch_max_wait_ms, reset
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._tp: TopicPartition | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(**self._settings)
        await consumer.start()
        try:
            self.partition = partition_for(self.node, await partition_count(consumer, self._topic))
            tp = TopicPartition(self._topic, self.partition)
            consumer.assign([tp])
            if self._start_offset is None:
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, self._start_offset)
            await consumer.position(tp)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer, self._tp = consumer, tp

    def _require(self) -> tuple[AIOKafkaConsumer, TopicPartition]:
        if self._consumer is None or self._tp is None:
            raise BusError("subscriber not started")
        return self._consumer, self._tp

    def __aiter__(self) -> AsyncIterator[DiffMessage]:
        return one_by_one(self.batches())

    async def batches(self) -> AsyncGenerator[list[DiffMessage], None]:
        consumer, tp = self._require()
        while True:
            fetched = await consumer.getmany(tp, timeout_ms=1000)
            batch: list[DiffMessage] = []
            received_ms = time.time() * 1000.0
            for record in fetched.get(tp, ()):
                if record.key != self._key or record.offset < self._floor:
                    self.skipped += 1
                    continue
                batch.append(
                    DiffMessage(
                        self.node, record.value or b"", record.offset, record.timestamp, False, received_ms
                    )
                )
            if batch:
                yield batch

    async def skip_to_end(self) -> None:
        """Seek to the partition's end. Records below it that a fetch already in flight still
        returns are dropped here (aiokafka can hand them over after the seek)."""
        consumer, tp = self._require()
        await consumer.seek_to_end(tp)
        self._floor = int(await consumer.position(tp))

    async def position(self) -> int:
        consumer, tp = self._require()
        return int(await consumer.position(tp))

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
