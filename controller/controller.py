"""One controller: leadership, the syncer → engine pipeline, publishing and the status feed.

Owns the `Controller`, which wires injected parts (a `KeyValueStore`, a `DiffPublisher`, a
`StatusWatcher`, an `Election`) so the real process (`controller.app`), the embedded cluster and
tests run the same code. While a standby it serves nothing but health; once it wins the election
it takes a new epoch, lists and watches the store, compiles, publishes and tracks convergence
until leadership is lost (then `run` raises `LeadershipLost` and the process exits to be
restarted as a standby — a fresh graph and a fresh epoch, never a half-reset one).

::

    Election.campaign ─▶ epoch ─▶ Engine(epoch) ◀─queue── ListWatchSyncer(store)
                                     │ NodeDiff
                                     ▼
                      encode ─▶ DiffPublisher.publish(node)        StatusWatcher ─▶ StatusFeed ─▶ tracker
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry

from controller.engine import Engine
from controller.leader import Election
from controller.metrics import ControllerMetrics
from controller.resource_store import KeyLayout, ResourceStore
from controller.status_feed import StatusFeed
from iokit.bus import DiffPublisher, PublishError
from iokit.status import StatusWatcher
from iokit.store import KeyValueStore
from iokit.syncer import ListWatchSyncer
from policycore.convergence import ConvergenceTracker
from policycore.diff import NodeDiff
from wire.codec import encode_diff

log = logging.getLogger(__name__)


class Controller:
    def __init__(
        self,
        *,
        store: KeyValueStore,
        publisher: DiffPublisher,
        status_watcher: StatusWatcher,
        election: Election,
        registry: CollectorRegistry | None = None,
        flush_interval: float = 0.005,
        layout: KeyLayout = KeyLayout(),
        settle_gc: bool = False,
    ) -> None:
        self.settle_gc = settle_gc
        self.store = store
        self.layout = layout
        self.resources = ResourceStore(store, layout)
        self.publisher = publisher
        self.status = StatusFeed(status_watcher)
        self.election = election
        self.metrics = ControllerMetrics(registry or CollectorRegistry())
        self.flush_interval = flush_interval
        self.engine: Engine | None = None
        self.syncer: ListWatchSyncer | None = None
        self.changed = asyncio.Event()  # set on every flush and every node report; waiters clear it
        self.status.on_report.append(lambda _: self.changed.set())
        self.publish_log: list[tuple[str, int, int, float]] | None = None  # (node, seq, bytes, t) for benches

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.engine.in_sync

    async def _publish(self, diff: NodeDiff) -> None:
        payload = encode_diff(diff)
        await self.publisher.publish(diff.node, payload)
        self.metrics.messages_published.inc()
        self.metrics.bytes_published.inc(len(payload))
        if self.publish_log is not None:
            self.publish_log.append(
                (diff.node, diff.position.seq, len(payload), asyncio.get_running_loop().time())
            )

    async def run_status(self) -> None:
        """Follow node statuses (leader or not: a standby is ready to take over with them)."""
        await self.status.run()

    async def run(self) -> None:
        """Campaign; then lead until leadership is lost (raises `LeadershipLost`)."""
        await self.publisher.start()
        epoch = await self.election.campaign()
        self.metrics.is_leader.set(1)
        self.metrics.epoch.set(epoch)
        tracker = ConvergenceTracker(epoch)
        engine = Engine(
            epoch=epoch,
            publish=self._publish,
            tracker=tracker,
            metrics=self.metrics,
            flush_interval=self.flush_interval,
            layout=self.layout,
            settle_gc=self.settle_gc,
        )
        self.status.attach(tracker)
        self.syncer = ListWatchSyncer(self.store, self.layout.resources)
        self.engine = engine
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.syncer.run(engine.queue), name="syncer")
                group.create_task(engine.run(), name="engine")
                group.create_task(self._forward_changes(engine), name="changes")
                group.create_task(self._confirm_deliveries(engine), name="deliveries")
                group.create_task(self.election.hold(), name="leadership")
        except BaseExceptionGroup as group_error:
            raise group_error.exceptions[0] from None
        finally:
            self.metrics.is_leader.set(0)
            self.engine = None
            self.changed.set()  # wake WaitConverged waiters and health: they now answer UNAVAILABLE

    async def _forward_changes(self, engine: Engine) -> None:
        while True:
            await engine.changed.wait()
            engine.changed.clear()
            self.changed.set()

    async def _confirm_deliveries(self, engine: Engine) -> None:
        """Publishing is fire-and-forget; here failures surface. A node whose message was lost gets
        a gap in its seq, so its agent fetches a snapshot instead of silently missing a diff."""
        while True:
            await asyncio.sleep(0.05)
            try:
                await self.publisher.flush()
            except PublishError as err:
                log.warning("%s; forcing those nodes to resync", err)
                await engine.force_gap(err.nodes)

    async def stop(self) -> None:
        await self.election.resign()
        await self.publisher.stop()
