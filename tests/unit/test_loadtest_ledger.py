"""The convergence ledger: per change, API accepted -> last affected node applied, on one clock."""

from loadtest.ledger import ConvergenceLedger


def test_convergence_is_the_last_affected_node() -> None:
    ledger = ConvergenceLedger()
    change = ledger.change("edit_policy", "policy", sent=9.9, accepted=10.0, revision=5)
    ledger.published("a", 5, 120, 10.01)
    ledger.published("b", 5, 80, 10.01)
    ledger.flushed(5, 10.02)
    ledger.applied("a", 5, 10.05)
    assert ledger.resolve() == []
    assert ledger.in_flight == 1
    ledger.applied("b", 6, 10.30)  # a later position includes revision 5
    assert ledger.resolve() == [change]
    assert round(change.latency_ms(), 3) == 300.0
    assert ledger.bytes_of(change) == {"a": 120, "b": 80}
    assert ledger.in_flight == 0


def test_a_change_is_covered_by_the_first_flush_at_or_after_its_revision() -> None:
    ledger = ConvergenceLedger()
    ledger.published("a", 4, 10, 1.0)
    ledger.flushed(4, 1.0)
    first = ledger.change("t", "policy", 1.9, 2.0, revision=5)
    second = ledger.change("t", "policy", 1.9, 2.0, revision=6)
    ledger.published("b", 6, 30, 2.1)  # one flush carried both 5 and 6: b is charged to both
    ledger.flushed(6, 2.1)
    ledger.applied("a", 4, 1.5)  # a applied flush 4 only: it is not an affected node of 5
    ledger.applied("b", 6, 2.5)
    assert ledger.resolve() == [first, second]
    assert first.flush == second.flush == 6
    assert set(first.applied) == {"b"}
    assert round(first.latency_ms(), 3) == 500.0


def test_a_change_no_node_needed_converges_at_its_flush() -> None:
    ledger = ConvergenceLedger()
    change = ledger.change("relabel_pod", "pod", 0.9, 1.0, revision=7)
    assert ledger.resolve() == []  # not compiled yet
    ledger.flushed(7, 1.004)
    assert ledger.resolve() == [change]
    assert round(change.latency_ms(flush_time=ledger.flush_time[7]), 3) == 4.0
    assert change.applied == {}


def test_flush_is_not_trusted_until_a_flush_record_completes_it() -> None:
    ledger = ConvergenceLedger()
    change = ledger.change("t", "policy", 0.0, 1.0, revision=3)
    ledger.published("a", 3, 10, 1.1)
    ledger.applied("a", 3, 1.2)
    assert ledger.resolve() == []  # more messages of flush 3 may still come
    ledger.published("b", 3, 10, 1.1)
    ledger.flushed(3, 1.1)
    assert ledger.resolve() == []
    ledger.applied("b", 3, 1.4)
    assert ledger.resolve() == [change]
    assert round(change.latency_ms(), 3) == 400.0


def test_excluded_nodes_and_early_samples() -> None:
    ledger = ConvergenceLedger()
    change = ledger.change("t", "policy", 0.0, 1.0, revision=2)
    ledger.published("fast", 2, 10, 0.9)
    ledger.published("slow", 2, 10, 0.9)
    ledger.flushed(2, 0.9)
    ledger.applied("fast", 2, 0.95)  # applied before the API reply reached the driver
    ledger.applied("slow", 2, 3.0)
    assert ledger.resolve() == [change]
    assert ledger.early == 1
    assert change.latency_ms(frozenset({"slow"})) == 0.0
    assert round(change.latency_ms(), 3) == 2000.0


def test_unapplied_changes_are_lost_at_finish() -> None:
    ledger = ConvergenceLedger()
    kept = ledger.change("t", "policy", 0.0, 1.0, revision=2)
    never = ledger.change("t", "policy", 0.0, 1.0, revision=9)
    ledger.published("a", 2, 10, 1.1)
    ledger.published("b", 2, 10, 1.1)
    ledger.flushed(2, 1.1)
    ledger.applied("a", 2, 1.2)
    lost = ledger.finish()
    assert lost == [kept, never]
    assert kept.lost_nodes == ("b",)
    assert never.lost_nodes == ("<uncompiled>",)
    assert ledger.in_flight == 0


def test_baseline_drops_warm_up_records() -> None:
    ledger = ConvergenceLedger(baseline=10)
    ledger.published("a", 10, 999, 1.0)
    ledger.unaffected("a", 10, 50)
    ledger.unaffected("a", 11, 40)
    assert ledger.sent == {}
    assert ledger.unaffected_bytes == 40
    ledger.applied("a", 10, 1.0)
    assert ledger.nodes_converged(["a", "b"], 10) == 1
    assert ledger.applied_at("a", 10) == 1.0
    assert ledger.applied_at("a", 11) is None
