"""NodeSequencer: merging of pending changes and dependency-ordered flushes.

Proves: adds flush as ip sets → policies → endpoints and removals in reverse; "added then
removed" and "same value again" emit nothing; ip-set deltas reach only sets the node keeps (not
ones sent in full or removed); release-then-use of a kept set is only its delta;
`peek` changes nothing; an inconsistent feed raises instead of emitting; deltas grouped by the
nodes that share them equal one list per node (also past the group limit); and (Hypothesis) for any
sequence of consistent desired states fed as changes and flushed at any points, applying the
flushed ops to the previous state gives the desired state and `sent_state` equals it.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policycore.calc.sequencer import NodeSequencer, NodeSequencers, SequencerError, group_deltas
from policycore.diff import (
    EndpointRemove,
    EndpointUpdate,
    IpSetDelta,
    IpSetRemove,
    IpSetReplace,
    PolicyRemove,
    PolicyUpdate,
    apply_ops,
)
from policycore.ir import EndpointProgram, IpSet, NodeState, PolicyProgram, Rule, TierProgram


def policy(pid: str, *sets: str) -> PolicyProgram:
    return PolicyProgram(pid, ingress=tuple(Rule("allow", f"{pid}/ingress/0", src_ipsets=(s,)) for s in sets))


def endpoint(key: str, *policies: str) -> EndpointProgram:
    tiers = (TierProgram("default", tuple(policies)),) if policies else ()
    return EndpointProgram(key, "kal0", ("198.18.0.1",), ingress=tiers)


class Contents:
    """The ip-set contents a graph would hand to `flush`."""

    def __init__(self) -> None:
        self.sets: dict[str, frozenset[str]] = {}

    def __call__(self, set_id: str) -> IpSet:
        return IpSet(set_id, "ip", self.sets.get(set_id, frozenset()))


def test_adds_then_removals_in_dependency_order() -> None:
    seq, sets = NodeSequencer("n1"), Contents()
    sets.sets["s:a"] = frozenset({"198.18.0.9"})
    seq.update_endpoint(endpoint("ns/p", "default/p1"))
    seq.update_policy(policy("default/p1", "s:a"))
    seq.use_ipset("s:a", True)
    ops = seq.flush(sets)
    assert ops == (
        IpSetReplace(IpSet("s:a", "ip", frozenset({"198.18.0.9"}))),
        PolicyUpdate(policy("default/p1", "s:a")),
        EndpointUpdate(endpoint("ns/p", "default/p1")),
    )
    assert not seq.pending and seq.has_ipset("s:a")
    seq.use_ipset("s:a", False)
    seq.remove_policy("default/p1")
    seq.remove_endpoint("ns/p")
    assert seq.flush(sets) == (EndpointRemove("ns/p"), PolicyRemove("default/p1"), IpSetRemove("s:a"))
    assert seq.sent_state(sets) == NodeState()


def test_added_then_removed_and_repeated_values_emit_nothing() -> None:
    seq, sets = NodeSequencer("n1"), Contents()
    seq.use_ipset("s:a", True)
    seq.update_policy(policy("default/p1", "s:a"))
    seq.update_endpoint(endpoint("ns/p", "default/p1"))
    seq.remove_endpoint("ns/p")
    seq.remove_policy("default/p1")
    seq.use_ipset("s:a", False)
    assert seq.pending
    assert seq.flush(sets) == ()
    seq.update_policy(policy("default/p2"))
    seq.flush(sets)
    seq.update_policy(policy("default/p2"))
    seq.remove_endpoint("ns/never-sent")
    assert seq.flush(sets) == ()


def test_ipset_deltas_reach_only_kept_sets() -> None:
    seq, sets = NodeSequencer("n1"), Contents()
    sets.sets["s:a"] = frozenset({"198.18.0.1"})
    seq.use_ipset("s:a", True)
    late = IpSetDelta("s:a", frozenset({"198.18.0.1"}), frozenset())  # already in the full contents
    assert seq.flush(sets, [late]) == (IpSetReplace(IpSet("s:a", "ip", frozenset({"198.18.0.1"}))),)

    elsewhere = IpSetDelta("s:b", frozenset({"198.18.0.3"}), frozenset())  # a set the node lacks
    empty = IpSetDelta("s:a", frozenset(), frozenset())
    assert seq.flush(sets, [elsewhere, empty]) == ()

    delta = IpSetDelta("s:a", frozenset({"198.18.0.2"}), frozenset({"198.18.0.1"}))
    seq.use_ipset("s:a", False)
    seq.use_ipset("s:a", True)  # released and used again: still kept, so just the delta
    assert seq.flush(sets, [delta]) == (delta,)

    seq.use_ipset("s:a", False)
    assert seq.flush(sets, [IpSetDelta("s:a", frozenset({"198.18.0.5"}), frozenset())]) == (
        IpSetRemove("s:a"),
    )


def test_sequencers_flush_fed_nodes_and_pass_deltas_through_to_the_others() -> None:
    seqs, sets = NodeSequencers(), Contents()
    assert seqs.get("n1") is None
    for node in ("n1", "n2"):
        seqs(node).use_ipset("s:a", True)
        seqs(node).update_policy(policy("default/p1", "s:a"))
    first = seqs.flush(sets, [])
    assert set(first) == {"n1", "n2"} and seqs.get("n1") is seqs("n1")
    seqs.flush(sets, [])
    delta = IpSetDelta("s:a", frozenset({"198.18.0.7"}), frozenset())
    seqs("n1").update_policy(policy("default/p2"))
    assert seqs.peek(sets, [({"n1", "n2"}, [delta])]) == {
        "n1": (delta, PolicyUpdate(policy("default/p2"))),
        "n2": (delta,),
    }
    assert seqs.flush(sets, [({"n2"}, [delta])]) == {
        "n1": (PolicyUpdate(policy("default/p2")),),
        "n2": (delta,),
    }
    assert seqs.flush(sets, []) == {}


def test_deltas_are_grouped_by_the_nodes_that_share_them_in_set_order() -> None:
    a, b, c = (IpSetDelta(f"s:{x}", frozenset({"198.18.0.1"}), frozenset()) for x in "abc")
    groups = group_deltas([(a, {"n1", "n2", "n3"}), (b, {"n2", "n3", "n4"}), (c, {"n3"}), (a, set())])
    per_node = {node: found for nodes, found in groups for node in nodes}
    assert per_node == {"n1": [a], "n2": [a, b], "n3": [a, b, c], "n4": [b]}
    assert sum(len(nodes) for nodes, _ in groups) == 4  # disjoint groups
    assert group_deltas([]) == []


@pytest.mark.parametrize("count", [5, 40, 300])  # 300 deltas exceed MAX_DELTA_GROUPS: per-node lists
def test_grouped_deltas_equal_one_list_per_node(count: int) -> None:
    rng = random.Random(count)
    nodes = [f"n{i}" for i in range(100)]
    deltas = [
        (
            IpSetDelta(f"s:{i:03d}", frozenset({f"198.18.0.{i % 250}"}), frozenset()),
            set(rng.sample(nodes, rng.randrange(1, 100))),
        )
        for i in range(count)
    ]
    naive: dict[str, list[IpSetDelta]] = {}
    for delta, users in deltas:
        for node in users:
            naive.setdefault(node, []).append(delta)
    groups = group_deltas(deltas)
    assert sum(len(members) for members, _ in groups) == len(naive)  # disjoint
    assert {node: found for members, found in groups for node in members} == naive


def test_peek_changes_nothing() -> None:
    seq, sets = NodeSequencer("n1"), Contents()
    seq.update_policy(policy("default/p1"))
    first = seq.peek(sets)
    assert first == seq.peek(sets) == seq.flush(sets) == (PolicyUpdate(policy("default/p1")),)
    assert seq.peek(sets) == ()


def test_inconsistent_feed_fails_closed() -> None:
    seq, sets = NodeSequencer("n1"), Contents()
    seq.update_policy(policy("default/p1", "s:missing"))
    with pytest.raises(SequencerError, match="ip set s:missing"):
        seq.flush(sets)
    seq = NodeSequencer("n1")
    seq.update_endpoint(endpoint("ns/p", "default/missing"))
    with pytest.raises(SequencerError, match="policy default/missing"):
        seq.flush(sets)
    seq = NodeSequencer("n1")
    seq.update_policy(policy("default/p1"))
    seq.update_endpoint(endpoint("ns/p", "default/p1"))
    seq.flush(sets)
    seq.remove_policy("default/p1")
    seq.update_endpoint(endpoint("ns/p", "default/p1"))
    with pytest.raises(SequencerError, match="policy default/p1"):
        seq.flush(sets)


SET_IDS = [f"s:{c}" for c in "abcd"]
POLICY_IDS = [f"default/p{i}" for i in range(4)]
MEMBERS = [f"198.18.0.{i}" for i in range(1, 6)]


@st.composite
def desired_states(draw: st.DrawFn) -> NodeState:
    sets = {
        s: IpSet(s, "ip", frozenset(draw(st.sets(st.sampled_from(MEMBERS)))))
        for s in SET_IDS
        if draw(st.booleans())
    }
    policies = {}
    for pid in draw(st.sets(st.sampled_from(POLICY_IDS))):
        refs = draw(st.lists(st.sampled_from(sorted(sets)), max_size=2)) if sets else []
        policies[pid] = policy(pid, *refs)
    endpoints = {}
    for key in draw(st.sets(st.sampled_from(["ns/a", "ns/b", "ns/c"]))):
        refs = draw(st.lists(st.sampled_from(sorted(policies)), max_size=3, unique=True)) if policies else []
        endpoints[key] = endpoint(key, *refs)
    return NodeState(sets, policies, endpoints)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(desired_states(), st.booleans()), min_size=1, max_size=8))
def test_any_fed_sequence_flushes_to_the_desired_state(steps: list[tuple[NodeState, bool]]) -> None:
    seq, contents = NodeSequencer("n1"), Contents()
    current = NodeState()  # what the feed has described so far
    node = NodeState()  # what the node has after applying every flush
    flushed = dict(contents.sets)  # set contents as of the last flush
    for index, (want, flush_now) in enumerate(steps):
        for set_id in SET_IDS:
            before, after = current.ipsets.get(set_id), want.ipsets.get(set_id)
            if after is not None:  # contents are the graph's, kept while no node uses the set
                contents.sets[set_id] = after.members
            if (before is None) != (after is None):
                seq.use_ipset(set_id, after is not None)
        for pid in POLICY_IDS:
            if pid in want.policies:
                seq.update_policy(want.policies[pid])
            elif pid in current.policies:
                seq.remove_policy(pid)
        for program in want.endpoints.values():
            seq.update_endpoint(program)
        for key in current.endpoints.keys() - want.endpoints.keys():
            seq.remove_endpoint(key)
        current = want
        if flush_now or index == len(steps) - 1:
            deltas = []
            for set_id, members in contents.sets.items():
                old = flushed.get(set_id, frozenset())
                deltas.append(IpSetDelta(set_id, members - old, old - members))
            flushed = dict(contents.sets)
            node = apply_ops(node, seq.flush(contents, deltas))
            assert node == want
            assert seq.sent_state(contents) == want
