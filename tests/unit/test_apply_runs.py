"""Diffs applied as one run end where the same diffs applied one by one end.

`apply_ops` composes successive deltas to one set before copying it; `DesiredState.offer_run` feeds
a batch's consecutive deltas to it in one call. Both must be invisible: the same state, position
and refusals as the one-by-one path, for any mix of deltas, replaces and removals.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from loadtest import bench_apply
from policycore.desired import DesiredState, Verdict
from policycore.diff import (
    DiffError,
    IpSetDelta,
    IpSetRemove,
    IpSetReplace,
    NodeDiff,
    Op,
    StreamPosition,
    apply_ops,
)
from policycore.ir import IpSet, NodeState

SETS = ("s:a", "s:b", "s:c")
ips = st.frozensets(st.sampled_from([f"198.18.0.{i}" for i in range(8)]), max_size=4)
ops = st.one_of(
    st.builds(IpSetDelta, st.sampled_from(SETS), ips, ips),
    st.builds(lambda s, m: IpSetReplace(IpSet(s, "ip", m)), st.sampled_from(SETS), ips),
    st.builds(IpSetRemove, st.sampled_from(SETS)),
)


def base() -> NodeState:
    return NodeState({s: IpSet(s, "ip", frozenset({"198.18.0.1", "198.18.0.2"})) for s in SETS[:2]}, {}, {})


def one_by_one(state: NodeState, sequence: list[Op]) -> NodeState | None:
    for op in sequence:
        try:
            state = apply_ops(state, (op,))
        except DiffError:
            return None
    return state


@settings(max_examples=400)
@given(st.lists(ops, max_size=12))
def test_composed_ops_end_where_sequential_ops_end(sequence: list[Op]) -> None:
    start = base()
    expected = one_by_one(start, sequence)
    try:
        composed: NodeState | None = apply_ops(start, sequence)
    except DiffError:
        composed = None
    assert composed == expected
    assert start == base()  # the input is never modified


def diff(seq: int, *ops: Op) -> NodeDiff:
    return NodeDiff("n1", StreamPosition(1, seq, seq * 10), tuple(ops))


def synced() -> DesiredState:
    desired = DesiredState("n1")
    snapshot = NodeDiff(
        "n1", StreamPosition(1, 1, 10), tuple(IpSetReplace(s) for s in base().ipsets.values()), True
    )
    assert desired.offer(snapshot) is Verdict.APPLIED
    return desired


def add(set_id: str, ip: str) -> IpSetDelta:
    return IpSetDelta(set_id, frozenset({ip}), frozenset())


def test_a_run_of_next_deltas_applies_as_one_and_stops_at_a_gap() -> None:
    run, one = synced(), synced()
    diffs = [
        diff(2, add("s:a", "198.18.0.3")),
        diff(3, add("s:a", "198.18.0.4")),
        diff(5, add("s:b", "198.18.0.5")),
    ]
    assert run.offer_run(diffs) == 2
    assert [one.offer(d) for d in diffs[:2]] == [Verdict.APPLIED] * 2
    assert run.state == one.state and run.position == one.position == StreamPosition(1, 3, 30)
    assert run.offer_run(diffs[2:]) == 0 and run.offer(diffs[2]) is Verdict.NEEDS_SNAPSHOT


def test_a_single_next_delta_or_a_stale_head_is_left_to_offer() -> None:
    desired = synced()
    assert desired.offer_run([diff(2, add("s:a", "198.18.0.3"))]) == 0
    assert desired.offer_run([diff(1), diff(2), diff(3)]) == 0  # seq 1 is stale
    assert desired.position == StreamPosition(1, 1, 10)
    assert DesiredState("n1").offer_run([diff(1), diff(2)]) == 0  # no snapshot yet


def test_a_misfit_inside_a_run_applies_the_diffs_before_it_and_leaves_it_to_be_refused() -> None:
    desired = synced()
    bad = IpSetDelta("s:missing", frozenset({"198.18.0.9"}), frozenset())
    diffs = [diff(2, add("s:a", "198.18.0.3")), diff(3, add("s:a", "198.18.0.4"), bad), diff(4)]
    assert desired.offer_run(diffs) == 1
    assert desired.position == StreamPosition(1, 2, 20)
    assert desired.state.ipsets["s:a"].members == {"198.18.0.1", "198.18.0.2", "198.18.0.3"}
    assert desired.offer(diffs[1]) is Verdict.NEEDS_SNAPSHOT and "s:missing" in (desired.last_error or "")


def test_the_apply_benchmark_applies_every_diff_both_ways() -> None:
    rows = bench_apply.run([20], [1, 3], 30)
    assert [(r["set_size"], r["batch"]) for r in rows] == [(20, 1), (20, 3)]
    assert all(r["one_by_one_us"] > 0 and r["as_runs_us"] > 0 for r in rows)
    one, runs = bench_apply.synced_node(20), bench_apply.synced_node(20)
    diffs = [bench_apply.churn_diff(seq) for seq in range(2, 8)]
    assert runs.offer_run(diffs) == 6 and all(one.offer(d) is Verdict.APPLIED for d in diffs)
    assert runs.state == one.state
