"""The engine's cold start and its snapshots: bounded steps, the oracle's result, admission.

Proves, on a seeded cluster of every kind:

* whatever the list's order (as listed, policies first, reversed, shuffled), with a pod changed
  and another deleted again within the list and one invalid value, and whether the initial list
  is compiled one event per step or in a single step, once in sync every node's `node_state`
  (and its hash) is `compile_all` of the listed resources, the engine knows the oracle's nodes,
  the invalid value was counted, and nothing but one epoch marker per node was published;
* the loop is not held through the compile: another task runs between compile steps;
* a herd of concurrent snapshots all return the oracle's state at the epoch's position, and they
  are built one per loop turn, with another task running between any two;
* a snapshot asked for while a flush is still publishing waits for it, and has that flush's state
  with that flush's seq (never newer state under an older seq);
* the NodeSync servicer answers UNAVAILABLE while the engine is not in sync and serves concurrent
  snapshot calls once it is.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterable

import grpc
import pytest
from prometheus_client import CollectorRegistry

from controller.engine import Engine
from controller.metrics import ControllerMetrics
from controller.node_sync import NodeSyncServicer
from controller.resource_store import KeyLayout, encode
from iokit.syncer import InSync, SyncEvent, Update
from loadtest.bench_core import Shape, generate
from policycore.calc.oracle import compile_all
from policycore.convergence import ConvergenceTracker
from policycore.diff import NodeDiff, StreamPosition, snapshot_ops
from policycore.ir import NodeState
from policycore.model import Resource, key_of
from policycore.model.kube import Pod
from wire.codec import diff_from_pb
from wire.gen.kaliko.v1 import node_stream_pb2 as pb
from wire.gen.kaliko.v1 import node_stream_pb2_grpc as pb_grpc

EPOCH = 3
LAYOUT = KeyLayout()
RESOURCES = generate(Shape(pods=240, policies=90, namespaces=12, nodes=16, teams=4), seed=5)
POLICY_KINDS = {"KubernetesNetworkPolicy", "NetworkPolicy", "GlobalNetworkPolicy"}


def as_listed(resources: list[Resource]) -> list[Resource]:
    return resources


def policies_first(resources: list[Resource]) -> list[Resource]:
    return sorted(resources, key=lambda r: key_of(r).kind not in POLICY_KINDS)


def reversed_list(resources: list[Resource]) -> list[Resource]:
    return resources[::-1]


def shuffled(resources: list[Resource]) -> list[Resource]:
    out = list(resources)
    random.Random(11).shuffle(out)
    return out


ORDERS = [as_listed, policies_first, reversed_list, shuffled]


def initial_list(order: Callable[[list[Resource]], list[Resource]]) -> tuple[list[SyncEvent], list[Resource]]:
    """The syncer's events for `RESOURCES` in `order` (a pod changed and one deleted again along
    the way, one value invalid), and the resources the datastore holds at its end."""
    resources = order(list(RESOURCES))
    pods = [r for r in resources if isinstance(r, Pod)]
    moved, deleted, broken = pods[0], pods[1], pods[2]
    relabelled = moved.model_copy(update={"metadata": moved.metadata.model_copy(update={"labels": {}})})
    events: list[SyncEvent] = []
    for resource in resources:
        events.append(Update(LAYOUT.etcd_key(key_of(resource)), encode(resource), len(events) + 1))
    events.append(Update(LAYOUT.etcd_key(key_of(moved)), encode(relabelled), len(events) + 1))
    events.append(Update(LAYOUT.etcd_key(key_of(deleted)), None, len(events) + 1))
    events.append(Update(LAYOUT.etcd_key(key_of(broken)), b'{"kind": "Pod"}', len(events) + 1))
    events.append(InSync(len(events)))
    final = {key_of(r): r for r in resources}
    final[key_of(moved)] = relabelled
    del final[key_of(deleted)], final[key_of(broken)]
    return events, list(final.values())


class Published:
    """The engine's publish: records diffs; `hold()` makes publishing wait until `release()`."""

    def __init__(self) -> None:
        self.diffs: list[NodeDiff] = []
        self.entered = asyncio.Event()
        self._open = asyncio.Event()
        self._open.set()

    async def __call__(self, diff: NodeDiff) -> None:
        self.entered.set()
        await self._open.wait()
        self.diffs.append(diff)

    def hold(self) -> None:
        self._open.clear()
        self.entered.clear()

    def release(self) -> None:
        self._open.set()


def new_engine(published: Published, queue_size: int, step: float) -> Engine:
    return Engine(
        epoch=EPOCH,
        publish=published,
        tracker=ConvergenceTracker(EPOCH),
        metrics=ControllerMetrics(CollectorRegistry()),
        queue_size=queue_size,
        list_batch_seconds=step,
    )


async def until_in_sync(engine: Engine) -> None:
    async with asyncio.timeout(60):
        while not engine.in_sync:
            engine.changed.clear()
            await engine.changed.wait()


class Ticker:
    """A task that counts loop turns (it yields after every count)."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.ticks += 1

    def stop(self) -> None:
        self._task.cancel()


def assert_matches_oracle(engine: Engine, resources: Iterable[Resource]) -> dict[str, NodeState]:
    want = compile_all(resources)
    assert engine.graph.nodes() == set(want)
    for node, state in want.items():
        assert engine.graph.node_state(node) == state, node
        assert engine.expected_hash(node) == state.content_hash(), node
    return want


@pytest.mark.parametrize("step", [0.0, 60.0], ids=["a-step-per-event", "one-step"])
@pytest.mark.parametrize("order", ORDERS, ids=lambda o: o.__name__)
async def test_cold_start_ends_in_the_oracles_state_whatever_the_order_and_steps(
    order: Callable[[list[Resource]], list[Resource]], step: float
) -> None:
    events, final = initial_list(order)
    published = Published()
    engine = new_engine(published, len(events), step)
    for event in events:
        engine.queue.put_nowait(event)
    task = asyncio.create_task(engine.run())
    try:
        await until_in_sync(engine)
        want = assert_matches_oracle(engine, final)
        markers = sorted((d.node, d.position, d.ops) for d in published.diffs)
        revision = events[-1].revision
        assert markers == [(n, StreamPosition(EPOCH, 1, revision), ()) for n in sorted(want)]
        assert engine._metrics.registry.get_sample_value("kaliko_invalid_resources_total") == 1
    finally:
        task.cancel()


async def test_other_tasks_run_between_compile_steps() -> None:
    events, _ = initial_list(as_listed)
    engine = new_engine(Published(), len(events), 0.0)  # every update is a step of its own
    for event in events:
        engine.queue.put_nowait(event)
    ticker = Ticker()
    task = asyncio.create_task(engine.run())
    try:
        await until_in_sync(engine)
        steps = len({e.key for e in events if isinstance(e, Update)})  # a pod's updates coalesce
        assert ticker.ticks >= steps, "the ticker ran between every two steps"
    finally:
        ticker.stop()
        task.cancel()


@pytest.fixture
async def in_sync() -> AsyncIterator[tuple[Engine, Published, list[Resource]]]:
    events, final = initial_list(as_listed)
    published = Published()
    engine = new_engine(published, len(events) + 10, 0.05)
    for event in events:
        engine.queue.put_nowait(event)
    task = asyncio.create_task(engine.run())
    await until_in_sync(engine)
    yield engine, published, final
    task.cancel()


async def test_a_snapshot_herd_is_served_one_per_loop_turn(
    in_sync: tuple[Engine, Published, list[Resource]],
) -> None:
    engine, _, final = in_sync
    want = compile_all(final)
    ticker = Ticker()
    done_at: dict[str, int] = {}

    async def fetch(node: str) -> NodeDiff:
        diff = await engine.snapshot(node)
        done_at[node] = ticker.ticks
        return diff

    nodes = sorted(want)
    diffs = await asyncio.gather(*(fetch(node) for node in nodes))
    ticker.stop()
    revision = engine.revision
    for node, diff in zip(nodes, diffs, strict=True):
        assert diff.snapshot and diff.position == StreamPosition(EPOCH, 1, revision), node
        assert diff.ops == snapshot_ops(want[node]), node
    assert len(set(done_at.values())) == len(nodes), f"two snapshots in one loop turn: {done_at}"


async def test_a_snapshot_waits_for_the_flush_being_published(
    in_sync: tuple[Engine, Published, list[Resource]],
) -> None:
    engine, published, final = in_sync
    pod = next(r for r in final if isinstance(r, Pod) and r.metadata.labels)  # policies select it
    node = pod.spec.node_name
    assert node is not None
    moved = pod.model_copy(update={"metadata": pod.metadata.model_copy(update={"labels": {"x": "y"}})})
    published.hold()
    await engine.queue.put(Update(LAYOUT.etcd_key(key_of(pod)), encode(moved), engine.revision + 1))
    async with asyncio.timeout(10):
        await published.entered.wait()  # the flush is publishing (its first node's diff)
    snapshot = asyncio.create_task(engine.snapshot(node))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not snapshot.done(), "a snapshot must not read state whose messages are not all sent"
    published.release()
    async with asyncio.timeout(10):
        diff = await snapshot
    want = compile_all([moved if r is pod else r for r in final])[node]
    assert diff.position.seq == 2 and diff.ops == snapshot_ops(want)
    assert [d.position.seq for d in published.diffs if d.node == node] == [1, 2]


@pytest.fixture
async def node_sync() -> AsyncIterator[tuple[pb_grpc.NodeSyncStub, list[Engine | None]]]:
    current: list[Engine | None] = [None]
    server = grpc.aio.server()
    pb_grpc.add_NodeSyncServicer_to_server(NodeSyncServicer(lambda: current[0]), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield pb_grpc.NodeSyncStub(channel), current
    await channel.close()
    await server.stop(None)


async def test_node_sync_is_unavailable_until_in_sync_then_serves_concurrent_calls(
    node_sync: tuple[pb_grpc.NodeSyncStub, list[Engine | None]],
) -> None:
    stub, current = node_sync
    with pytest.raises(grpc.aio.AioRpcError) as no_leader:
        await stub.Snapshot(pb.SnapshotRequest(node="node-0001"))
    assert no_leader.value.code() is grpc.StatusCode.UNAVAILABLE

    events, final = initial_list(as_listed)
    engine = new_engine(Published(), len(events), 0.05)
    current[0] = engine
    for event in events[:-1]:  # everything but the InSync
        engine.queue.put_nowait(event)
    task = asyncio.create_task(engine.run())
    try:
        while not engine.queue.empty():
            await asyncio.sleep(0)  # the engine compiles what was listed so far
        with pytest.raises(grpc.aio.AioRpcError) as listing:
            await stub.Snapshot(pb.SnapshotRequest(node="node-0001"))
        assert listing.value.code() is grpc.StatusCode.UNAVAILABLE

        await engine.queue.put(events[-1])
        await until_in_sync(engine)
        want = compile_all(final)
        replies = await asyncio.gather(*(stub.Snapshot(pb.SnapshotRequest(node=n)) for n in sorted(want)))
        for node, reply in zip(sorted(want), replies, strict=True):
            diff = diff_from_pb(reply)
            assert diff.node == node and diff.snapshot and diff.position.seq == 1
            assert diff.ops == snapshot_ops(want[node]), node
    finally:
        task.cancel()
