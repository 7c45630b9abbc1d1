"""The oracle: every node's `NodeState` recomputed from scratch from a list of resources.

Owns `compile_all`, the simple, obviously correct full recompute the incremental graph is tested
against (the graph must produce byte-identical states), and `build_model`, the resolved view of
the resources it starts from. It does not own the semantics it applies (`endpoints`, `normalize`,
`lowering`) and is not fast: it matches every policy against every endpoint.

For each node (every Node resource, plus every node an endpoint is scheduled on):

* one `EndpointProgram` per local workload endpoint: per direction, the tiers (sorted by
  `tier_sort_key`) holding at least one policy that selects the endpoint and has that direction in
  its types, each with those policies sorted by ``sort_key`` and the tier's default action, then
  the deny stand-in of a missing namespace profile;
* the `PolicyProgram` of every policy selecting at least one local endpoint;
* exactly the ip sets those programs reference, members computed over every endpoint in the cluster.

Policies that fail to normalise (`NormalizeError`) are treated as absent, as the graph must do.
A pod whose Namespace is missing still becomes an endpoint, with a missing profile that denies
(see `endpoints`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from policycore.calc.endpoints import WorkloadEndpoint, workload_endpoint
from policycore.calc.lowering import IpSetSpec, ipset_members, to_program
from policycore.calc.normalize import (
    NormalizedPolicy,
    NormalizeError,
    TierInfo,
    normalize_policy,
    tier_of,
    tier_table,
)
from policycore.ir import Direction, EndpointProgram, IpSet, NodeState, PolicyProgram, TierProgram
from policycore.model.calico import CalicoNetworkPolicy, GlobalNetworkPolicy, Tier
from policycore.model.kube import KubeNetworkPolicy, Namespace, Node, Pod
from policycore.model.resources import Resource


@dataclass(frozen=True, slots=True)
class ClusterModel:
    """Resources resolved for compilation: endpoints, normalised policies, tiers and node names."""

    endpoints: tuple[WorkloadEndpoint, ...]
    policies: tuple[NormalizedPolicy, ...]
    tiers: dict[str, TierInfo]
    nodes: frozenset[str]


def build_model(resources: Iterable[Resource]) -> ClusterModel:
    """Resolve pods into endpoints (with their namespace's labels) and normalise every policy."""
    items = list(resources)
    namespaces = {r.metadata.name: r.effective_labels() for r in items if isinstance(r, Namespace)}
    endpoints = []
    for pod in (r for r in items if isinstance(r, Pod)):
        endpoint = workload_endpoint(pod, namespaces.get(pod.metadata.namespace or "default"))
        if endpoint is not None:
            endpoints.append(endpoint)
    policies = []
    for resource in items:
        if isinstance(resource, KubeNetworkPolicy | CalicoNetworkPolicy | GlobalNetworkPolicy):
            try:
                policies.append(normalize_policy(resource))
            except NormalizeError:
                continue
    nodes = {r.metadata.name for r in items if isinstance(r, Node)} | {e.node for e in endpoints}
    return ClusterModel(
        endpoints=tuple(sorted(endpoints, key=lambda e: e.key)),
        policies=tuple(sorted(policies, key=lambda p: p.policy_id)),
        tiers=tier_table(r for r in items if isinstance(r, Tier)),
        nodes=frozenset(nodes),
    )


def selecting_policies(model: ClusterModel, endpoint: WorkloadEndpoint) -> list[NormalizedPolicy]:
    """The policies that apply to an endpoint (in any direction)."""
    return [p for p in model.policies if p.applies_to_workloads and p.selector.evaluate(endpoint.labels)]


def endpoint_tiers(
    model: ClusterModel, policies: Iterable[NormalizedPolicy], direction: Direction
) -> tuple[TierProgram, ...]:
    """The tier programs of one direction for an endpoint selected by `policies`."""
    by_tier: dict[str, list[NormalizedPolicy]] = defaultdict(list)
    for policy in policies:
        if direction in policy.types:
            by_tier[policy.tier].append(policy)
    tiers = sorted((tier_of(name, model.tiers) for name in by_tier), key=lambda t: t.sort_key)
    return tuple(
        TierProgram(
            tier.name,
            tuple(p.policy_id for p in sorted(by_tier[tier.name], key=lambda p: p.sort_key)),
            tier.default_action,
        )
        for tier in tiers
    )


def compile_all(resources: Iterable[Resource]) -> dict[str, NodeState]:
    """Every node's full desired state (see the module docstring)."""
    model = build_model(resources)
    programs: dict[str, tuple[PolicyProgram, dict[str, IpSetSpec]]] = {}
    members: dict[str, frozenset[str]] = {}
    states = {node: NodeState() for node in model.nodes}
    for endpoint in model.endpoints:
        state = states[endpoint.node]
        policies = selecting_policies(model, endpoint)
        state.endpoints[endpoint.key] = EndpointProgram(
            key=endpoint.key,
            iface=endpoint.iface,
            ips=endpoint.ips,
            ingress=endpoint_tiers(model, policies, "ingress") + endpoint.profile_tiers(),
            egress=endpoint_tiers(model, policies, "egress") + endpoint.profile_tiers(),
        )
        for policy in policies:
            if policy.policy_id not in programs:
                programs[policy.policy_id] = to_program(policy)
            program, specs = programs[policy.policy_id]
            state.policies[policy.policy_id] = program
            for set_id, spec in specs.items():
                if set_id not in members:
                    members[set_id] = ipset_members(spec, model.endpoints)
                state.ipsets[set_id] = IpSet(set_id, spec.kind, members[set_id])
    return states
