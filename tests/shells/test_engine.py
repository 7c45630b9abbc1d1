"""The engine (the one task that owns the graph): nothing before the first list, a bounded queue,
throttled flushes; and the Kafka publisher's delivery settings.

Proves: however many updates the engine has processed, it is not in sync (so the controller is
not ready and publishes nothing) until the syncer's first `InSync`, after which every known node
gets one epoch marker (seq 1); its queue refuses to grow past its bound; updates arriving within
one ``flush_interval`` are merged into a single diff per affected node, with consecutive seqs;
and `KafkaDiffPublisher` asks for an idempotent producer with ``acks=all`` and no linger.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from controller.engine import Engine
from controller.metrics import ControllerMetrics
from controller.resource_store import KeyLayout, encode
from iokit.kafka_publisher import KafkaDiffPublisher
from iokit.syncer import InSync, Update
from policycore.convergence import ConvergenceTracker
from policycore.diff import IpSetDelta, IpSetReplace, NodeDiff
from policycore.model import key_of, parse_resource

NODES = ("node-1", "node-2")


def update(document: dict[str, Any], revision: int) -> Update:
    resource = parse_resource(document)
    return Update(KeyLayout().etcd_key(key_of(resource)), encode(resource), revision)


def pod(name: str, node: str, ip: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": app}},
        "spec": {"nodeName": node},
        "status": {"podIP": ip},
    }


POLICY = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "NetworkPolicy",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {
        "selector": "app == 'web'",
        "types": ["Ingress"],
        "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": "app == 'client'"}}],
    },
}


class Published:
    def __init__(self) -> None:
        self.diffs: list[NodeDiff] = []
        self.changed = asyncio.Event()

    async def __call__(self, diff: NodeDiff) -> None:
        self.diffs.append(diff)
        self.changed.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.diffs) < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def running() -> AsyncIterator[tuple[Engine, Published]]:
    published = Published()
    engine = Engine(
        epoch=7,
        publish=published,
        tracker=ConvergenceTracker(7),
        metrics=ControllerMetrics(CollectorRegistry()),
        flush_interval=0.2,
        queue_size=64,
    )
    task = asyncio.create_task(engine.run())
    yield engine, published
    task.cancel()


def first_list() -> list[Update]:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}} for n in NODES
    ]
    docs += [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}, POLICY]
    docs += [pod("web-1", "node-1", "10.1.0.1", "web"), pod("web-2", "node-2", "10.1.0.2", "web")]
    return [update(doc, revision) for revision, doc in enumerate(docs, start=1)]


async def drained(engine: Engine) -> None:
    async with asyncio.timeout(10):
        while not engine.queue.empty():
            await asyncio.sleep(0)  # the engine task runs between our turns
    await asyncio.sleep(0)


async def test_nothing_is_in_sync_or_published_before_the_first_list(
    running: tuple[Engine, Published],
) -> None:
    engine, published = running
    updates = first_list()
    for event in updates:
        await engine.queue.put(event)
    await drained(engine)
    assert not engine.in_sync and published.diffs == []
    assert engine.revision == len(updates), "the updates were processed, only not flushed"

    await engine.queue.put(InSync(len(updates)))
    await published.until(len(NODES))
    assert engine.in_sync
    markers = sorted((d.node, d.position.seq, d.position.epoch, d.ops) for d in published.diffs)
    assert markers == [(n, 1, 7, ()) for n in NODES], "an epoch marker per known node, nothing else"


async def test_the_queue_is_bounded(running: tuple[Engine, Published]) -> None:
    engine, _ = running
    assert engine.queue.maxsize == 64
    for revision in range(1, 65):
        engine.queue.put_nowait(InSync(revision))
    with pytest.raises(asyncio.QueueFull):
        engine.queue.put_nowait(InSync(65))


async def test_updates_within_one_flush_interval_become_one_diff_per_node(
    running: tuple[Engine, Published],
) -> None:
    engine, published = running
    updates = first_list()
    for event in [*updates, InSync(len(updates))]:
        await engine.queue.put(event)
    await published.until(len(NODES))
    for i in range(10):  # clients that the policy admits: each changes node-1's and node-2's ip set
        await engine.queue.put(update(pod(f"client-{i}", "node-2", f"10.2.0.{i}", "client"), 100 + i))
        await asyncio.sleep(0.005)
    await published.until(len(NODES) + 2)
    await drained(engine)
    later = published.diffs[len(NODES) :]
    assert sorted(d.node for d in later) == sorted(NODES), [(d.node, d.position) for d in later]
    assert all(d.position.seq == 2 and d.position.revision == 109 for d in later)
    for diff in later:
        members = {m for op in diff.ops if isinstance(op, IpSetReplace) for m in op.ipset.members}
        members |= {m for op in diff.ops if isinstance(op, IpSetDelta) for m in op.added}
        assert {f"10.2.0.{i}" for i in range(10)} <= members, diff.node


def test_the_kafka_publisher_is_idempotent_with_acks_all_and_does_not_linger() -> None:
    settings = KafkaDiffPublisher("127.0.0.1:9092")._settings
    assert settings["enable_idempotence"] is True and settings["acks"] == "all"
    assert settings["linger_ms"] == 0  # one request in flight batches a burst; a wait only delays
