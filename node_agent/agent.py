"""One node agent: its consume loop, its drift-repair loop and its metrics, over injected parts.

Owns the `NodeAgent` that wires a `DiffSubscriber`, a `StatusPublisher`, a snapshot fetcher and a
`DataPlane` around one `Applier`, and the agent's fall-behind cut-off. The real process
(`node_agent.app`), the embedded cluster and the load harness build it with real or in-memory
parts; the code path is the same.

::

    subscriber ──batch of DiffMessages──▶ resync marker? too old? ──▶ snapshot first (+ skip_to_end)
                 ──▶ decode each (malformed: count, skip) ──▶ Applier.offer_batch ──▶ DataPlane.apply
                                      gap/new epoch ──▶ fetch_snapshot          (once per batch)
                                                         StatusPublisher ◀──────┘ (what is programmed)

Batching: the subscriber hands over every message already waiting (the rest of a Kafka fetch, a
multi-node queue's backlog); they are decoded and offered in order, then programmed and reported
once (`Applier.offer_batch`).

Cut-off (Typha's "too far behind"): a batch holding a resync marker (`iokit.bus.DiffMessage.resync`:
the subscriber dropped this node's backlog) starts with a snapshot, and what follows the last
marker is offered after it. A batch whose message was produced more than ``max_lag`` seconds ago
(producer timestamp against this clock) and after the newest snapshot arrived is dropped:
the subscriber skips to its end, then a snapshot is fetched. Nothing is lost: the snapshot is
asked for after the skip, so it covers every skipped message, and everything published after the
skip is still read (the stale part ignored by seq). Messages published before the newest snapshot
arrived never trigger a cut-off: that snapshot covers them or they follow it, so skipping would
only fetch the same state again (agents of a cold-start herd wait seconds for their snapshot).

Start-up order matters: the subscriber is positioned *before* the first snapshot is fetched, so
no message published after the snapshot can be missed; messages at or before the snapshot's seq
are then ignored as stale.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from iokit.bus import DiffMessage, DiffSubscriber
from iokit.status import StatusPublisher
from node_agent.applier import AgentStatus, Applier, FetchSnapshot
from node_agent.dataplane.protocol import DataPlane
from policycore.diff import NodeDiff
from wire.codec import MalformedMessage, decode_diff

log = logging.getLogger(__name__)
DEFAULT_MAX_LAG = 10.0


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.malformed = Counter(
            "kaliko_agent_malformed_messages", "Bus messages that were not valid diffs", registry=registry
        )
        self.messages = Counter("kaliko_agent_messages", "Diffs read from the bus", registry=registry)
        self.batches = Counter(
            "kaliko_agent_batches", "Batches of waiting diffs handled (one apply each)", registry=registry
        )
        self.apply_seconds = Histogram(
            "kaliko_int_dataplane_apply_time_seconds",
            "Time to handle one batch of diffs (including the data-plane transaction)",
            registry=registry,
        )
        self.repairs = Counter(
            "kaliko_agent_dataplane_repairs", "Drifted data-plane objects repaired", registry=registry
        )
        self.snapshots = Gauge("kaliko_agent_snapshots", "Snapshots applied since start", registry=registry)
        self.snapshot_fetches = Counter(
            "kaliko_agent_snapshot_fetches", "Snapshots asked for (start, gap, cut-off)", registry=registry
        )
        self.overflows = Counter(
            "kaliko_agent_overflows",
            "Resync markers read: the subscriber's queue for this node overflowed and was dropped",
            registry=registry,
        )
        self.cutoffs = Counter(
            "kaliko_agent_cutoffs",
            "Times the agent was more than max_lag behind, skipped to the end and resynced",
            registry=registry,
        )
        self.revision = Gauge(
            "kaliko_agent_programmed_revision", "Datastore revision programmed", registry=registry
        )


class NodeAgent:
    def __init__(
        self,
        node: str,
        *,
        subscriber: DiffSubscriber,
        status: StatusPublisher,
        fetch_snapshot: FetchSnapshot,
        dataplane: DataPlane,
        registry: CollectorRegistry | None = None,
        min_apply_interval: float = 0.0,
        resync_interval: float = 10.0,
        hash_reports: bool = True,
        max_lag: float = DEFAULT_MAX_LAG,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``max_lag``: seconds behind the producer before cutting off (0: never)."""
        if max_lag < 0:
            raise ValueError(f"max_lag: must be >= 0 seconds (0: never cut off), got {max_lag}")
        self.node = node
        self.subscriber = subscriber
        self.status = status
        self.metrics = AgentMetrics(registry or CollectorRegistry())
        self.resync_interval = resync_interval
        self.max_lag = max_lag
        self.overflows = 0
        self.cutoffs = 0
        self._clock = clock
        self._fetch_snapshot = fetch_snapshot
        self.applier = Applier(
            node,
            dataplane,
            fetch_snapshot=self._fetch,
            report=self._report,
            min_apply_interval=min_apply_interval,
            hash_reports=hash_reports,
            clock=clock,
        )
        self.started = asyncio.Event()

    async def _fetch(self, node: str) -> NodeDiff:
        self.metrics.snapshot_fetches.inc()
        return await self._fetch_snapshot(node)

    async def _report(self, status: AgentStatus) -> None:
        self.metrics.revision.set(status.revision)
        self.metrics.snapshots.set(self.applier.snapshots)
        self.status.offer(status.to_json())

    async def run(self) -> None:
        """Position the subscriber, take a first snapshot, then follow the stream (forever); a
        throttled applier's programming loop runs beside it and ends with it."""
        await self.status.start()
        await self.subscriber.start()
        if not self.applier.throttled:
            await self._follow()
            return
        try:
            async with asyncio.TaskGroup() as group:
                programming = group.create_task(self.applier.program_forever(), name=f"program/{self.node}")
                await self._follow()
                programming.cancel()
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None

    async def _follow(self) -> None:
        await self.applier.resync_from_snapshot()
        self.started.set()
        async for batch in self.subscriber.batches():
            started = time.perf_counter()
            await self._handle(batch)
            self.metrics.batches.inc()
            self.metrics.apply_seconds.observe(time.perf_counter() - started)

    async def _handle(self, batch: Sequence[DiffMessage]) -> None:
        resync = False
        self.metrics.messages.inc(sum(not message.resync for message in batch))
        markers = [index for index, message in enumerate(batch) if message.resync]
        if markers:
            self.overflows += len(markers)
            self.metrics.overflows.inc(len(markers))
            log.warning("%s: the subscriber dropped messages; resyncing from a snapshot", self.node)
            batch, resync = batch[markers[-1] + 1 :], True
        if batch and self._behind(batch):
            await self.subscriber.skip_to_end()
            self.cutoffs += 1
            self.metrics.cutoffs.inc()
            batch, resync = (), True
        await self.applier.offer_batch(self._decode(batch), resync=resync)

    def _behind(self, batch: Sequence[DiffMessage]) -> bool:
        """Whether a message of ``batch`` published after the newest snapshot arrived is
        older than ``max_lag`` (then skipping the backlog is cheaper than working through it)."""
        if not self.max_lag:
            return False
        now_ms = self._clock() * 1000.0
        covered_ms = int(self.applier.snapshot_received_at * 1000.0)  # timestamps are whole ms
        for message in batch:
            lag_ms = now_ms - message.timestamp_ms
            if message.timestamp_ms >= covered_ms and lag_ms > self.max_lag * 1000.0:
                log.warning(
                    "%s: %.1f s behind (max_lag %.1f s); skipping to the end and resyncing",
                    self.node,
                    lag_ms / 1000.0,
                    self.max_lag,
                )
                return True
        return False

    def _decode(self, batch: Sequence[DiffMessage]) -> list[NodeDiff]:
        diffs: list[NodeDiff] = []
        for message in batch:
            try:
                diffs.append(decode_diff(message.payload))
            except MalformedMessage as err:
                self.metrics.malformed.inc()
                log.warning("%s: skipping malformed message at offset %d: %s", self.node, message.offset, err)
        return diffs

    async def repair_drift(self) -> None:
        """Every ``resync_interval``: read the data plane back and repair what drifted (forever)."""
        while True:
            await asyncio.sleep(self.resync_interval)
            if not self.applier.ready:
                continue
            try:
                repaired = self.applier.dataplane.resync()  # in the loop: never alongside an apply
            except Exception as err:  # a failed read-back is reported, and retried next interval
                log.warning("%s: data-plane read-back failed: %s", self.node, err)
                continue
            if repaired:
                log.warning("%s: repaired %d drifted data-plane object(s)", self.node, repaired)
                self.metrics.repairs.inc(repaired)

    async def stop(self, *, graceful: bool = True) -> None:
        """graceful: say offline explicitly; otherwise just drop the connection (the will says it)."""
        await self.subscriber.stop()
        await self.status.stop(graceful=graceful)
