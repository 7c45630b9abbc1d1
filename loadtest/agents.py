"""Simulated nodes: the real `NodeAgent`, many per event loop, over injected transports.

Owns `SimNode` (one agent incarnation: `NodeAgent` + the recorders around its subscription,
status publisher, snapshot fetches and in-memory data plane, reporting into a `RecordSink`),
`ThrottledSubscriber` (a CPU-throttled node: slow at consuming) and `AgentHost` (the nodes of one
process: spawning them at a rate, restarting one, the hashes of what each programmed, stopping
them all). Transports are factories, so the same host runs in the embedded backend (memory twins)
and in each agent worker process of the services backend (one Kafka consumer for the host's
nodes, MQTT, gRPC snapshots). The code path is the one a real agent runs, minus the kernel:
stream position, batched apply, snapshot on gap, fall-behind cut-off, desired state, reports.

Invariants: a node's incarnation is stopped before the next one starts, and the next one takes a
snapshot before reading deltas; every node, slow or not, reads the host's shared subscription: a
slow node's full queue overflows into a resync marker instead of pausing the others, and a slow
node more than ``max_lag`` behind cuts itself off (`node_agent.agent`). Every snapshot a node
asks for is recorded with its cause (start, gap, cut-off, overflow).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from iokit.bus import DiffMessage, DiffSubscriber, one_by_one
from iokit.status import StatusPublisher
from loadtest.recorders import RecordingDataPlane, RecordingStatus, RecordingSubscriber, RecordSink
from node_agent.agent import DEFAULT_MAX_LAG, NodeAgent
from node_agent.applier import FetchSnapshot
from policycore.diff import NodeDiff

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Transports:
    """Per-node factories; ``subscription(node)`` is the node's view of the host's shared subscriber."""

    subscription: Callable[[str], Any]
    status: Callable[[str], StatusPublisher]
    fetch_snapshot: FetchSnapshot


class ThrottledSubscriber:
    """A node whose CPU is throttled, decode-bound: it takes one message at a time from its
    subscriber (the backlog stays there, in the bounded queue that overflows), and after the agent
    has handled one it is busy ``seconds_per_message`` before it takes the next — batching saves
    such a node nothing. Messages dropped by `skip_to_end` cost nothing. Without a cut-off it falls
    further and further behind once its messages arrive faster than one per ``seconds_per_message``."""

    def __init__(self, inner: DiffSubscriber, seconds_per_message: float) -> None:
        self.inner = inner
        self.node = inner.node
        self.partition = inner.partition
        self.seconds_per_message = seconds_per_message
        self.busy_s = 0.0
        self._skips = 0

    async def start(self) -> None:
        await self.inner.start()
        self.partition = self.inner.partition

    def __aiter__(self) -> AsyncIterator[DiffMessage]:
        return one_by_one(self.batches())

    async def batches(self) -> AsyncGenerator[list[DiffMessage], None]:
        async for message in self.inner:
            skips = self._skips
            yield [message]
            if self._skips == skips and not message.resync:
                self.busy_s += self.seconds_per_message
                await asyncio.sleep(self.seconds_per_message)

    async def skip_to_end(self) -> None:
        self._skips += 1
        await self.inner.skip_to_end()

    async def position(self) -> int:
        return await self.inner.position()

    async def stop(self) -> None:
        await self.inner.stop()


class SimNode:
    """One incarnation of one simulated node's agent (``seconds_per_message`` > 0: throttled)."""

    def __init__(
        self,
        node: str,
        transports: Transports,
        sink: RecordSink,
        *,
        seconds_per_message: float = 0.0,
        max_lag: float = DEFAULT_MAX_LAG,
    ) -> None:
        self.node = node
        self.sink = sink
        self.dataplane = RecordingDataPlane()
        self.throttled = seconds_per_message > 0
        recording = RecordingSubscriber(node, transports.subscription(node), self._on_message, own=False)
        subscriber: DiffSubscriber = recording
        if self.throttled:
            subscriber = ThrottledSubscriber(recording, seconds_per_message)
        self._status = RecordingStatus(transports.status(node), self._on_status)
        self._fetch_snapshot = transports.fetch_snapshot
        self.agent = NodeAgent(
            node,
            subscriber=subscriber,
            status=self._status,
            fetch_snapshot=self._fetch,
            dataplane=self.dataplane,
            hash_reports=False,
            max_lag=max_lag,
        )
        self._applied = 0
        self._snapshots = 0
        self._causes = (0, 0, 0)
        self._bytes = 0
        self._messages = 0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.agent.run(), name=f"agent-{self.node}")

    async def _fetch(self, node: str) -> NodeDiff:
        """Record why the agent asks for this snapshot: its counters moved just before it asks."""
        agent = self.agent
        counts = (agent.cutoffs, agent.overflows, agent.applier.out_of_order)
        cutoffs, overflows, gaps = (now - before for now, before in zip(counts, self._causes, strict=True))
        self._causes = counts
        cause = "cut-off" if cutoffs else "overflow" if overflows else "gap" if gaps else "start"
        self.sink.snapshot(node, cause)
        return await self._fetch_snapshot(node)

    def _on_message(self, message: DiffMessage) -> None:
        self._bytes += len(message.payload)
        self._messages += 1
        if not self.throttled:  # a throttled node takes a message when its slowness lets it
            now = time.time()
            received_ms = message.received_ms or now * 1000.0  # the bus hop ends at the consumer
            self.sink.hop(now, max(0.0, received_ms - message.timestamp_ms))

    def _on_status(self, status: Mapping[str, Any]) -> None:
        nbytes, self._bytes = self._bytes, 0  # what the batch behind this report carried
        messages, self._messages = self._messages, 0
        if not status.get("ready"):
            return
        revision = int(status.get("revision", 0))
        if revision <= self._applied:
            return
        self._applied = revision
        self.sink.applied(self.node, revision, time.time())
        snapshots = self.agent.applier.snapshots
        if snapshots != self._snapshots:
            self._snapshots = snapshots
        elif self.dataplane.last_noop and messages == 1:
            # One message that changed nothing went to an unaffected node. A batch of several that
            # nets to nothing (a pod created and deleted before its node read either) did not.
            self.sink.unaffected(self.node, revision, nbytes)

    async def stop(self, *, graceful: bool) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.agent.stop(graceful=graceful)
        self.dataplane.close()

    def programmed_hash(self) -> str:
        return self.dataplane.programmed().content_hash()

    @property
    def failed(self) -> BaseException | None:
        task = self.task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()


class AgentHost:
    """The simulated nodes of one process; see the module docstring."""

    def __init__(self, transports: Transports, sink: RecordSink, *, max_lag: float = DEFAULT_MAX_LAG) -> None:
        self.transports = transports
        self.sink = sink
        self.max_lag = max_lag
        self.nodes: dict[str, SimNode] = {}
        self.slow: dict[str, float] = {}

    def _new(self, node: str) -> SimNode:
        sim = SimNode(
            node,
            self.transports,
            self.sink,
            seconds_per_message=self.slow.get(node, 0.0),
            max_lag=self.max_lag,
        )
        self.nodes[node] = sim
        sim.start()
        return sim

    async def spawn(self, nodes: list[str], rate: float, slow: Mapping[str, float] | None = None) -> None:
        """Start an agent per node, ``rate`` per second (0: all at once); ``slow``: node → seconds
        its (throttled) agent is busy per message."""
        self.slow = dict(slow or {})
        began = time.monotonic()
        for index, node in enumerate(nodes):
            if rate > 0:
                delay = began + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            self._new(node)

    async def restart(self, node: str) -> tuple[float, float]:
        """Kill ``node``'s agent (abruptly: its will fires) and start a fresh one; (started, ready)."""
        started = time.time()
        old = self.nodes[node]
        await old.stop(graceful=False)
        sim = self._new(node)
        await sim.agent.started.wait()
        ready = time.time()
        self.sink.restarted(node, started, ready)
        return started, ready

    def hashes(self) -> dict[str, str]:
        return {node: sim.programmed_hash() for node, sim in self.nodes.items()}

    def failures(self) -> dict[str, str]:
        return {node: repr(sim.failed) for node, sim in self.nodes.items() if sim.failed is not None}

    async def stop(self) -> None:
        for sim in list(self.nodes.values()):
            try:
                await sim.stop(graceful=True)
            except Exception as error:  # one node failing to stop must not keep the others running
                log.warning("%s: stop failed: %r", sim.node, error)
