"""`ActivePolicies`: every policy, its program, and the nodes where it is active.

Owns the normalised policies by id (and which resource each came from), their lowered programs
and ip-set specs, the policies of each tier, and per policy how many endpoints it selects on each
node — Felix's ActiveRulesCalculator, centralised (calico.md 1.2): a policy is *active* on a node
while it selects at least one endpoint there. It registers each policy's selector in the shared
`LabelIndex` (under the policy id) and is told, through the graph, of every (policy, endpoint)
match start and stop. It does not own endpoints (`endpoint_calc`), ip-set members (`ipset_calc`)
or output merging (node sequencers).

On activation on a node: the node's sequencer gets the program and the ip-set calculator one
reference per set the program uses; deactivation undoes both. A program edit re-sends the program
to, and moves set references on, exactly the nodes where the policy is active; a change of
selector, order or types marks exactly the endpoints it selected or selects dirty.

Invariants: ``nodes[n]`` equals the number of endpoints on ``n`` the index says the policy
matches; the set references held for a policy on a node are exactly its program's sets while it
is active there. Policies that do not apply to workloads are kept but never registered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from policycore.calc.endpoints import WorkloadEndpoint
from policycore.calc.ipset_calc import IpSetCalculator
from policycore.calc.lowering import IpSetSpec, to_program
from policycore.calc.normalize import NormalizedPolicy
from policycore.calc.sequencer import NodeSequencer
from policycore.ir import PolicyProgram
from policycore.labelindex import LabelIndex
from policycore.model.resources import ResourceKey
from policycore.selector import Selector


class _Policy:
    __slots__ = ("nodes", "policy", "program", "specs")

    def __init__(self, policy: NormalizedPolicy) -> None:
        self.policy = policy
        self.program: PolicyProgram
        self.specs: dict[str, IpSetSpec]
        self.program, self.specs = to_program(policy)
        self.nodes: dict[str, int] = {}


class ActivePolicies:
    """Policies and where they are active; see the module docstring."""

    def __init__(
        self,
        index: LabelIndex[str, str],
        endpoints: Mapping[str, WorkloadEndpoint],
        ipsets: IpSetCalculator,
        sequencer: Callable[[str], NodeSequencer],
        mark_dirty: Callable[[str], None],
    ) -> None:
        self._index = index
        self._endpoints = endpoints
        self._ipsets = ipsets
        self._sequencer = sequencer
        self._mark_dirty = mark_dirty
        self._ids: dict[ResourceKey, str] = {}
        self._policies: dict[str, _Policy] = {}
        self._by_tier: dict[str, set[str]] = {}

    # Policy updates.

    def update(self, key: ResourceKey, policy: NormalizedPolicy | None) -> None:
        """The resource `key` now lowers to `policy` (``None``: absent or invalid)."""
        old_id = self._ids.get(key)
        if old_id is not None and (policy is None or policy.policy_id != old_id):
            del self._ids[key]
            self._remove(old_id)
        if policy is None:
            return
        self._ids[key] = policy.policy_id
        record = self._policies.get(policy.policy_id)
        if record is None:
            self._add(policy)
        elif record.policy != policy:
            self._change(record, policy)

    def _add(self, policy: NormalizedPolicy) -> None:
        self._policies[policy.policy_id] = _Policy(policy)
        self._by_tier.setdefault(policy.tier, set()).add(policy.policy_id)
        self._index.update_selector(policy.policy_id, _applies_to(policy))

    def _remove(self, policy_id: str) -> None:
        self._index.update_selector(policy_id, None)
        tier = self._policies.pop(policy_id).policy.tier
        in_tier = self._by_tier[tier]
        in_tier.discard(policy_id)
        if not in_tier:
            del self._by_tier[tier]

    def _change(self, record: _Policy, policy: NormalizedPolicy) -> None:
        old = record.policy
        program, specs = to_program(policy)
        if program != record.program:
            for node in record.nodes:
                self._sequencer(node).update_policy(program)
                for set_id, spec in specs.items():
                    if set_id not in record.specs:
                        self._ipsets.incref(spec, node)
                for set_id in record.specs:
                    if set_id not in specs:
                        self._ipsets.decref(set_id, node)
        record.policy, record.program, record.specs = policy, program, specs
        if (old.sort_key, old.types) != (policy.sort_key, policy.types):
            for endpoint_key in self._index.items_matching(policy.policy_id):
                self._mark_dirty(endpoint_key)
        self._index.update_selector(policy.policy_id, _applies_to(policy))

    # Matches (from the label index, via the graph).

    def match_started(self, policy_id: str, endpoint_key: str) -> None:
        record = self._policies[policy_id]
        node = self._endpoints[endpoint_key].node
        count = record.nodes.get(node, 0)
        record.nodes[node] = count + 1
        if not count:
            self._sequencer(node).update_policy(record.program)
            for spec in record.specs.values():
                self._ipsets.incref(spec, node)
        self._mark_dirty(endpoint_key)

    def match_stopped(self, policy_id: str, endpoint_key: str) -> None:
        record = self._policies[policy_id]
        node = self._endpoints[endpoint_key].node
        count = record.nodes[node] - 1
        if count:
            record.nodes[node] = count
        else:
            del record.nodes[node]
            self._sequencer(node).remove_policy(policy_id)
            for set_id in record.specs:
                self._ipsets.decref(set_id, node)
        self._mark_dirty(endpoint_key)

    def matches_changed(self, policy_id: str, stopped: set[str], started: set[str]) -> None:
        """Many matches stopped, then started, at once (the policy's selector was (re)registered)."""
        for endpoint_key in stopped:
            self.match_stopped(policy_id, endpoint_key)
        for endpoint_key in started:
            self.match_started(policy_id, endpoint_key)

    # Queries.

    def selecting(self, endpoint_key: str) -> Iterator[NormalizedPolicy]:
        """The policies that select the endpoint now."""
        policies = self._policies
        for key in self._index.selectors_matching(endpoint_key):
            record = policies.get(key)
            if record is not None:
                yield record.policy

    def endpoints_in_tier(self, tier: str) -> set[str]:
        """Every endpoint selected by a policy of the tier."""
        found: set[str] = set()
        for policy_id in self._by_tier.get(tier, ()):
            found |= self._index.items_matching(policy_id)
        return found

    def active_nodes(self, policy_id: str) -> frozenset[str]:
        record = self._policies.get(policy_id)
        return frozenset(record.nodes) if record else frozenset()

    def __len__(self) -> int:
        return len(self._policies)


def _applies_to(policy: NormalizedPolicy) -> Selector | None:
    return policy.selector if policy.applies_to_workloads else None
