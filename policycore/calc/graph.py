"""`CalcGraph`: the incremental compiler — datastore changes in, per-node dependency-ordered ops out.

Owns only the wiring of the calculators (Felix's ``NewCalculationGraph``, centralised) and the
flush / dry-run procedure. Every piece of state lives in the node that owns it::

    on_update ─► ResourceCache ─┬─ endpoint ─► EndpointCalculator (values, dirty set)
                                │                └─ labels ─► LabelIndex (items)
                                ├─ policy ───► ActivePolicies ─ selector ─► LabelIndex
                                └─ tier ─────► ActivePolicies.endpoints_in_tier ─► dirty

    LabelIndex ─ match(policy, endpoint) ─► ActivePolicies ─┬─ program ─────────► NodeSequencers
                                                            ├─ set refs (node) ─► IpSetCalculator
                                                            └─ dirty ───────────► EndpointCalculator
    LabelIndex ─ match(set, endpoint) ────► IpSetCalculator ─┬─ use / release ──► NodeSequencers
                                                             └─ selector (drained after the call)
                                                                                   ─► LabelIndex
    flush ─► EndpointCalculator.feed ─ programs ─► NodeSequencers ◄─ deltas ─ IpSetCalculator
                                                         └─► {node: ops}

Work per event is proportional to what it changes: the label index evaluates only candidate
selectors or items; a membership change reaches only the nodes using the set; a policy edit only
the nodes where it is or was active; a flush only the nodes fed since the last one.

Invariants: after `flush`, applying each node's emitted ops to its previous state gives exactly
`policycore.calc.oracle.compile_all` of the current resources for that node (nodes absent from
the oracle are empty); `node_state` is the state as of the last flush; `dry_run` leaves pending
changes exactly as it found them.
"""

from __future__ import annotations

from collections.abc import Iterable

from policycore.calc.active_policies import ActivePolicies
from policycore.calc.endpoint_calc import EndpointCalculator
from policycore.calc.endpoints import WorkloadEndpoint
from policycore.calc.ipset_calc import IpSetCalculator
from policycore.calc.normalize import NormalizedPolicy
from policycore.calc.resources_cache import ResourceCache
from policycore.calc.sequencer import NodeSequencers, group_deltas
from policycore.diff import Op, apply_ops, diff_states
from policycore.ir import NodeState
from policycore.labelindex import LabelIndex
from policycore.model.resources import Resource, ResourceKey

Change = tuple[ResourceKey, Resource | None]


class CalcGraph:
    """Resources in, per-node diffs out; see the module docstring."""

    def __init__(self) -> None:
        self._sequencers = NodeSequencers()
        self._endpoints = EndpointCalculator()
        self._index: LabelIndex[str, str] = LabelIndex(
            self._match_started, self._match_stopped, self._matches_changed
        )
        self._ipsets = IpSetCalculator(self._endpoints.endpoints, self._sequencers)
        self._policies = ActivePolicies(
            self._index, self._endpoints.endpoints, self._ipsets, self._sequencers, self._endpoints.mark_dirty
        )
        self._cache = ResourceCache(self)
        self._node_resources: set[str] = set()
        self._affected: frozenset[str] = frozenset()

    # Input.

    def on_update(self, key: ResourceKey, resource: Resource | None) -> None:
        """The datastore now holds `resource` under `key` (``None``: deleted)."""
        self._cache.update(key, resource)

    def endpoint_changed(self, key: str, endpoint: WorkloadEndpoint | None) -> None:
        old = self._endpoints.endpoints.get(key)
        if old == endpoint:
            return
        if old is not None and (endpoint is None or _placement(old) != _placement(endpoint)):
            self._index.update_item(key, None)  # members and activity are counted from the old value
            self._drain()
        self._endpoints.set(key, endpoint)
        if endpoint is not None:
            self._index.update_item(key, endpoint.labels)
            self._drain()

    def policy_changed(self, key: ResourceKey, policy: NormalizedPolicy | None) -> None:
        self._policies.update(key, policy)
        self._drain()

    def tier_changed(self, name: str) -> None:
        for endpoint_key in self._policies.endpoints_in_tier(name):
            self._endpoints.mark_dirty(endpoint_key)

    def node_changed(self, name: str, present: bool) -> None:
        if present:
            self._node_resources.add(name)
        else:
            self._node_resources.discard(name)

    def _match_started(self, selector_key: str, endpoint_key: str) -> None:
        if not self._ipsets.match_started(selector_key, endpoint_key):
            self._policies.match_started(selector_key, endpoint_key)

    def _match_stopped(self, selector_key: str, endpoint_key: str) -> None:
        if not self._ipsets.match_stopped(selector_key, endpoint_key):
            self._policies.match_stopped(selector_key, endpoint_key)

    def _matches_changed(self, selector_key: str, stopped: set[str], started: set[str]) -> None:
        if not self._ipsets.matches_changed(selector_key, stopped, started):
            self._policies.matches_changed(selector_key, stopped, started)

    def _drain(self) -> None:
        """Register or unregister ip-set selectors asked for inside label-index callbacks."""
        while pending := self._ipsets.take_registrations():
            for set_id, selector in pending:
                self._index.update_selector(set_id, selector, by_item=False)

    # Output.

    def flush(self) -> dict[str, tuple[Op, ...]]:
        """Per affected node, the merged, dependency-ordered ops since the last flush."""
        out = self._collect(commit=True)
        self._affected = frozenset(out)
        return out

    @property
    def affected_nodes_of_last_flush(self) -> frozenset[str]:
        return self._affected

    def node_state(self, node: str) -> NodeState:
        """The node's compiled state as of the last flush (for snapshots)."""
        sequencer = self._sequencers.get(node)
        return NodeState() if sequencer is None else sequencer.sent_state(self._ipsets.flushed)

    def nodes(self) -> frozenset[str]:
        """Every node: each Node resource and each node an endpoint is scheduled on."""
        return frozenset(self._node_resources) | self._endpoints.nodes()

    def nodes_with_policy(self, policy_id: str) -> frozenset[str]:
        """Where a policy is active now (selects at least one endpoint)."""
        return self._policies.active_nodes(policy_id)

    def nodes_with_ipset(self, set_id: str) -> frozenset[str]:
        """Which nodes use an ip set now."""
        return self._ipsets.nodes_using(set_id)

    def stats(self) -> dict[str, int]:
        """Sizes and work counters, for metrics and benchmarks (``evaluations``: selector evaluations)."""
        return {
            "policies": len(self._policies),
            "ipsets": len(self._ipsets),
            "endpoints": len(self._endpoints.endpoints),
            "nodes": len(self.nodes()),
            "rejected": self._cache.rejected,
            "evaluations": self._index.evaluations,
        }

    def dry_run(self, changes: Iterable[Change]) -> dict[str, tuple[Op, ...]]:
        """The ops `changes` alone would cause, on top of what is pending; nothing is kept."""
        changes = list(changes)
        for key, value in changes:
            ResourceCache.check(key, value)
        before = self._collect(commit=False)
        rejected = self._cache.rejected
        undo: dict[ResourceKey, Resource | None] = {}
        for key, _ in changes:
            undo.setdefault(key, self._cache.get(key))
        try:
            for key, value in changes:
                self.on_update(key, value)
            after = self._collect(commit=False)
        finally:
            for key, old in reversed(undo.items()):
                self.on_update(key, old)
            self._cache.rejected = rejected
        result: dict[str, tuple[Op, ...]] = {}
        for node in sorted(before.keys() | after.keys()):
            base = self.node_state(node)
            ops = diff_states(apply_ops(base, before.get(node, ())), apply_ops(base, after.get(node, ())))
            if ops:
                result[node] = ops
        return result

    def _collect(self, *, commit: bool) -> dict[str, tuple[Op, ...]]:
        """Feed dirty endpoints and set deltas, then flush (or peek at) every node concerned."""
        self._endpoints.feed(self._policies.selecting, self._cache.tier, self._sequencers)
        deltas = group_deltas(self._ipsets.deltas())
        if not commit:
            return self._sequencers.peek(self._ipsets.current, deltas)
        out = self._sequencers.flush(self._ipsets.current, deltas)
        self._ipsets.commit()
        return out


def _placement(endpoint: WorkloadEndpoint) -> tuple[object, ...]:
    """What ip-set members and node activity are computed from (besides labels)."""
    return (endpoint.node, endpoint.ips, endpoint.ports)
