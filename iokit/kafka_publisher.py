"""The Kafka publisher of node diffs: idempotent, acks from all replicas, keyed and partitioned by node.

Owns `KafkaDiffPublisher`, which sets each record's partition with `iokit.bus.partition_for`, so
an agent can `assign` its one partition without a consumer group. It does not own payload
encoding, topic creation (`iokit.kafka_bus.ensure_topic`, called at start with
``create_partitions``) or retries above aiokafka's own.

Size: ``max_request_size`` defaults to the broker's default ``message.max.bytes`` (1 MiB), and a
record that would not fit is never sent. A batch the broker refuses still uses up its sequence
numbers in aiokafka's idempotent producer, so every later batch of that partition failed with
``OutOfOrderSequenceNumber``: one oversized diff would cut a partition's nodes off. Refused here,
its node gets a gap and fetches a snapshot (over gRPC, which has no such limit).

Tried and not kept (`docs/bench/results.md`, 2026-12-02 15:40): building aiokafka batches at
publish and submitting them a round at a time (G1's hop p99 39 ms instead of 241 in one run, but
G2's p99 2.1 s instead of 0.75 s), and partitions spread over several connections (more CPU, no
gain).

Invariants: `publish` never raises for a record (only when not started); `flush` returns only
when every record published before it is acknowledged by all in-sync replicas, or raises
`PublishError` naming the nodes whose records failed, once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from iokit.bus import DEFAULT_TOPIC, BusError, PublishError, partition_for
from iokit.kafka_bus import ensure_topic, partition_count

log = logging.getLogger(__name__)
RECORD_OVERHEAD = 1024
"""Bytes allowed for the batch header and record framing around one record's key and payload."""


class KafkaDiffPublisher:
    """Publishes node diffs keyed and partitioned by node, idempotently, acks from all replicas.

    With ``create_partitions``, `start` first creates the topic with that many partitions if it
    does not exist yet. ``linger_ms`` is 0: aiokafka keeps one produce request in flight per
    broker, so what is appended while one is out goes as one batch anyway, and a wait only delays
    small flushes (`loadtest.bench_bus`, one message at a time: hop p50 5.5 ms with 2 ms of
    linger, 3.0 ms without).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str = DEFAULT_TOPIC,
        *,
        create_partitions: int | None = None,
        linger_ms: int = 0,
        max_batch_size: int = 256 * 1024,
        max_request_size: int = 1024 * 1024,
        request_timeout_ms: int = 30_000,
        client_id: str = "kaliko-publisher",
    ) -> None:
        self._topic = topic
        self._bootstrap = bootstrap
        self._create_partitions = create_partitions
        self._max_request_size = max_request_size
        self._settings: dict[str, Any] = dict(
            bootstrap_servers=bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=linger_ms,
            max_batch_size=max_batch_size,
            max_request_size=max_request_size,
            request_timeout_ms=request_timeout_ms,
            client_id=client_id,
        )
        self._producer: AIOKafkaProducer | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        self._failed: set[str] = set()
        self._first_error: BaseException | None = None
        self.partitions = 0
        self.published = 0

    def _require(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise BusError("publisher not started")
        return self._producer

    async def start(self) -> None:
        if self._create_partitions is not None:
            await ensure_topic(self._bootstrap, self._topic, self._create_partitions)
        producer = AIOKafkaProducer(**self._settings)
        try:
            await producer.start()
            self.partitions = await partition_count(producer, self._topic)
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def publish(self, node: str, payload: bytes) -> None:
        """Hand one record to the producer; a failure is reported by the next `flush`."""
        producer = self._require()
        if len(payload) + len(node) + RECORD_OVERHEAD > self._max_request_size:
            self._record_failure(node, BusError(f"{len(payload)} B is over max_request_size"))
            return  # never sent: a refused batch would also break the partition's sequence
        partition = partition_for(node, self.partitions)
        try:
            delivery = await producer.send(self._topic, value=payload, key=node.encode(), partition=partition)
        except KafkaError as error:
            self._record_failure(node, error)
            return
        self.published += 1
        self._pending.add(delivery)
        delivery.add_done_callback(lambda done: self._settled(node, done))

    def _settled(self, node: str, delivery: asyncio.Future[Any]) -> None:
        self._pending.discard(delivery)
        error = asyncio.CancelledError() if delivery.cancelled() else delivery.exception()
        if error is not None:
            self._record_failure(node, error)

    def _record_failure(self, node: str, error: BaseException | None) -> None:
        log.warning("publish to %s failed: %r", node, error)
        self._failed.add(node)
        if self._first_error is None:
            self._first_error = error

    async def flush(self) -> None:
        producer = self._require()
        await producer.flush()
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        if self._failed:
            failed, error = self._failed, self._first_error
            self._failed, self._first_error = set(), None
            raise PublishError(failed, error)

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
