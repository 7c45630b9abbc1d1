"""In-memory twin of the Kafka node-diff bus: partitions as lists, the same publisher/subscriber API.

Owns `MemoryBroker` (one topic: a list of records per partition, offsets from 0, producer
timestamps from an injectable clock) and the three clients over it. They pass the same contract
tests as `iokit.kafka_bus`. Fault knob for shell tests: `MemoryBroker.reject(node)` makes that
node's publishes fail (reported by `flush` as `PublishError`, nothing appended), like a partition
whose leader is gone. It does not model retention, replication or consumer groups.

Invariants: appends are totally ordered per partition and immediately visible ("acked" on
publish); readers never see a record twice and never miss one after their start position; a
subscriber's `start` (and `skip_to_end`) fixes its position, so anything published after it is
seen; a subscriber's batch is everything appended since its last read; the multi-node subscriber's
full queues overflow into a resync marker (`iokit.bus.NodeFanout`), as with Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping

from iokit.bus import (
    BusError,
    DiffMessage,
    FanoutViews,
    NodeFanout,
    PublishError,
    node_thresholds,
    one_by_one,
    partition_for,
)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class MemoryBroker:
    """One partitioned topic held in memory, shared by the memory publishers and subscribers."""

    def __init__(self, partitions: int = 8, *, clock: Callable[[], int] = _wall_clock_ms) -> None:
        if partitions < 1:
            raise ValueError(f"partitions: must be >= 1, got {partitions}")
        self.partitions = partitions
        self._clock = clock
        self._logs: list[list[DiffMessage]] = [[] for _ in range(partitions)]
        self._wakeup = asyncio.Event()
        self.rejecting: set[str] = set()

    def reject(self, node: str, rejecting: bool = True) -> None:
        """Make publishes for ``node`` fail (or succeed again)."""
        if rejecting:
            self.rejecting.add(node)
        else:
            self.rejecting.discard(node)

    def append(self, node: str, payload: bytes) -> DiffMessage:
        log = self._logs[partition_for(node, self.partitions)]
        record = DiffMessage(node, bytes(payload), len(log), self._clock())
        log.append(record)
        wakeup, self._wakeup = self._wakeup, asyncio.Event()
        wakeup.set()
        return record

    def end_offset(self, partition: int) -> int:
        return len(self._logs[partition])

    def records(self, partition: int) -> tuple[DiffMessage, ...]:
        """Everything in ``partition``, for assertions."""
        return tuple(self._logs[partition])

    async def read(self, positions: dict[int, int]) -> list[DiffMessage]:
        """Records at or after each partition's position (advancing them); waits for at least one."""
        while True:
            wakeup = self._wakeup
            batch: list[DiffMessage] = []
            for partition, position in positions.items():
                log = self._logs[partition]
                batch.extend(log[position:])
                positions[partition] = len(log)
            if batch:
                return batch
            await wakeup.wait()

    def clamp(self, partition: int, offset: int) -> int:
        """Where a reader asking for ``offset`` starts: out-of-range offsets reset to the earliest."""
        return offset if 0 <= offset <= self.end_offset(partition) else 0


class MemoryDiffPublisher:
    """`DiffPublisher` over a `MemoryBroker`: publish appends at once; flush reports rejections."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
        self._started = False
        self._failed: set[str] = set()
        self.partitions = 0
        self.published = 0

    async def start(self) -> None:
        self.partitions = self._broker.partitions
        self._started = True

    async def publish(self, node: str, payload: bytes) -> None:
        if not self._started:
            raise BusError("publisher not started")
        if node in self._broker.rejecting:
            self._failed.add(node)
            return
        self._broker.append(node, payload)
        self.published += 1

    async def flush(self) -> None:
        if not self._started:
            raise BusError("publisher not started")
        if self._failed:
            failed, self._failed = self._failed, set()
            raise PublishError(failed, BusError("rejected by the memory broker"))

    async def stop(self) -> None:
        self._started = False


class MemoryDiffSubscriber:
    """`DiffSubscriber` over a `MemoryBroker`: one node's messages from its partition."""

    def __init__(self, broker: MemoryBroker, node: str, *, start_offset: int | None = None) -> None:
        self.node = node
        self.partition = partition_for(node, broker.partitions)
        self.skipped = 0
        self._broker = broker
        self._start_offset = start_offset
        self._position: int | None = None

    async def start(self) -> None:
        end = self._broker.end_offset(self.partition)
        wanted = end if self._start_offset is None else self._start_offset
        self._position = self._broker.clamp(self.partition, wanted)

    def __aiter__(self) -> AsyncIterator[DiffMessage]:
        return one_by_one(self.batches())

    async def batches(self) -> AsyncGenerator[list[DiffMessage], None]:
        while True:
            positions = {self.partition: self._require()}
            records = await self._broker.read(positions)
            self._position = positions[self.partition]
            batch = [record for record in records if record.node == self.node]
            self.skipped += len(records) - len(batch)
            if batch:
                yield batch

    async def skip_to_end(self) -> None:
        self._require()
        self._position = self._broker.end_offset(self.partition)

    def _require(self) -> int:
        if self._position is None:
            raise BusError("subscriber not started")
        return self._position

    async def position(self) -> int:
        return self._require()

    async def stop(self) -> None:
        self._position = None


class MemoryMultiNodeSubscriber(FanoutViews):
    """`MultiNodeSubscriber` over a `MemoryBroker`: one dispatch task, per-node bounded queues."""

    def __init__(
        self,
        broker: MemoryBroker,
        nodes: Iterable[str],
        *,
        queue_size: int = 100,
        start_offsets: Mapping[str, int] | None = None,
    ) -> None:
        self._broker = broker
        self._nodes = list(dict.fromkeys(nodes))
        self._queue_size = queue_size
        self._start_offsets = dict(start_offsets or {})
        self._fanout: NodeFanout | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        partitions = self._broker.partitions
        used = {partition_for(node, partitions) for node in self._nodes}
        ends = {partition: self._broker.end_offset(partition) for partition in used}
        thresholds, seeks = node_thresholds(self._nodes, partitions, ends, self._start_offsets)
        positions = {partition: self._broker.clamp(partition, seeks[partition]) for partition in used}
        fanout = NodeFanout(self._nodes, self._queue_size)
        fanout.set_thresholds(thresholds)
        self._fanout = fanout
        self._task = asyncio.create_task(self._dispatch(fanout, positions), name="memory-multi-node-dispatch")

    async def _dispatch(self, fanout: NodeFanout, positions: dict[int, int]) -> None:
        error: BaseException | None = None
        try:
            while True:
                for record in await self._broker.read(positions):
                    fanout.dispatch(record.node.encode(), record.payload, record.offset, record.timestamp_ms)
        except asyncio.CancelledError:
            raise
        except BaseException as failure:
            error = failure
            raise
        finally:
            fanout.finish(error)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
