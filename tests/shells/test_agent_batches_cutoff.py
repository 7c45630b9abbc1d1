"""The node agent over the memory bus: batched apply, overflow markers and the max_lag cut-off.

Proves: diffs already waiting are offered in order and programmed and reported once (malformed
ones counted and skipped, duplicates ignored, a gap inside the batch resynced from a snapshot the
rest continues from), for a single-node subscriber and a multi-node one; a node whose multi-node
queue overflows does not hold up another node of the same subscriber, and resyncs from a snapshot
to the right state once it reads on; an agent more than ``max_lag`` behind skips to the end and
resyncs (skipped messages never reach it), while messages older than its newest snapshot — covered
by it — never cut it off. Clocks are injected (the broker's timestamps and the agent's), no sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any

import pytest

from iokit.bus import DiffMessage, one_by_one
from iokit.memory_bus import MemoryBroker, MemoryDiffSubscriber, MemoryMultiNodeSubscriber
from node_agent.agent import NodeAgent
from node_agent.dataplane.memory import MemoryDataPlane
from policycore.diff import IpSetDelta, IpSetReplace, NodeDiff, StreamPosition
from policycore.ir import IpSet
from wire.codec import encode_diff

SET = "s:web"


class Source:
    """The controller's side: per-node streams of one growing ip set, and snapshots of them."""

    def __init__(self) -> None:
        self.seq: dict[str, int] = {}
        self.members: dict[str, set[str]] = {}
        self.fetches: dict[str, int] = {}

    def diff(self, node: str) -> NodeDiff:
        seq = self.seq.get(node, 0) + 1
        member = f"10.0.{len(node)}.{seq}"
        self.seq[node] = seq
        self.members.setdefault(node, set()).add(member)
        op = IpSetDelta(SET, frozenset({member}), frozenset())
        return NodeDiff(node, StreamPosition(1, seq, 100 + seq), (op,))

    async def snapshot(self, node: str) -> NodeDiff:
        self.fetches[node] = self.fetches.get(node, 0) + 1
        seq = self.seq.get(node, 0)
        ipset = IpSet(SET, "ip", frozenset(self.members.get(node, set())))
        return NodeDiff(node, StreamPosition(1, seq, 100 + seq), (IpSetReplace(ipset),), True)


class Reports:
    """A `StatusPublisher` keeping every report; `until` awaits one at a given seq."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.seen: list[Mapping[str, Any]] = []
        self._changed = asyncio.Event()

    async def start(self) -> None:
        return None

    def offer(self, status: Mapping[str, Any]) -> None:
        self.seen.append(dict(status))
        self._changed.set()

    async def publish(self, status: Mapping[str, Any]) -> None:
        self.offer(status)

    async def stop(self, graceful: bool = True) -> None:
        return None

    async def until(self, seq: int) -> None:
        async with asyncio.timeout(10):
            while not (self.seen and self.seen[-1]["seq"] >= seq):
                self._changed.clear()
                await self._changed.wait()


class Gated:
    """A `DiffSubscriber` that holds each batch it read until ``open`` is set; records what it
    handed over. ``own``: it starts and stops ``inner`` (a multi-node subscription has neither)."""

    def __init__(self, inner: Any, *, own: bool = True) -> None:
        self.inner = inner
        self.node = inner.node
        self.partition = getattr(inner, "partition", -1)
        self.open = asyncio.Event()
        self.open.set()
        self.holding = asyncio.Event()
        self.handed: list[list[DiffMessage]] = []
        self._own = own

    async def start(self) -> None:
        if self._own:
            await self.inner.start()

    def __aiter__(self) -> AsyncIterator[DiffMessage]:
        return one_by_one(self.batches())

    async def batches(self) -> AsyncGenerator[list[DiffMessage], None]:
        async for batch in self.inner.batches():
            if not self.open.is_set():
                self.holding.set()
            await self.open.wait()
            self.handed.append(batch)
            yield batch

    async def skip_to_end(self) -> None:
        await self.inner.skip_to_end()

    async def position(self) -> int:
        return int(await self.inner.position()) if self._own else -1

    async def stop(self) -> None:
        if self._own:
            await self.inner.stop()


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def seconds(self) -> float:
        return self.now

    def ms(self) -> int:
        return int(self.now * 1000)


class Node:
    """One running agent and its parts."""

    def __init__(self, node: str, subscriber: Gated, source: Source, clock: Callable[[], float]) -> None:
        self.subscriber = subscriber
        self.reports = Reports(node)
        self.dataplane = MemoryDataPlane()
        self.agent = NodeAgent(
            node,
            subscriber=subscriber,
            status=self.reports,
            fetch_snapshot=source.snapshot,
            dataplane=self.dataplane,
            max_lag=10.0,
            clock=clock,
        )
        self.task = asyncio.create_task(self.agent.run())

    async def started(self) -> None:
        async with asyncio.timeout(10):
            await self.agent.started.wait()

    def members(self) -> set[str]:
        ipset = self.dataplane.programmed().ipsets.get(SET)
        return set(ipset.members) if ipset else set()

    def metric(self, name: str) -> float:
        return self.agent.metrics.registry.get_sample_value(name) or 0.0

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.agent.stop()


@pytest.fixture
async def world() -> AsyncIterator[tuple[MemoryBroker, Source, Clock, list[Any]]]:
    clock = Clock()
    broker = MemoryBroker(4, clock=clock.ms)
    cleanup: list[Any] = []
    yield broker, Source(), clock, cleanup
    for item in reversed(cleanup):
        await item.stop()


def publish(broker: MemoryBroker, source: Source, node: str, count: int) -> list[DiffMessage]:
    """Append ``count`` new diffs for ``node`` at once (no await: they wait together)."""
    return [broker.append(node, encode_diff(source.diff(node))) for _ in range(count)]


@pytest.mark.parametrize("kind", ["single", "multi"])
async def test_waiting_diffs_are_programmed_and_reported_once(world: Any, kind: str) -> None:
    broker, source, clock, cleanup = world
    node = "node-a"
    if kind == "single":
        subscriber = Gated(MemoryDiffSubscriber(broker, node))
    else:
        multi = MemoryMultiNodeSubscriber(broker, [node])
        await multi.start()
        cleanup.append(multi)
        subscriber = Gated(multi.subscription(node), own=False)
    sim = Node(node, subscriber, source, clock.seconds)
    cleanup.append(sim)
    await sim.started()
    await sim.reports.until(0)
    applies, reports, batches = sim.dataplane.applies, len(sim.reports.seen), len(subscriber.handed)

    records = publish(broker, source, node, 4)
    broker.append(node, b"\xff\xff not a diff")
    broker.append(node, records[1].payload)  # a duplicate
    publish(broker, source, node, 2)
    await sim.reports.until(6)

    assert len(subscriber.handed) == batches + 1 and len(subscriber.handed[-1]) == 8
    assert sim.dataplane.applies == applies + 1, "one data-plane transaction for the batch"
    assert len(sim.reports.seen) == reports + 1 and sim.reports.seen[-1]["seq"] == 6
    assert sim.members() == source.members[node]
    assert sim.metric("kaliko_agent_malformed_messages_total") == 1
    assert sim.metric("kaliko_agent_messages_total") == 8
    assert sim.agent.applier.snapshots == 1 and sim.agent.cutoffs == 0


async def test_a_gap_inside_a_batch_resyncs_and_the_rest_continues(world: Any) -> None:
    broker, source, clock, cleanup = world
    node = "node-a"
    sim = Node(node, Gated(MemoryDiffSubscriber(broker, node)), source, clock.seconds)
    cleanup.append(sim)
    await sim.started()
    await sim.reports.until(0)
    applies = sim.dataplane.applies
    first = [source.diff(node) for _ in range(2)]
    source.diff(node)  # seq 3 is never published
    rest = [source.diff(node) for _ in range(2)]
    for diff in [*first, *rest]:
        broker.append(node, encode_diff(diff))
    await sim.reports.until(5)
    assert sim.agent.applier.out_of_order == 1 and source.fetches[node] == 2
    assert sim.dataplane.applies == applies + 1
    assert sim.members() == source.members[node]


async def test_an_overflowing_node_does_not_hold_up_another_and_resyncs(world: Any) -> None:
    broker, source, clock, cleanup = world
    slow, fast = "node-slow", "node-fast"
    multi = MemoryMultiNodeSubscriber(broker, [slow, fast], queue_size=3)
    await multi.start()
    cleanup.append(multi)
    stuck = Node(slow, Gated(multi.subscription(slow), own=False), source, clock.seconds)
    other = Node(fast, Gated(multi.subscription(fast), own=False), source, clock.seconds)
    cleanup += [stuck, other]
    for sim in (stuck, other):
        await sim.started()
        await sim.reports.until(0)
    stuck.subscriber.open.clear()

    for round_ in range(1, 9):  # the slow node reads nothing meanwhile
        publish(broker, source, slow, 1)
        publish(broker, source, fast, 1)
        await other.reports.until(round_)
    assert other.members() == source.members[fast]
    assert multi.overflows >= 1 and multi.subscription(slow).overflows == multi.overflows
    assert multi.subscription(fast).overflows == 0

    stuck.subscriber.open.set()
    await stuck.reports.until(8)
    assert stuck.members() == source.members[slow]
    assert any(message.resync for batch in stuck.subscriber.handed for message in batch)
    assert stuck.agent.overflows >= 1 and source.fetches[slow] == 2
    assert stuck.metric("kaliko_agent_overflows_total") == stuck.agent.overflows
    assert stuck.metric("kaliko_agent_snapshot_fetches_total") == 2


async def test_an_agent_too_far_behind_skips_to_the_end_and_resyncs(world: Any) -> None:
    broker, source, clock, cleanup = world
    node = "node-a"
    sim = Node(node, Gated(MemoryDiffSubscriber(broker, node)), source, clock.seconds)
    cleanup.append(sim)
    await sim.started()
    await sim.reports.until(0)
    sim.subscriber.open.clear()
    clock.now += 1
    publish(broker, source, node, 5)
    await sim.subscriber.holding.wait()  # read, then held: the node is busy
    clock.now += 20
    skipped = {record.offset for record in publish(broker, source, node, 2)}
    sim.subscriber.open.set()
    await sim.reports.until(7)

    assert sim.agent.cutoffs == 1 and source.fetches[node] == 2
    assert sim.metric("kaliko_agent_cutoffs_total") == 1
    assert sim.members() == source.members[node]
    handed = {message.offset for batch in sim.subscriber.handed for message in batch}
    assert not handed & skipped, "skipped messages reached the agent"

    publish(broker, source, node, 1)  # fresh: applied as usual
    await sim.reports.until(8)
    assert sim.agent.cutoffs == 1 and source.fetches[node] == 2
    assert sim.members() == source.members[node]


async def test_messages_older_than_the_snapshot_do_not_cut_off(world: Any) -> None:
    broker, source, clock, cleanup = world
    node = "node-a"
    clock.now -= 500
    publish(broker, source, node, 3)  # long ago; the first snapshot covers them
    clock.now += 500
    sim = Node(node, Gated(MemoryDiffSubscriber(broker, node, start_offset=0)), source, clock.seconds)
    cleanup.append(sim)
    await sim.started()
    publish(broker, source, node, 1)
    await sim.reports.until(4)
    assert sim.agent.cutoffs == 0 and source.fetches[node] == 1
    assert sim.members() == source.members[node]
