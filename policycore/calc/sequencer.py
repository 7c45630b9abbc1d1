"""`NodeSequencer`: one node's output stage — pending changes merged, flushed in dependency order.

Owns, for one node, what the node has been sent (its state as of the last flush, by id, with
reference counts: sets referenced by its policies, policies referenced by its endpoints) and what
changed since: which ip sets it now uses or no longer uses and the latest value (or removal) of
each policy and endpoint; and `NodeSequencers`, one per node, remembering which were fed. It does
not own what those values are (the graph's calculators decide) nor ip-set contents and member
deltas: `flush` receives a lookup of full contents and the deltas of changed sets, coalesced per
set by the ip-set calculator, as shared op objects (one per set per flush, for every node).

Merging (Felix's EventSequencer, calico.md 1.3):

* the latest value of a policy or endpoint wins; a value equal to what was sent is nothing; a
  removal of something never sent is nothing (so "added then removed" cancels);
* ip sets: using a set the node lacks sends its full contents (``IpSetReplace``) and drops any
  pending delta for it; releasing a set it has sends ``IpSetRemove``; release-then-use of a set it
  has is just its delta; a delta reaches only a node that keeps the set, and an empty one none.

Flush order: ip-set replace/delta → policy updates → endpoint updates → endpoint removals →
policy removals → ip-set removals; within each group by id. `flush` checks, before changing
anything, that after the flush no policy references a set and no endpoint a policy the node
lacks, and raises `SequencerError` (fail closed: nothing is emitted or recorded) otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Container, Iterable
from typing import NamedTuple, TypeVar

from policycore.diff import (
    EndpointRemove,
    EndpointUpdate,
    IpSetDelta,
    IpSetRemove,
    IpSetReplace,
    Op,
    PolicyRemove,
    PolicyUpdate,
)
from policycore.ir import EndpointProgram, IpSet, NodeState, PolicyProgram

IpSetLookup = Callable[[str], IpSet]
"""Full contents of an ip set by id."""
SetRefs = Callable[[PolicyProgram], frozenset[str]]
"""The ip sets a policy program references (`PolicyProgram.ipset_refs`)."""

P = TypeVar("P", PolicyProgram, EndpointProgram)
_NO_MEMBERS: frozenset[str] = frozenset()


class SequencerError(RuntimeError):
    """The ops about to be flushed would leave a reference to an ip set or policy the node lacks."""


class NodeSequencer:
    """Pending changes for one node and what it was last sent; see the module docstring."""

    __slots__ = (
        "_endpoints",
        "_ipset_use",
        "_policies",
        "_policy_refs",
        "_sent_endpoints",
        "_sent_ipsets",
        "_sent_policies",
        "_set_refs",
        "node",
    )

    def __init__(self, node: str) -> None:
        self.node = node
        self._sent_ipsets: set[str] = set()
        self._sent_policies: dict[str, PolicyProgram] = {}
        self._sent_endpoints: dict[str, EndpointProgram] = {}
        self._set_refs: dict[str, int] = {}
        self._policy_refs: dict[str, int] = {}
        self._ipset_use: dict[str, bool] = {}
        self._policies: dict[str, PolicyProgram | None] = {}
        self._endpoints: dict[str, EndpointProgram | None] = {}

    # Inputs.

    def use_ipset(self, set_id: str, in_use: bool) -> None:
        """The node starts (``True``) or stops (``False``) needing the set."""
        self._ipset_use[set_id] = in_use

    def update_policy(self, program: PolicyProgram) -> None:
        self._policies[program.policy_id] = program

    def remove_policy(self, policy_id: str) -> None:
        self._policies[policy_id] = None

    def update_endpoint(self, program: EndpointProgram) -> None:
        self._endpoints[program.key] = program

    def remove_endpoint(self, key: str) -> None:
        self._endpoints[key] = None

    # Queries.

    @property
    def pending(self) -> bool:
        """Whether anything was fed since the last flush (it may still merge to nothing)."""
        return bool(self._ipset_use or self._policies or self._endpoints)

    def has_ipset(self, set_id: str) -> bool:
        """Whether the node was sent the set (as of the last flush)."""
        return set_id in self._sent_ipsets

    def sent_state(self, ipsets: IpSetLookup) -> NodeState:
        """The node's state as of the last flush; `ipsets` gives each set's flushed contents."""
        return NodeState(
            {set_id: ipsets(set_id) for set_id in sorted(self._sent_ipsets)},
            dict(sorted(self._sent_policies.items())),
            dict(sorted(self._sent_endpoints.items())),
        )

    # Output.

    def peek(
        self, ipsets: IpSetLookup, deltas: Iterable[IpSetDelta] = (), refs: SetRefs = PolicyProgram.ipset_refs
    ) -> tuple[Op, ...]:
        """The ops `flush` would return now, without changing anything."""
        return self._plan(ipsets, deltas, refs).ops

    def flush(
        self, ipsets: IpSetLookup, deltas: Iterable[IpSetDelta] = (), refs: SetRefs = PolicyProgram.ipset_refs
    ) -> tuple[Op, ...]:
        """The merged ops since the last flush, in dependency order; what was sent is updated.

        `ipsets` gives the current contents of sets the node starts using; `deltas` are the member
        changes (since the last flush) of sets the node may keep; `refs` is
        `PolicyProgram.ipset_refs`, possibly memoised across the nodes of one flush.
        """
        plan = self._plan(ipsets, deltas, refs)
        if plan.changes is not None:
            changes = plan.changes
            _add_counts(self._set_refs, changes.set_refs)
            _add_counts(self._policy_refs, changes.policy_refs)
            self._sent_ipsets.update(changes.sets_added)
            self._sent_ipsets.difference_update(changes.sets_removed)
            _apply(self._sent_policies, changes.policies, changes.policies_removed)
            _apply(self._sent_endpoints, changes.endpoints, changes.endpoints_removed)
            self._ipset_use.clear()
            self._policies.clear()
            self._endpoints.clear()
        return plan.ops

    def _plan(self, ipsets: IpSetLookup, deltas: Iterable[IpSetDelta], refs: SetRefs) -> _Plan:
        """The ops and what they change (checked), or just deltas when nothing else is pending."""
        sent_sets, use = self._sent_ipsets, self._ipset_use
        if not (use or self._policies or self._endpoints):  # the common case: members changed
            return _Plan(tuple(d for d in deltas if d.set_id in sent_sets and (d.added or d.removed)), None)
        set_adds: list[IpSetReplace | IpSetDelta] = []
        sets_removed: list[str] = []
        for set_id, in_use in use.items():
            if in_use and set_id not in sent_sets:
                set_adds.append(IpSetReplace(ipsets(set_id)))
            elif not in_use and set_id in sent_sets:
                sets_removed.append(set_id)
        for delta in deltas:
            if (delta.added or delta.removed) and delta.set_id in sent_sets and use.get(delta.set_id, True):
                set_adds.append(delta)
        set_adds.sort(key=lambda op: op.ipset.set_id if isinstance(op, IpSetReplace) else op.set_id)
        sets_removed.sort()
        policies, policies_removed = _changes(self._policies, self._sent_policies)
        endpoints, endpoints_removed = _changes(self._endpoints, self._sent_endpoints)
        set_refs = _ref_changes(self._sent_policies, policies, policies_removed, refs)
        policy_refs = _ref_changes(
            self._sent_endpoints, endpoints, endpoints_removed, EndpointProgram.policy_refs
        )
        sets_added = [op.ipset.set_id for op in set_adds if isinstance(op, IpSetReplace)]
        self._check_refs("ip set", self._set_refs, set_refs, sent_sets, set(sets_added), sets_removed)
        self._check_refs(
            "policy",
            self._policy_refs,
            policy_refs,
            self._sent_policies.keys(),
            {p.policy_id for p in policies},
            policies_removed,
        )
        ops: tuple[Op, ...] = (
            *set_adds,
            *(PolicyUpdate(p) for p in policies),
            *(EndpointUpdate(e) for e in endpoints),
            *(EndpointRemove(k) for k in endpoints_removed),
            *(PolicyRemove(k) for k in policies_removed),
            *(IpSetRemove(k) for k in sets_removed),
        )
        changes = _Changes(
            sets_added,
            sets_removed,
            policies,
            policies_removed,
            endpoints,
            endpoints_removed,
            set_refs,
            policy_refs,
        )
        return _Plan(ops, changes)

    def _check_refs(
        self,
        what: str,
        counts: dict[str, int],
        changes: dict[str, int],
        sent: Container[str],
        added: set[str],
        removed: Collection[str],
    ) -> None:
        """After the flush, every referenced id of this kind must be present on the node."""
        removed_ids = set(removed)
        for ident, change in changes.items():
            if change > 0 and (ident in removed_ids or not (ident in sent or ident in added)):
                raise SequencerError(
                    f"node {self.node}: {what} {ident} is referenced but will not be present"
                )
        for ident in removed_ids:
            if counts.get(ident, 0) + changes.get(ident, 0) > 0:
                raise SequencerError(f"node {self.node}: {what} {ident} is removed while still referenced")


class _Changes(NamedTuple):
    """What a flush changes in what the node was sent."""

    sets_added: list[str]
    sets_removed: list[str]
    policies: list[PolicyProgram]
    policies_removed: list[str]
    endpoints: list[EndpointProgram]
    endpoints_removed: list[str]
    set_refs: dict[str, int]
    policy_refs: dict[str, int]


class _Plan(NamedTuple):
    ops: tuple[Op, ...]
    changes: _Changes | None  # None: only deltas, nothing else to record


def _apply(sent: dict[str, P], updates: list[P], removed: list[str]) -> None:
    for value in updates:
        sent[_key(value)] = value
    for key in removed:
        del sent[key]


def _changes(pending: dict[str, P | None], sent: dict[str, P]) -> tuple[list[P], list[str]]:
    """Updated values (differing from what was sent) and removed keys (of what was sent), by key."""
    updates: list[P] = []
    removes: list[str] = []
    for key in sorted(pending):
        value = pending[key]
        if value is None:
            if key in sent:
                removes.append(key)
        elif sent.get(key) != value:
            updates.append(value)
    return updates, removes


def _ref_changes(
    sent: dict[str, P], updates: list[P], removes: list[str], refs: Callable[[P], frozenset[str]]
) -> dict[str, int]:
    """How many references each id gains (or loses) when `updates` and `removes` are applied."""
    changes: dict[str, int] = {}
    for value in updates:
        for ident in refs(value):
            changes[ident] = changes.get(ident, 0) + 1
    old_values = [sent[k] for k in removes]
    old_values += [old for value in updates if (old := sent.get(_key(value))) is not None]
    for old in old_values:
        for ident in refs(old):
            changes[ident] = changes.get(ident, 0) - 1
    return {ident: change for ident, change in changes.items() if change}


def _key(value: PolicyProgram | EndpointProgram) -> str:
    return value.policy_id if isinstance(value, PolicyProgram) else value.key


def _add_counts(counts: dict[str, int], changes: dict[str, int]) -> None:
    for ident, change in changes.items():
        total = counts.get(ident, 0) + change
        if total:
            counts[ident] = total
        else:
            del counts[ident]


MAX_DELTA_GROUPS = 64
DeltaGroups = list[tuple[set[str], list[IpSetDelta]]]
"""Ip-set deltas by node: groups of nodes (disjoint) that all get the same deltas, in set-id order."""


def group_deltas(deltas: Iterable[tuple[IpSetDelta, Iterable[str]]]) -> DeltaGroups:
    """Deltas (in set-id order) and the nodes each goes to, as groups of nodes sharing one list.

    A set used cluster-wide reaches every node, so per-node lists would cost a Python step per
    (delta, node); splitting node sets by intersection costs a few C-level set operations per delta.
    Past `MAX_DELTA_GROUPS` groups (many sets with different users) it falls back to one list per
    node, so it is never much slower than that.
    """
    groups: DeltaGroups = []
    per_node: dict[str, list[IpSetDelta]] | None = None
    for delta, nodes in deltas:
        if per_node is not None or len(groups) > MAX_DELTA_GROUPS:
            if per_node is None:  # many different node sets (a big flush): one list per node
                per_node = {node: list(found) for members, found in groups for node in members}
            for node in nodes:
                per_node.setdefault(node, []).append(delta)
            continue
        rest = set(nodes)
        split: DeltaGroups = []
        for members, found in groups:
            both = members & rest if rest else rest
            if not both:
                split.append((members, found))
            elif len(both) == len(members):
                found.append(delta)
                split.append((members, found))
            else:
                split += [(both, [*found, delta]), (members - both, found)]
            rest -= both
        if rest:
            split.append((rest, [delta]))
        groups = split
    if per_node is not None:
        return [({node}, found) for node, found in per_node.items()]
    return groups


def _memoised_refs() -> SetRefs:
    """`PolicyProgram.ipset_refs` computed once per program object: one program is sent to every
    node where its policy is active, and each node's reference check reads its old and new value."""
    memo: dict[int, tuple[PolicyProgram, frozenset[str]]] = {}

    def refs(program: PolicyProgram) -> frozenset[str]:
        found = memo.get(id(program))
        if found is None or found[0] is not program:
            found = memo[id(program)] = (program, program.ipset_refs())
        return found[1]

    return refs


class NodeSequencers:
    """One `NodeSequencer` per node, created on first use, and the flush of all of them.

    Feeding a node's sequencer (calling this object) marks the node; `flush` visits the marked
    nodes plus those with ip-set deltas. A node with deltas that was not fed since the last flush
    toggled no set, so it holds every set it uses and the deltas are its whole diff: they are
    passed through without visiting its sequencer (the common, fan-out-heavy case), one shared
    tuple per group of nodes.
    """

    __slots__ = ("_by_node", "_fed")

    def __init__(self) -> None:
        self._by_node: dict[str, NodeSequencer] = {}
        self._fed: set[str] = set()

    def __call__(self, node: str) -> NodeSequencer:
        """The node's sequencer, to feed: the node is marked as fed."""
        self._fed.add(node)
        found = self._by_node.get(node)
        if found is None:
            found = self._by_node[node] = NodeSequencer(node)
        return found

    def get(self, node: str) -> NodeSequencer | None:
        """The node's sequencer if it has one (not marked as fed)."""
        return self._by_node.get(node)

    def flush(self, ipsets: IpSetLookup, deltas: DeltaGroups) -> dict[str, tuple[Op, ...]]:
        """Flush every node fed or with deltas (ids sorted per node); nodes with no ops are left out."""
        return self._visit(ipsets, deltas, commit=True)

    def peek(self, ipsets: IpSetLookup, deltas: DeltaGroups) -> dict[str, tuple[Op, ...]]:
        """What `flush` would return now, changing nothing."""
        return self._visit(ipsets, deltas, commit=False)

    def _visit(self, ipsets: IpSetLookup, deltas: DeltaGroups, *, commit: bool) -> dict[str, tuple[Op, ...]]:
        fed = self._fed
        fed_deltas: dict[str, list[IpSetDelta]] = {}
        for nodes, found in deltas:
            for node in nodes & fed:
                fed_deltas[node] = found
        out: dict[str, tuple[Op, ...]] = {}
        refs = _memoised_refs()
        for node in sorted(fed):
            sequencer = self._by_node[node]
            node_deltas = fed_deltas.get(node, ())
            if commit:
                ops = sequencer.flush(ipsets, node_deltas, refs)
            else:
                ops = sequencer.peek(ipsets, node_deltas, refs)
            if ops:
                out[node] = ops
        for nodes, found in deltas:
            out.update(dict.fromkeys(nodes - fed if fed else nodes, tuple(found)))
        if commit:
            fed.clear()
        return out
