"""One node agent: its consume loop, its drift-repair loop and its metrics, over injected parts.

Owns the `NodeAgent` that wires a `DiffSubscriber`, a `StatusPublisher`, a snapshot fetcher and a
`DataPlane` around one `Applier`. The real process (`node_agent.app`), the embedded cluster and
the load harness build it with real or in-memory parts; the code path is the same.

::

    subscriber ──DiffMessage──▶ decode (malformed: count, skip) ──▶ Applier.offer ──▶ DataPlane.apply
                                                 gap/new epoch ──▶ fetch_snapshot    │
                                                                    StatusPublisher ◀┘ (what is programmed)

Start-up order matters: the subscriber is positioned *before* the first snapshot is fetched, so
no message published after the snapshot can be missed; messages at or before the snapshot's seq
are then ignored as stale.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from iokit.bus import DiffSubscriber
from iokit.status import StatusPublisher
from node_agent.applier import AgentStatus, Applier, FetchSnapshot
from node_agent.dataplane.protocol import DataPlane
from wire.codec import MalformedMessage, decode_diff

log = logging.getLogger(__name__)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.malformed = Counter(
            "kaliko_agent_malformed_messages", "Bus messages that were not valid diffs", registry=registry
        )
        self.messages = Counter("kaliko_agent_messages", "Diffs read from the bus", registry=registry)
        self.apply_seconds = Histogram(
            "kaliko_int_dataplane_apply_time_seconds",
            "Time to handle one diff (including the data-plane transaction)",
            registry=registry,
        )
        self.repairs = Counter(
            "kaliko_agent_dataplane_repairs", "Drifted data-plane objects repaired", registry=registry
        )
        self.snapshots = Gauge("kaliko_agent_snapshots", "Snapshots applied since start", registry=registry)
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
    ) -> None:
        self.node = node
        self.subscriber = subscriber
        self.status = status
        self.metrics = AgentMetrics(registry or CollectorRegistry())
        self.resync_interval = resync_interval
        self.applier = Applier(
            node,
            dataplane,
            fetch_snapshot=fetch_snapshot,
            report=self._report,
            min_apply_interval=min_apply_interval,
            hash_reports=hash_reports,
        )
        self.started = asyncio.Event()

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
        async for message in self.subscriber:
            self.metrics.messages.inc()
            try:
                diff = decode_diff(message.payload)
            except MalformedMessage as err:
                self.metrics.malformed.inc()
                log.warning("%s: skipping malformed message at offset %d: %s", self.node, message.offset, err)
                continue
            started = time.perf_counter()
            await self.applier.offer(diff)
            self.metrics.apply_seconds.observe(time.perf_counter() - started)

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
