"""The engine: the one task that owns the compiler graph and turns datastore events into node diffs.

Owns the `CalcGraph`, each node's stream position (epoch, seq) and the flush loop. It reads
`Update`/`InSync` events from its bounded queue (fed by the list-then-watch syncer), decodes and
validates each value (invalid → treated as absent, logged and counted), feeds the graph and, once
in sync, flushes at most once per ``flush_interval`` (coalescing everything that arrived), giving
each affected node one `NodeDiff` with the next seq. It does not own transport (a `publish`
callable), waiting for convergence (`ConvergenceTracker` + admin API) or leadership (`leader`).

::

    syncer ──Update/InSync──▶ queue ──▶ Engine.run ──▶ CalcGraph ──flush──▶ publish(NodeDiff)
                                                         │                      │
                               Snapshot(node) ◀──────────┘             tracker.sent(node, seq, rev)

Start of an epoch: nothing is published before the first InSync. The first flush after it is not
sent as deltas; instead every known node gets an empty "epoch marker" delta (seq 1), which makes
agents of an older epoch (or none) fetch a snapshot — Typha's snapshot-then-deltas.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from controller.metrics import ControllerMetrics
from controller.resource_store import InvalidEntry, KeyLayout, decode
from iokit.syncer import InSync, SyncEvent, Update
from policycore.calc.graph import CalcGraph
from policycore.convergence import ConvergenceTracker
from policycore.diff import NodeDiff, Op, StreamPosition, snapshot_ops
from policycore.model import Resource, ResourceKey

log = logging.getLogger(__name__)

Publish = Callable[[NodeDiff], Awaitable[None]]
MAX_BATCH = 1000  # events per synchronous stretch: bounds how long the loop is held (lease refresh, MQTT)


GC_GEN0_THRESHOLD = 100_000


def settle_garbage_collector() -> None:
    """After the first full compile: move the (long-lived) graph out of the collector's view and
    collect young objects less often. The graph is hundreds of MB of small objects; with the
    default thresholds a young collection scanning it costs 30-130 ms and lands on a few edits per
    thousand (`loadtest.bench_core --gc-threshold` measures the difference)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(GC_GEN0_THRESHOLD, gc.get_threshold()[0]), gen1, gen2)


class Engine:
    def __init__(
        self,
        *,
        epoch: int,
        publish: Publish,
        tracker: ConvergenceTracker,
        metrics: ControllerMetrics,
        flush_interval: float = 0.005,
        queue_size: int = 10000,
        graph: CalcGraph | None = None,
        layout: KeyLayout = KeyLayout(),
        settle_gc: bool = False,
    ) -> None:
        self.epoch = epoch
        self._settle_gc = settle_gc  # the controller process sets it; tests sharing a process do not
        self.layout = layout
        self.graph = graph if graph is not None else CalcGraph()
        self.queue: asyncio.Queue[SyncEvent] = asyncio.Queue(maxsize=queue_size)
        self.tracker = tracker
        self.in_sync = False
        self.revision = 0
        self._publish = publish
        self._metrics = metrics
        self._flush_interval = flush_interval
        self._seq: dict[str, int] = {}
        self._last_flush = 0.0
        self.changed = asyncio.Event()  # set after every flush; waiters clear it

    async def run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < MAX_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            started = time.perf_counter()
            first_sync = self._process(batch)
            await asyncio.sleep(0)  # a full queue never suspends `get`: let the other tasks run
            if not self.in_sync:
                continue
            wait = self._last_flush + self._flush_interval - time.monotonic()
            if wait > 0 and not first_sync:
                await asyncio.sleep(wait)
                while len(batch) < MAX_BATCH and not self.queue.empty():
                    more = [self.queue.get_nowait()]
                    self._process(more)
                    batch += more
            await self.flush(epoch_start=first_sync)
            if first_sync and self._settle_gc:
                settle_garbage_collector()
            self._metrics.calc_graph_update_seconds.observe(time.perf_counter() - started)

    def _process(self, events: Iterable[SyncEvent]) -> bool:
        """Feed events to the graph; True when this batch completed the first sync."""
        first_sync = False
        for event in events:
            if isinstance(event, InSync):
                first_sync = first_sync or not self.in_sync
                self.in_sync = True
                self.revision = max(self.revision, event.revision)
                continue
            self.revision = max(self.revision, event.revision)
            key, resource = self._decode(event)
            if key is not None:
                self.graph.on_update(key, resource)
        return first_sync

    def _decode(self, event: Update) -> tuple[ResourceKey | None, Resource | None]:
        key = self.layout.resource_key(event.key)
        if key is None:
            return None, None
        if event.value is None:
            return key, None
        decoded = decode(self.layout, event.key, event.value, event.revision)
        if isinstance(decoded, InvalidEntry):
            log.warning(
                "invalid resource in datastore, treated as absent: %s: %s", decoded.key, decoded.reason
            )
            self._metrics.invalid_resources.inc()
            return key, None
        return key, decoded

    async def flush(self, *, epoch_start: bool = False) -> None:
        """Flush the graph and publish one diff per affected node (or epoch markers at epoch start)."""
        per_node = self.graph.flush()
        self._last_flush = time.monotonic()
        if epoch_start:
            per_node = {node: () for node in self.graph.nodes()}
        known = self.graph.nodes()
        for node, ops in sorted(per_node.items()):
            await self._send(node, ops)
        for node in self.tracker.nodes():
            if node not in known:
                self.tracker.forget(node)
        self.tracker.compiled(self.revision)
        self._metrics.compiled_revision.set(self.revision)
        self.changed.set()

    async def _send(self, node: str, ops: tuple[Op, ...]) -> None:
        seq = self._seq.get(node, 0) + 1
        self._seq[node] = seq
        self.tracker.sent(node, seq, self.revision)
        await self._publish(NodeDiff(node, StreamPosition(self.epoch, seq, self.revision), ops))

    async def force_gap(self, nodes: Iterable[str]) -> None:
        """Skip a seq for ``nodes`` (their last message may be lost) and send each an empty diff
        after the gap: their agents see the gap at once and fetch a snapshot rather than miss a
        diff (a lost marker is retried the same way on the next delivery check)."""
        for node in sorted(nodes):
            self._seq[node] = self._seq.get(node, 0) + 1
            await self._send(node, ())

    async def snapshot(self, node: str) -> NodeDiff:
        """The node's full state at the current position (after flushing anything pending)."""
        if self.in_sync:
            await self.flush()
        position = StreamPosition(self.epoch, self._seq.get(node, 0), self.revision)
        self._metrics.snapshots.inc()
        return NodeDiff(node, position, snapshot_ops(self.graph.node_state(node)), snapshot=True)

    def dry_run(self, changes: list[tuple[ResourceKey, Resource | None]]) -> dict[str, tuple[Op, ...]]:
        return self.graph.dry_run(changes)

    def expected_hash(self, node: str) -> str:
        return self.graph.node_state(node).content_hash()
