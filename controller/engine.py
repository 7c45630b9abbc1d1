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

Start of an epoch: nothing is published before the first InSync. The initial list is compiled in
steps of about ``list_batch_seconds`` of work, each ending with a flush whose ops are dropped and
a yield (`_compile_initial_list` says in which order); then, instead of deltas, every known node
gets an empty "epoch marker" delta (seq 1), which makes agents of an older epoch (or none) fetch a
snapshot — Typha's snapshot-then-deltas — and only then is the engine `in_sync`.

Invariants: only the engine task changes the graph; the loop is never held for more than a
compile step, a batch of `MAX_BATCH` events and its flush, `SENDS_PER_TURN` publishes or one
snapshot (a single event touching many endpoints is the exception: its flush is one stretch);
a snapshot's (state, seq) pair is consistent, because messages are published under a lock that
snapshots take.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from controller.metrics import ControllerMetrics
from controller.resource_store import InvalidEntry, KeyLayout, decode
from iokit.heap import settle_garbage_collector
from iokit.syncer import InSync, SyncEvent, Update
from policycore.calc.graph import CalcGraph
from policycore.convergence import ConvergenceTracker
from policycore.diff import NodeDiff, Op, StreamPosition, snapshot_ops
from policycore.model import Resource, ResourceKey

log = logging.getLogger(__name__)

Publish = Callable[[NodeDiff], Awaitable[None]]
MAX_BATCH = 1000  # events per synchronous stretch: bounds how long the loop is held (lease refresh, MQTT)
LIST_BATCH_SECONDS = 0.02  # work per compile step of the initial list (then a flush of about as long)
SENDS_PER_TURN = 100  # messages published per loop turn within one flush
SNAPSHOTS_AT_ONCE = 1  # snapshots being built at a time; each is one loop turn of its own


_LIST_ORDER = {"GlobalNetworkPolicy": 0, "Pod": 1, "KubernetesNetworkPolicy": 2, "NetworkPolicy": 2}
"""The kinds the initial list holds back, and the order they are fed in once it is complete
(then by namespace; within one, in the order they were listed)."""


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
        list_batch_seconds: float = LIST_BATCH_SECONDS,
    ) -> None:
        self.epoch = epoch
        self._settle_gc = settle_gc  # the controller process sets it; tests sharing a process do not
        self.layout = layout
        self.graph = graph if graph is not None else CalcGraph()
        self.queue: asyncio.Queue[SyncEvent] = asyncio.Queue(maxsize=queue_size)
        self.tracker = tracker
        self.in_sync = False  # the initial list is compiled and every node has its epoch marker
        self.revision = 0
        self._publish = publish
        self._metrics = metrics
        self._flush_interval = flush_interval
        self._list_batch_seconds = list_batch_seconds
        self._seq: dict[str, int] = {}
        self._fed = 0.0  # seconds of work since the last compile step of the initial list
        self._flushed_revision = 0
        self._last_flush = 0.0
        self._stream = asyncio.Lock()  # held while one flush's (or gap's) messages are published
        self._snapshots = asyncio.Semaphore(SNAPSHOTS_AT_ONCE)
        self.changed = asyncio.Event()  # set after every flush; waiters clear it

    async def run(self) -> None:
        await self._compile_initial_list()
        while True:
            batch = [await self.queue.get()]
            while len(batch) < MAX_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            started = time.perf_counter()
            self._process(batch)
            await asyncio.sleep(0)  # a full queue never suspends `get`: let the other tasks run
            wait = self._last_flush + self._flush_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                while len(batch) < MAX_BATCH and not self.queue.empty():
                    more = [self.queue.get_nowait()]
                    self._process(more)
                    batch += more
            await self.flush()
            self._metrics.calc_graph_update_seconds.observe(time.perf_counter() - started)

    async def _compile_initial_list(self) -> None:
        """Compile the initial list in bounded steps, publishing nothing; then start the epoch:
        every known node gets its marker, and `in_sync` turns true.

        Tiers, nodes, namespaces and services are fed as they arrive. Policies and pods are
        decoded as they arrive but held (the latest value per key) until the list is complete,
        then fed in `_LIST_ORDER`: global policies, pods, then namespaced policies namespace by
        namespace. Fed in list order (pods, then policies) each compile step's flush would
        recompute every endpoint its policies select (an ``all()`` global policy: every endpoint
        in the cluster, in one flush) and most endpoints once per step; pods after every policy
        would make each pod be evaluated against the selectors of every policy (selectors
        registered before any pod exists are indexed by guesswork). In this order a step's flush
        touches the endpoints of a few namespaces, and each endpoint is computed about twice. The
        graph's result does not depend on the order of updates nor on where flushes fall
        (tests/graph), so this ends where one big flush of the list would.
        """
        held: dict[tuple[int, str], dict[str, tuple[ResourceKey, Resource | None]]] = {}
        while True:
            event = await self.queue.get()
            self.revision = max(self.revision, event.revision)
            if isinstance(event, InSync):
                break
            key = self.layout.resource_key(event.key)
            if key is None:
                continue
            began = time.perf_counter()
            if key.kind in _LIST_ORDER:
                group = held.setdefault((_LIST_ORDER[key.kind], key.namespace), {})
                group[event.key] = (key, self._decode(key, event))
            else:
                self.graph.on_update(key, self._decode(key, event))
            await self._compile_step(began)
        for place in sorted(held):  # a few per namespace: sorting them costs nothing
            for key, resource in held.pop(place).values():
                began = time.perf_counter()
                self.graph.on_update(key, resource)
                await self._compile_step(began)
        began = time.perf_counter()
        await self.flush(epoch_start=True)
        if self._settle_gc:
            settle_garbage_collector()
        self.in_sync = True
        self._metrics.calc_graph_update_seconds.observe(self._fed + time.perf_counter() - began)
        self.changed.set()

    async def _compile_step(self, began: float) -> None:
        """Count the work since `began`; once ``list_batch_seconds`` of it have accumulated, end
        the compile step: flush the graph, drop its ops (no node has been sent anything of this
        epoch, and its marker will make every agent fetch a snapshot) and yield. In the
        controller process a step also moves what it built out of the garbage collector's view,
        so collections do not rescan the growing graph (compiling makes no cyclic garbage for
        them to find)."""
        self._fed += time.perf_counter() - began
        if self._fed < self._list_batch_seconds:
            return
        began = time.perf_counter()
        self.graph.flush()
        if self._settle_gc:
            gc.freeze()
        self._metrics.calc_graph_update_seconds.observe(self._fed + time.perf_counter() - began)
        self._fed = 0.0
        await asyncio.sleep(0)

    def _process(self, events: Iterable[SyncEvent]) -> None:
        for event in events:
            self.revision = max(self.revision, event.revision)
            if isinstance(event, Update) and (key := self.layout.resource_key(event.key)) is not None:
                self.graph.on_update(key, self._decode(key, event))

    def _decode(self, key: ResourceKey, event: Update) -> Resource | None:
        if event.value is None:
            return None
        decoded = decode(self.layout, event.key, event.value, event.revision)
        if isinstance(decoded, InvalidEntry):
            log.warning(
                "invalid resource in datastore, treated as absent: %s: %s", decoded.key, decoded.reason
            )
            self._metrics.invalid_resources.inc()
            return None
        return decoded

    async def flush(self, *, epoch_start: bool = False) -> None:
        """Flush the graph and publish one diff per affected node (or epoch markers at epoch start).

        Publishing holds the stream lock, so a snapshot never sees a node's state with ops whose
        message has not been given its seq yet; it yields every `SENDS_PER_TURN` messages."""
        async with self._stream:
            per_node = self.graph.flush()
            self._flushed_revision = self.revision
            self._last_flush = time.monotonic()
            if epoch_start:
                per_node = {node: () for node in self.graph.nodes()}
            known = self.graph.nodes()
            for sent, (node, ops) in enumerate(sorted(per_node.items()), start=1):
                await self._send(node, ops)
                if sent % SENDS_PER_TURN == 0:
                    await asyncio.sleep(0)
        for node in self.tracker.nodes():
            if node not in known:
                self.tracker.forget(node)
        self.tracker.compiled(self._flushed_revision)
        self._metrics.compiled_revision.set(self._flushed_revision)
        self.changed.set()

    async def _send(self, node: str, ops: tuple[Op, ...]) -> None:
        seq = self._seq.get(node, 0) + 1
        self._seq[node] = seq
        self.tracker.sent(node, seq, self._flushed_revision)
        await self._publish(NodeDiff(node, StreamPosition(self.epoch, seq, self._flushed_revision), ops))

    async def force_gap(self, nodes: Iterable[str]) -> None:
        """Skip a seq for ``nodes`` (their last message may be lost) and send each an empty diff
        after the gap: their agents see the gap at once and fetch a snapshot rather than miss a
        diff (a lost marker is retried the same way on the next delivery check)."""
        async with self._stream:
            for node in sorted(nodes):
                self._seq[node] = self._seq.get(node, 0) + 1
                await self._send(node, ())

    async def snapshot(self, node: str) -> NodeDiff:
        """The node's full state as of the last flush, at that flush's position (its seq for the
        node and the revision it compiled); what arrived since reaches the agent as the next diffs.

        Admission: `SNAPSHOTS_AT_ONCE` are built at a time and each one ends with a yield, so when
        a whole cluster's agents ask at once (an epoch start), the lease keeper, the watch and MQTT
        run between snapshots instead of after all of them. Only the engine task changes the
        graph; a snapshot reads it between flushes (under the stream lock).
        """
        async with self._snapshots:
            async with self._stream:
                state = self.graph.node_state(node)
                position = StreamPosition(self.epoch, self._seq.get(node, 0), self._flushed_revision)
            diff = NodeDiff(node, position, snapshot_ops(state), snapshot=True)
            self._metrics.snapshots.inc()
            await asyncio.sleep(0)
        return diff

    def dry_run(self, changes: list[tuple[ResourceKey, Resource | None]]) -> dict[str, tuple[Op, ...]]:
        return self.graph.dry_run(changes)

    def expected_hash(self, node: str) -> str:
        return self.graph.node_state(node).content_hash()
