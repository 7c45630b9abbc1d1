"""`EndpointCalculator`: workload endpoints and their ordered per-direction tier/policy lists.

Owns the current `WorkloadEndpoint` of every endpoint in the cluster (readable as a mapping by
the other calculators), how many endpoints each node has, which endpoints are dirty, and which
node each endpoint's program was last fed to. At flush it turns each dirty endpoint into an
`EndpointProgram` (Felix's PolicyResolver + PolicySorter, calico.md 1.2/2.8) or a removal. It
does not own which policies select an endpoint (the caller passes that lookup), policy or tier
metadata (lookups too) nor output merging (node sequencers).

Ordering, exactly as the oracle's: per direction, the tiers holding at least one selecting policy
with that direction in its types, sorted by `TierInfo.sort_key`; in each tier those policies
sorted by `NormalizedPolicy.sort_key`, with the tier's default action; then, for an endpoint whose
namespace profile is missing, its deny stand-in (`WorkloadEndpoint.profile_tiers`).

Invariants: an endpoint is fed to exactly one node at a time (moving it removes it from the node
it was last fed to); after `feed` nothing is dirty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from policycore.calc.endpoints import WorkloadEndpoint
from policycore.calc.normalize import NormalizedPolicy, TierInfo
from policycore.calc.sequencer import NodeSequencer
from policycore.ir import Direction, EndpointProgram, TierProgram


class EndpointCalculator:
    """Endpoints, dirty tracking and program computation; see the module docstring."""

    def __init__(self) -> None:
        self._endpoints: dict[str, WorkloadEndpoint] = {}
        self._per_node: dict[str, int] = {}
        self._placed: dict[str, str] = {}
        self._dirty: set[str] = set()

    @property
    def endpoints(self) -> Mapping[str, WorkloadEndpoint]:
        """Every current endpoint by key (a live, read-only view)."""
        return self._endpoints

    def nodes(self) -> frozenset[str]:
        """Nodes with at least one endpoint."""
        return frozenset(self._per_node)

    def set(self, key: str, endpoint: WorkloadEndpoint | None) -> None:
        """Record the endpoint's new value (``None``: gone) and mark it dirty."""
        old = self._endpoints.pop(key, None)
        if old is not None:
            count = self._per_node[old.node] - 1
            if count:
                self._per_node[old.node] = count
            else:
                del self._per_node[old.node]
        if endpoint is not None:
            self._endpoints[key] = endpoint
            self._per_node[endpoint.node] = self._per_node.get(endpoint.node, 0) + 1
        self._dirty.add(key)

    def mark_dirty(self, key: str) -> None:
        """The endpoint's program may have changed (its policies or their metadata did)."""
        self._dirty.add(key)

    def feed(
        self,
        policies_of: Callable[[str], Iterable[NormalizedPolicy]],
        tier_of: Callable[[str], TierInfo],
        sequencer: Callable[[str], NodeSequencer],
    ) -> None:
        """Feed every dirty endpoint's program (or removal) to its node's sequencer."""
        known: dict[str, TierInfo] = {}

        def tier(name: str) -> TierInfo:  # one lookup per tier per feed
            found = known.get(name)
            if found is None:
                found = known[name] = tier_of(name)
            return found

        for key in self._dirty:
            endpoint = self._endpoints.get(key)
            placed = self._placed.get(key)
            if placed is not None and (endpoint is None or endpoint.node != placed):
                sequencer(placed).remove_endpoint(key)
                del self._placed[key]
            if endpoint is not None:
                sequencer(endpoint.node).update_endpoint(
                    endpoint_program(endpoint, policies_of(key), tier_of)
                )
                self._placed[key] = endpoint.node
        self._dirty.clear()


def endpoint_program(
    endpoint: WorkloadEndpoint, policies: Iterable[NormalizedPolicy], tier_of: Callable[[str], TierInfo]
) -> EndpointProgram:
    """The endpoint's program given the policies that select it."""
    selecting = sorted(policies, key=lambda p: p.sort_key)
    return EndpointProgram(
        key=endpoint.key,
        iface=endpoint.iface,
        ips=endpoint.ips,
        ingress=_tiers(selecting, "ingress", tier_of) + endpoint.profile_tiers(),
        egress=_tiers(selecting, "egress", tier_of) + endpoint.profile_tiers(),
    )


def _tiers(
    selecting: list[NormalizedPolicy], direction: Direction, tier_of: Callable[[str], TierInfo]
) -> tuple[TierProgram, ...]:
    by_tier: dict[str, list[str]] = {}
    for policy in selecting:
        if direction in policy.types:
            by_tier.setdefault(policy.tier, []).append(policy.policy_id)
    if not by_tier:
        return ()
    if len(by_tier) == 1:
        only = tier_of(next(iter(by_tier)))
        return (TierProgram(only.name, tuple(by_tier[only.name]), only.default_action),)
    tiers = sorted((tier_of(name) for name in by_tier), key=lambda t: t.sort_key)
    return tuple(TierProgram(t.name, tuple(by_tier[t.name]), t.default_action) for t in tiers)
