"""The Kafka publisher of node diffs: records appended to per-partition batches, submitted per turn.

Owns `KafkaDiffPublisher`: an idempotent aiokafka producer with ``acks="all"`` (aiokafka's defaults
are neither) that sets each record's partition with `iokit.bus.partition_for`, so an agent can
`assign` its one partition without a consumer group. It does not own payload encoding, topic
creation (`iokit.kafka_bus.ensure_topic`, called at start with ``create_partitions``) or retries
above aiokafka's own.

Why batches of its own: the engine publishes a flush as hundreds of records in a row (one per
affected node). Through aiokafka's `send` each record was a coroutine, a future and an accumulator
lookup, and the records waited in the accumulator until the engine yielded to the producer's sender
task. Under G1 load that wait was most of the Kafka hop (create time → broker append p50 ~9 ms of
12, p99 ~40 of 52; broker append → consumer p50 2.5 ms, p99 16 ms). `publish` now appends the
record to its partition's open batch (aiokafka's `BatchBuilder`, C code, timestamped on append)
and returns; one submitter task hands every open batch to the producer at the next loop turn
(`send_batch`), and what is published while that round is out goes as the next round, so each
round leaves as one produce request.

Size: ``max_request_size`` defaults to the broker's default ``message.max.bytes`` (1 MiB), and a
record that would not fit is never sent. A batch the broker refuses still uses up its sequence
numbers in aiokafka's idempotent producer, so every later batch of that partition failed with
``OutOfOrderSequenceNumber``: one oversized diff would cut a partition's nodes off. Refused here,
its node gets a gap and fetches a snapshot (over gRPC, which has no such limit).

Invariants: records of one partition are submitted in the order they were published (one
submitter, batches queued in order); a record larger than the batch size goes alone in its batch,
so a broker rejecting it fails no other node; `publish` never raises for a record (only when not
started); `flush` returns only when every record published
before it is acknowledged by all in-sync replicas, or raises `PublishError` naming the nodes whose
batches failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from aiokafka import AIOKafkaProducer

from iokit.bus import DEFAULT_TOPIC, BusError, PublishError, partition_for
from iokit.kafka_bus import ensure_topic, partition_count

log = logging.getLogger(__name__)
RECORD_OVERHEAD = 1024
"""Bytes allowed for the batch header and record framing around one record's key and payload."""


class _OpenBatch:
    """One partition's records not yet submitted, and the nodes they are for."""

    __slots__ = ("builder", "nodes", "partition")

    def __init__(self, builder: Any, partition: int) -> None:
        self.builder = builder
        self.partition = partition
        self.nodes: list[str] = []


class KafkaDiffPublisher:
    """Publishes node diffs keyed and partitioned by node, idempotently, acks from all replicas.

    With ``create_partitions``, `start` first creates the topic with that many partitions if it
    does not exist yet. ``linger_ms`` is 0: the records of a loop turn already go as one request,
    and aiokafka keeps one produce request in flight per broker, so what is submitted while one is
    out goes as the next.
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
        self._open: dict[int, _OpenBatch] = {}
        self._full: deque[_OpenBatch] = deque()  # closed before their turn ended, oldest first
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # nothing published is waiting to be submitted
        self._idle.set()
        self._submitter: asyncio.Task[None] | None = None
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
        self._submitter = asyncio.create_task(self._submit_forever(producer), name="kafka-submitter")

    async def publish(self, node: str, payload: bytes) -> None:
        """Append one record to its partition's open batch; it is submitted at the next turn.

        Never raises for a record: one that cannot be sent (over ``max_request_size``, or its batch
        refused) is reported by the next `flush`, as every delivery failure is."""
        producer = self._require()
        if len(payload) + len(node) + RECORD_OVERHEAD > self._max_request_size:
            self._record_failure(node, BusError(f"{len(payload)} B is over max_request_size"))
            return  # never sent: a refused batch would also break the partition's sequence
        partition = partition_for(node, self.partitions)
        batch = self._open.get(partition)
        if batch is None or batch.builder.append(key=node.encode(), value=payload, timestamp=None) is None:
            if batch is not None:
                self._full.append(batch)
            batch = self._open[partition] = _OpenBatch(producer.create_batch(), partition)
            batch.builder.append(key=node.encode(), value=payload, timestamp=None)  # a first one fits
        batch.nodes.append(node)
        self.published += 1
        self._idle.clear()
        self._wake.set()

    async def _submit_forever(self, producer: AIOKafkaProducer) -> None:
        """The submitter: hands the open batches to the producer a round at a time, in publish
        order, and waits for a round to be acknowledged before the next. aiokafka sends one
        request per broker at a time anyway; a batch submitted while its partition's previous one
        is still queued would wait (and hold up the partitions behind it), while the records
        published meanwhile join the next round's batches, so each round goes as one request."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._full or self._open:
                batches = [*self._full, *self._open.values()]
                self._full.clear()
                self._open.clear()
                deliveries = [await self._submit(producer, batch) for batch in batches]
                await asyncio.gather(*(d for d in deliveries if d is not None), return_exceptions=True)
            self._idle.set()

    async def _submit(self, producer: AIOKafkaProducer, batch: _OpenBatch) -> asyncio.Future[Any] | None:
        try:
            delivery: asyncio.Future[Any] = await producer.send_batch(
                batch.builder, self._topic, partition=batch.partition
            )
        except Exception as error:  # its nodes resync (a gap); the submitter must live on
            for node in batch.nodes:
                self._record_failure(node, error)
            return None
        self._pending.add(delivery)
        delivery.add_done_callback(lambda done: self._settled(batch.nodes, done))
        return delivery

    def _settled(self, nodes: list[str], delivery: asyncio.Future[Any]) -> None:
        self._pending.discard(delivery)
        error = asyncio.CancelledError() if delivery.cancelled() else delivery.exception()
        if error is not None:
            for node in nodes:
                self._record_failure(node, error)

    def _record_failure(self, node: str, error: BaseException | None) -> None:
        log.warning("publish to %s failed: %r", node, error)
        self._failed.add(node)
        if self._first_error is None:
            self._first_error = error

    async def flush(self) -> None:
        producer = self._require()
        await self._idle.wait()
        await producer.flush()
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        if self._failed:
            failed, error = self._failed, self._first_error
            self._failed, self._first_error = set(), None
            raise PublishError(failed, error)

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        submitter, self._submitter = self._submitter, None
        if submitter is not None:
            submitter.cancel()
            await asyncio.gather(submitter, return_exceptions=True)
        if producer is not None:
            await producer.stop()
