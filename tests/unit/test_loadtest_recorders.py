"""Recorders: worker records survive the pipe format; the recording data plane spots no-op applies."""

from typing import Any, cast

import pytest

from iokit.bus import DiffMessage
from iokit.memory_bus import MemoryBroker, MemoryMultiNodeSubscriber
from iokit.memory_status import MemoryMqttBroker, MemoryStatusPublisher
from loadtest.agents import SimNode, Transports
from loadtest.ledger import ConvergenceLedger
from loadtest.recorders import BatchingSink, RecordingDataPlane, RecordSink, replay
from policycore.diff import NodeDiff
from policycore.ir import IpSet, NodeState


def test_batched_records_replay_into_the_ledger() -> None:
    shipped: list[list[tuple[str, tuple[object, ...]]]] = []
    sink = BatchingSink(shipped.append, limit=3)
    sink.published("a", 5, 100, 1.0)
    sink.flushed(5, 1.0)
    sink.applied("a", 5, 1.5)  # the third record ships the batch
    sink.hop(1.5, 4.0)
    sink.restarted("a", 2.0, 2.2)
    assert len(shipped) == 1
    sink.milestone("controller_in_sync", 0.5)
    sink.flush()
    assert len(shipped) == 2
    ledger = ConvergenceLedger()
    change = ledger.change("t", "policy", 0.9, 1.0, 5)
    for batch in shipped:
        replay(batch, ledger)
    assert ledger.resolve() == [change]
    assert round(change.latency_ms(), 3) == 500.0
    assert ledger.hops == [(1.5, 4.0)]
    assert [round(r.ms, 3) for r in ledger.restarts] == [200.0]
    assert ledger.milestones == {"controller_in_sync": 0.5}


def test_replay_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown"):
        replay([("format_disk", ())], ConvergenceLedger())


def test_recording_data_plane_flags_applies_that_change_nothing() -> None:
    plane = RecordingDataPlane()
    one = NodeState(ipsets={"s:1": IpSet("s:1", "ip", frozenset({"10.0.0.1"}))})
    plane.apply(one)
    assert not plane.last_noop  # the first apply programs something
    plane.apply(one.copy())
    assert plane.last_noop
    two = one.copy()
    two.ipsets["s:1"] = IpSet("s:1", "ip", frozenset({"10.0.0.2"}))
    plane.apply(two)
    assert not plane.last_noop
    assert plane.programmed() == two


class _Sink:
    """Keeps the unaffected records; every other record is dropped."""

    def __init__(self) -> None:
        self.records: list[tuple[str, int, int]] = []

    def unaffected(self, node: str, revision: int, nbytes: int) -> None:
        self.records.append((node, revision, nbytes))

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


async def test_only_a_lone_message_that_changed_nothing_counts_as_bytes_to_an_unaffected_node() -> None:
    broker = MemoryMqttBroker()
    sink = _Sink()
    transports = Transports(
        subscription=lambda node: MemoryMultiNodeSubscriber(MemoryBroker(1), [node]),
        status=lambda node: MemoryStatusPublisher(broker, node),
        fetch_snapshot=_no_snapshot,
    )
    sim = SimNode("n1", transports, cast(RecordSink, sink))
    sim.dataplane.last_noop = True
    status = {"ready": True, "revision": 0}
    for revision, payloads in ((5, [b"x" * 80]), (6, [b"y" * 80, b"z" * 80]), (7, [b"w" * 70])):
        for payload in payloads:
            sim._on_message(DiffMessage("n1", payload, 0, 0))
        sim._on_status({**status, "revision": revision})
    # revision 6: a pod created and deleted before the node read either nets to nothing
    assert sink.records == [("n1", 5, 80), ("n1", 7, 70)]


async def _no_snapshot(node: str) -> NodeDiff:
    raise AssertionError("no snapshot expected")
