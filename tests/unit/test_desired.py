"""DesiredState applies a node's stream strictly in order and asks for a snapshot otherwise."""

from policycore.desired import DesiredState, Verdict
from policycore.diff import IpSetDelta, IpSetReplace, NodeDiff, StreamPosition
from policycore.ir import IpSet


def diff(epoch: int, seq: int, *ops, snapshot: bool = False, node: str = "n1") -> NodeDiff:
    return NodeDiff(node, StreamPosition(epoch, seq, seq * 10), tuple(ops), snapshot)


SET = IpSetReplace(IpSet("s:x", "ip", frozenset({"198.18.0.1"})))


def test_nothing_applies_before_the_first_snapshot() -> None:
    d = DesiredState("n1")
    assert d.offer(diff(1, 1, SET)) is Verdict.NEEDS_SNAPSHOT
    assert not d.synced and d.state.ipsets == {}


def test_in_order_deltas_apply_and_duplicates_are_stale() -> None:
    d = DesiredState("n1")
    assert d.offer(diff(1, 3, SET, snapshot=True)) is Verdict.APPLIED
    add = IpSetDelta("s:x", frozenset({"198.18.0.2"}), frozenset())
    assert d.offer(diff(1, 4, add)) is Verdict.APPLIED
    assert d.offer(diff(1, 4, add)) is Verdict.STALE
    assert d.offer(diff(1, 2, add)) is Verdict.STALE
    assert d.state.ipsets["s:x"].members == {"198.18.0.1", "198.18.0.2"}
    assert d.position == StreamPosition(1, 4, 40)


def test_a_gap_or_a_new_epoch_needs_a_snapshot() -> None:
    d = DesiredState("n1")
    d.offer(diff(1, 1, SET, snapshot=True))
    assert d.offer(diff(1, 3)) is Verdict.NEEDS_SNAPSHOT
    assert d.offer(diff(2, 1)) is Verdict.NEEDS_SNAPSHOT
    assert d.offer(diff(0, 9)) is Verdict.STALE
    assert d.offer(diff(2, 7, snapshot=True)) is Verdict.APPLIED
    assert d.offer(diff(1, 9, snapshot=True)) is Verdict.STALE


def test_an_op_that_does_not_fit_changes_nothing() -> None:
    d = DesiredState("n1")
    d.offer(diff(1, 1, SET, snapshot=True))
    before = d.state.copy()
    bad = IpSetDelta("s:missing", frozenset({"198.18.0.9"}), frozenset())
    assert (
        d.offer(diff(1, 2, IpSetDelta("s:x", frozenset({"198.18.0.3"}), frozenset()), bad))
        is Verdict.NEEDS_SNAPSHOT
    )
    assert d.state == before and d.position == StreamPosition(1, 1, 10)
    assert "s:missing" in (d.last_error or "")


def test_diffs_for_another_node_are_refused() -> None:
    d = DesiredState("n1")
    assert d.offer(diff(1, 1, SET, snapshot=True, node="n2")) is Verdict.STALE
    assert not d.synced
