"""The node-diff bus contract: per-node messages on a partitioned log, keyed and partitioned by node.

Owns the vocabulary every bus adapter speaks: `partition_for` (the one node → partition mapping,
so an agent knows where to read without a consumer group), `DiffMessage`, the errors, the
`DiffPublisher` / `DiffSubscriber` / `MultiNodeSubscriber` protocols, `NodeFanout`, the
per-node bounded queues a multi-node subscriber dispatches into, and `FanoutViews`, what such a
subscriber shows of them. Adapters: `iokit.kafka_bus` and
`iokit.kafka_multi_node` (aiokafka), `iokit.memory_bus` (in-process partitions); all pass the same
contract tests.
Each cluster has its own topic, ``<cluster>.node-diffs`` (`iokit.cluster_name.diff_topic`;
`DEFAULT_TOPIC` is the default cluster's). It does not own payload encoding (`wire`), stream
continuity checks (`policycore`) or when to give up on a backlog (the agent's ``max_lag``).

Invariants: a node's messages go to partition ``zlib.crc32(node) % partitions`` and keep their
publish order there; a subscriber yields only messages whose key is its node, in offset order,
starting at the partition's end (default) or a given offset; `DiffSubscriber.batches` yields, at
least one at a time, every message already read and waiting, in the same order as iteration.

Falling behind (Typha's cut-off): a multi-node subscriber never delivers a message to a node
other than its key, and never lets one slow node hold up the others. When a node's bounded queue
is full, `NodeFanout` drops that node's queued messages and the one that found the queue full,
counts an overflow, and queues a *resync marker* (`DiffMessage.resync`: no payload, the dropped
message's offset and timestamp); what is dispatched after the marker is delivered normally. A
consumer that reads a marker must fetch a snapshot before it offers what follows. This loses
nothing: every dropped message was published before the marker was queued, hence before the
consumer reads it and asks for the snapshot, so the snapshot already covers them; and every later
message is delivered after the marker (those the snapshot also covers are stale, and the
agent's desired state ignores them by their seq). `DiffSubscriber.skip_to_end` is the same cut-off
asked for by the consumer (too old a message, see `node_agent.agent`): the waiting backlog is
dropped; every message published after it returns is still delivered.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from typing import NamedTuple, Protocol

from iokit.cluster_name import DEFAULT_CLUSTER, diff_topic

DEFAULT_TOPIC = diff_topic(DEFAULT_CLUSTER)
log = logging.getLogger(__name__)


def partition_for(node: str, partitions: int) -> int:
    """The partition that carries ``node``'s diffs (stable across processes and restarts)."""
    if partitions < 1:
        raise ValueError(f"partitions: must be >= 1, got {partitions}")
    return zlib.crc32(node.encode()) % partitions


class DiffMessage(NamedTuple):
    """One message read for a node: its key, payload, log offset and producer timestamp.

    ``resync``: not a message but a marker that the subscriber dropped this node's messages up to
    and including ``offset`` (its queue overflowed): fetch a snapshot before reading on.
    ``received_ms``: wall-clock ms at which the subscriber took the record from the broker (0:
    not recorded), so the bus hop (``received_ms - timestamp_ms``) can be told apart from the
    time the message then waited for its node.
    """

    node: str
    payload: bytes
    offset: int
    timestamp_ms: int
    resync: bool = False
    received_ms: float = 0.0


async def one_by_one(batches: AsyncIterator[list[DiffMessage]]) -> AsyncGenerator[DiffMessage, None]:
    """The messages of ``batches`` one at a time (what a subscriber's ``__aiter__`` yields)."""
    async for batch in batches:
        for message in batch:
            yield message


class BusError(Exception):
    """Base of the bus adapters' errors."""


class PublishError(BusError):
    """Some published messages were not acknowledged; their nodes need a snapshot."""

    def __init__(self, nodes: Iterable[str], cause: BaseException | None) -> None:
        self.nodes = frozenset(nodes)
        shown = ", ".join(sorted(self.nodes)[:5]) + (" ..." if len(self.nodes) > 5 else "")
        super().__init__(f"publish failed for {len(self.nodes)} node(s) [{shown}]: {cause!r}")
        self.cause = cause


class DiffPublisher(Protocol):
    partitions: int

    async def start(self) -> None: ...

    async def publish(self, node: str, payload: bytes) -> None:
        """Queue one message for ``node``; delivery failures surface in `flush`."""
        ...

    async def flush(self) -> None:
        """Wait until everything published so far is acknowledged; raises `PublishError`."""
        ...

    async def stop(self) -> None: ...


class DiffSubscriber(Protocol):
    node: str
    partition: int

    async def start(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[DiffMessage]: ...

    def batches(self) -> AsyncIterator[list[DiffMessage]]:
        """The same messages as iteration, grouped: each batch is every message already read and
        waiting (at least one), so a consumer can handle a backlog at once."""
        ...

    async def skip_to_end(self) -> None:
        """Drop the waiting backlog and continue from the partition's end: every message published
        after this returns is delivered; one published before may still be (a snapshot fetched
        afterwards covers it). Call it between batches, never while one is being read."""
        ...

    async def position(self) -> int:
        """The offset of the next message this subscriber will read from its partition."""
        ...

    async def stop(self) -> None: ...


class MultiNodeSubscriber(Protocol):
    async def start(self) -> None: ...

    def subscription(self, node: str) -> NodeSubscription: ...

    async def stop(self) -> None: ...


class NodeSubscription:
    """One node's view of a multi-node subscriber: an async iterator over its bounded queue.

    Iteration raises the dispatcher's error if the dispatcher died, instead of waiting forever.
    """

    def __init__(self, node: str, queue: asyncio.Queue[DiffMessage], fanout: NodeFanout) -> None:
        self.node = node
        self.queue = queue
        self.overflows = 0
        self.waiter: asyncio.Future[None] | None = None
        self._fanout = fanout

    def __aiter__(self) -> AsyncIterator[DiffMessage]:
        return self

    async def __anext__(self) -> DiffMessage:
        while self.queue.empty():
            if self._fanout.done.done():
                raise self._fanout.failure()
            waiter = asyncio.get_running_loop().create_future()  # a bare future: no task per wait
            self.waiter = waiter
            try:
                await waiter
            finally:
                self.waiter = None
        return self.queue.get_nowait()

    def wake(self) -> None:
        """Wake the reader waiting for a message (the dispatcher queued one, or stopped)."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def batches(self) -> AsyncGenerator[list[DiffMessage], None]:
        """Everything queued for this node, waiting for the first message if there is none."""
        while True:
            batch = [await self.__anext__()]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            yield batch

    async def skip_to_end(self) -> None:
        """Drop what is queued (an unread resync marker too: the caller resyncs anyway); messages
        the dispatcher has yet to dispatch are still delivered."""
        self._fanout.dropped += self._fanout.drain(self.queue)[0]


class NodeFanout:
    """Per-node bounded queues and start thresholds; the dispatch half of a multi-node subscriber.

    A full queue is an overflow (see the module docstring): its messages are replaced by a resync
    marker, counted in ``overflows`` (total) and the node's `NodeSubscription.overflows`, and the
    messages dropped (by overflows and by `NodeSubscription.skip_to_end`) in ``dropped``.
    """

    def __init__(self, nodes: Iterable[str], queue_size: int) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size: must be >= 1, got {queue_size}")
        self.queues: dict[str, asyncio.Queue[DiffMessage]] = {
            node: asyncio.Queue(maxsize=queue_size) for node in nodes
        }
        self.thresholds: dict[str, int] = {}
        self.subscriptions = {node: NodeSubscription(node, q, self) for node, q in self.queues.items()}
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.skipped = 0
        self.delivered = 0
        self.overflows = 0
        self.dropped = 0
        self._error: BaseException | None = None

    def set_thresholds(self, by_node: Mapping[str, int]) -> None:
        """Messages below a node's threshold offset are not delivered to it."""
        self.thresholds = dict(by_node)

    def dispatch(
        self, key: bytes | None, payload: bytes, offset: int, timestamp_ms: int, *, received_ms: float = 0.0
    ) -> None:
        """Queue one record for its node (never waits: a full queue overflows); ``received_ms``:
        when the consumer took it from the broker (0: now)."""
        node = key.decode("utf-8", "replace") if key is not None else ""
        queue = self.queues.get(node)
        if queue is None or offset < self.thresholds.get(node, 0):
            self.skipped += 1
            return
        received_ms = received_ms or time.time() * 1000.0
        message = DiffMessage(node, payload, offset, timestamp_ms, received_ms=received_ms)
        if queue.full():
            self._overflow(node, queue, message)
        else:
            queue.put_nowait(message)
            self.delivered += 1
        self.subscriptions[node].wake()

    def _overflow(self, node: str, queue: asyncio.Queue[DiffMessage], message: DiffMessage) -> None:
        dropped, marked = self.drain(queue)
        queue.put_nowait(message._replace(payload=b"", resync=True))
        self.dropped += dropped + 1
        self.overflows += 1
        self.subscriptions[node].overflows += 1
        if not marked:  # once per marker the node has not read yet
            log.warning("%s: queue overflowed, %d message(s) dropped; it must resync", node, dropped + 1)

    @staticmethod
    def drain(queue: asyncio.Queue[DiffMessage]) -> tuple[int, bool]:
        """Empty ``queue``: how many messages it held, and whether it held a resync marker."""
        dropped, marked = 0, False
        while not queue.empty():
            if queue.get_nowait().resync:
                marked = True
            else:
                dropped += 1
        return dropped, marked

    def finish(self, error: BaseException | None) -> None:
        """Record that dispatch ended (``error`` None: stopped on purpose)."""
        self._error = error
        if not self.done.done():
            self.done.set_result(None)
        for subscription in self.subscriptions.values():
            subscription.wake()

    def failure(self) -> BaseException:
        return self._error if self._error is not None else BusError("subscriber stopped")

    def subscription(self, node: str) -> NodeSubscription:
        try:
            return self.subscriptions[node]
        except KeyError:
            raise KeyError(f"node {node!r} is not one of this subscriber's nodes") from None


def node_thresholds(
    nodes: Iterable[str],
    partitions: int,
    ends: Mapping[int, int],
    start_offsets: Mapping[str, int] | None,
) -> tuple[dict[str, int], dict[int, int]]:
    """Per-node first offsets (given, else the partition end) and per-partition seek positions."""
    offsets = start_offsets or {}
    thresholds = {node: offsets.get(node, ends[partition_for(node, partitions)]) for node in nodes}
    seeks: dict[int, int] = {}
    for node, offset in thresholds.items():
        partition = partition_for(node, partitions)
        seeks[partition] = min(seeks.get(partition, offset), offset)
    return thresholds, seeks


class FanoutViews:
    """What a multi-node subscriber that dispatches into a `NodeFanout` shows of it: each node's
    subscription and the fanout's counters (a subclass sets ``_fanout`` in its ``start``)."""

    _fanout: NodeFanout | None = None

    def subscription(self, node: str) -> NodeSubscription:
        if self._fanout is None:
            raise BusError("subscriber not started")
        return self._fanout.subscription(node)

    @property
    def skipped(self) -> int:
        return self._fanout.skipped if self._fanout is not None else 0

    @property
    def overflows(self) -> int:
        """Times a node's queue overflowed (it got a resync marker); per node on its subscription."""
        return self._fanout.overflows if self._fanout is not None else 0
