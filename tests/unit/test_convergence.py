"""ConvergenceTracker: a revision converges only when every affected node applied it."""

from policycore.convergence import ConvergenceTracker, NodeReport


def report(node: str, seq: int, revision: int, epoch: int = 1, ready: bool = True) -> NodeReport:
    return NodeReport(node, epoch, seq, revision, ready)


def test_unaffected_change_converges_once_compiled() -> None:
    t = ConvergenceTracker(epoch=1)
    assert not t.is_converged(5)
    t.compiled(5)
    assert t.is_converged(5)


def test_waits_for_every_affected_node() -> None:
    t = ConvergenceTracker(epoch=1)
    t.sent("a", 1, 10)
    t.sent("b", 1, 10)
    t.compiled(10)
    assert t.lagging(10) == ["a", "b"]
    t.reported(report("a", 1, 10))
    assert not t.is_converged(10)
    assert t.lagging(10) == ["b"]
    t.reported(report("b", 1, 10))
    assert t.is_converged(10)


def test_later_messages_do_not_block_earlier_revisions() -> None:
    t = ConvergenceTracker(epoch=1)
    t.sent("a", 1, 10)
    t.sent("a", 2, 12)
    t.compiled(12)
    t.reported(report("a", 1, 10))
    assert t.is_converged(10)
    assert not t.is_converged(12)
    assert t.applied_revision("a") == 11


def test_reports_from_another_epoch_or_not_ready_apply_nothing() -> None:
    t = ConvergenceTracker(epoch=2)
    t.sent("a", 1, 10)
    t.compiled(10)
    t.reported(report("a", 5, 10, epoch=1))
    assert not t.is_converged(10)
    t.reported(report("a", 1, 10, epoch=2, ready=False))
    assert not t.is_converged(10)
    t.reported(report("a", 1, 10, epoch=2))
    assert t.is_converged(10)


def test_a_snapshot_seq_covers_everything_before_it() -> None:
    t = ConvergenceTracker(epoch=1)
    for seq in range(1, 6):
        t.sent("a", seq, 10 + seq)
    t.compiled(15)
    t.reported(report("a", 5, 15))
    assert t.is_converged(15)
    t.sent("a", 4, 14)  # a late duplicate record of an already-applied seq is not outstanding
    assert t.is_converged(15)


def test_forgetting_a_node_stops_waiting() -> None:
    t = ConvergenceTracker(epoch=1)
    t.sent("gone", 1, 3)
    t.compiled(3)
    t.forget("gone")
    assert t.is_converged(3)
