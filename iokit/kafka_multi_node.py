"""The Kafka multi-node subscriber: one consumer, on a fetch thread of its own, for many nodes.

Owns `KafkaMultiNodeSubscriber`, which reads the partitions of many (simulated) nodes with one
aiokafka consumer and dispatches each record into `iokit.bus.NodeFanout` (per-node bounded queues
that overflow into a resync marker, so no node waits for another). It does not own the per-node
queues' semantics (`iokit.bus`) or what a node does with its messages (`node_agent`).

Why a thread: the nodes sharing the subscriber run on the caller's event loop, and asyncio runs
every ready callback of a loop turn before it looks at I/O again. With hundreds of nodes applying
a fleet-wide change, a fetch's answer would wait a whole turn (hundreds of ms) before the consumer
could take it. The consumer therefore runs on its own event loop in a thread (as librdkafka's
and the Java client's fetchers do); it stamps ``received_ms`` when a fetch is handed over, then
passes the records to the caller's loop with ``call_soon_threadsafe``. The time a record then waits
for its node is queueing in the caller's loop, counted in convergence, not in the bus hop.

Invariants: `NodeFanout` is only touched on the caller's loop (thresholds, dispatch, finish, in
that order, because ``call_soon_threadsafe`` keeps order); at most `MAX_HANDOFFS` fetches are
handed over and not yet dispatched (past that the fetch thread waits: the backlog stays in Kafka);
`start` returns once every partition's position is resolved, so a message published after it
returns is always seen; `stop` returns once the thread and its consumer have stopped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from iokit.bus import DEFAULT_TOPIC, FanoutViews, NodeFanout, node_thresholds, partition_for
from iokit.kafka_bus import consumer_settings, partition_count

log = logging.getLogger(__name__)
MAX_HANDOFFS = 8
"""Fetches handed to the caller's loop and not yet dispatched, at most."""
Record = tuple[bytes | None, bytes, int, int]
"""(key, value, offset, timestamp_ms) of one fetched record."""


class KafkaMultiNodeSubscriber(FanoutViews):
    """Reads the partitions of many nodes with one consumer on a fetch thread (see the module)."""

    def __init__(
        self,
        bootstrap: str,
        nodes: Iterable[str],
        topic: str = DEFAULT_TOPIC,
        *,
        queue_size: int = 100,
        start_offsets: Mapping[str, int] | None = None,
        reset: str = "earliest",
        fetch_max_wait_ms: int = 100,
        client_id: str = "kaliko-multi-agent",
    ) -> None:
        self._nodes = list(dict.fromkeys(nodes))
        self._topic = topic
        self._queue_size = queue_size
        self._start_offsets = dict(start_offsets or {})
        self._settings = consumer_settings(bootstrap, client_id, fetch_max_wait_ms, reset)
        self._fanout: NodeFanout | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._fetching: asyncio.Task[None] | None = None
        self._handoffs = threading.BoundedSemaphore(MAX_HANDOFFS)

    async def start(self) -> None:
        fanout = NodeFanout(self._nodes, self._queue_size)
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = threading.Thread(
            target=self._thread_main,
            args=(asyncio.get_running_loop(), fanout, ready),
            name="kafka-multi-node-fetch",
            daemon=True,
        )
        thread.start()
        try:
            await asyncio.wrap_future(ready)
        except BaseException:
            await asyncio.to_thread(thread.join)
            raise
        self._fanout, self._thread = fanout, thread

    def _thread_main(
        self, caller: asyncio.AbstractEventLoop, fanout: NodeFanout, ready: concurrent.futures.Future[None]
    ) -> None:
        asyncio.run(self._consume(caller, fanout, ready))

    async def _consume(
        self, caller: asyncio.AbstractEventLoop, fanout: NodeFanout, ready: concurrent.futures.Future[None]
    ) -> None:
        consumer = AIOKafkaConsumer(**self._settings)
        try:
            await consumer.start()
            thresholds = await self._position(consumer)
        except BaseException as failure:
            await consumer.stop()
            ready.set_exception(failure)
            return
        caller.call_soon_threadsafe(fanout.set_thresholds, thresholds)  # before any dispatch
        self._thread_loop = asyncio.get_running_loop()
        self._fetching = asyncio.current_task()
        ready.set_result(None)
        error: BaseException | None = None
        try:
            await self._fetch_forever(consumer, caller, fanout)
        except asyncio.CancelledError:
            pass
        except BaseException as failure:
            error = failure
            log.exception("multi-node fetch failed")
        finally:
            await consumer.stop()
            with contextlib.suppress(RuntimeError):  # the caller's loop is already closed
                caller.call_soon_threadsafe(fanout.finish, error)

    async def _position(self, consumer: AIOKafkaConsumer) -> dict[str, int]:
        """Assign the nodes' partitions, position them, and return each node's start threshold."""
        partitions = await partition_count(consumer, self._topic)
        used = sorted({partition_for(node, partitions) for node in self._nodes})
        tps = [TopicPartition(self._topic, partition) for partition in used]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        ends = {tp.partition: int(await consumer.position(tp)) for tp in tps}
        thresholds, seeks = node_thresholds(self._nodes, partitions, ends, self._start_offsets)
        for tp in tps:
            if seeks[tp.partition] != ends[tp.partition]:
                consumer.seek(tp, seeks[tp.partition])
                await consumer.position(tp)
        return thresholds

    async def _fetch_forever(
        self, consumer: AIOKafkaConsumer, caller: asyncio.AbstractEventLoop, fanout: NodeFanout
    ) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            if not batches:
                continue
            received_ms = time.time() * 1000.0
            records: list[Record] = [
                (record.key, record.value or b"", record.offset, record.timestamp)
                for fetched in batches.values()
                for record in fetched
            ]
            while not self._handoffs.acquire(blocking=False):  # the caller's loop is behind
                await asyncio.sleep(0.005)
            caller.call_soon_threadsafe(self._dispatch, fanout, records, received_ms)

    def _dispatch(self, fanout: NodeFanout, records: list[Record], received_ms: float) -> None:
        """On the caller's loop: queue one fetch's records for their nodes."""
        try:
            for key, value, offset, timestamp_ms in records:
                fanout.dispatch(key, value, offset, timestamp_ms, received_ms=received_ms)
        finally:
            self._handoffs.release()

    async def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, fetching = self._thread_loop, self._fetching
        if loop is not None and fetching is not None:
            with contextlib.suppress(RuntimeError):  # the thread's loop already ended
                loop.call_soon_threadsafe(fetching.cancel)
        await asyncio.to_thread(thread.join)
        self._thread_loop = self._fetching = None
