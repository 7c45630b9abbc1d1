"""The rule IR: what a node programs, shared by every data plane.

Owns the value types a node's programmed state is made of (ip sets, policy programs, endpoint
programs) and `NodeState`, their container, with a stable content hash. It does not own how the
state is computed (`policycore.calc`), shipped (`policycore.diff`, `wire`) or enforced
(`policycore.evaluate` for the in-memory data plane, `node_agent.dataplane.nft_render` and
`nft_driver` for nftables).

Theory of operation (Felix's model, flattened):

* An **ip set** is a named, content-addressed set of members. Kinds: ``ip`` (pod IPs matched by a
  rule selector), ``ip_port`` (members ``"<ip>,<proto>:<port>"`` such as ``"198.18.0.5,tcp:80"``,
  for a named port), ``net`` (CIDRs of a rule's ``nets``/``notNets``). Ids are ``s:``/``n:``/``c:``
  + a hash of what defines the set, so equal selectors share one set on every node and names
  survive restarts.
* A **policy program** is one policy's ordered ingress and egress rules. Its id is
  ``<tier>/<kind>/<namespace>/<name>`` (namespace empty for global kinds).
* An **endpoint program** is, per direction, the ordered list of tiers that apply to the endpoint,
  each with its ordered policy ids and its default action. An empty tier list means "no policy
  applies": the namespace profile allows (Calico's ``kns.<ns>``). An endpoint whose namespace
  profile is missing (no Namespace resource) ends each direction with a tier ``kns.<ns>`` that has
  no policies and denies (Calico's ``DummyDropRules``); Tier names are DNS-1123 labels (no dot),
  so no real tier has that name. Data planes need nothing special for it.

Evaluation of one direction (ingress at the destination, egress at the source):

1. no tiers → allow (profile);
2. for each tier in order, for each policy in order, for each rule in order: a rule whose every
   criterion matches decides ``allow``/``deny`` (final), ``pass`` (skip to the next tier) or
   ``log`` (note it and continue);
3. reaching the end of a tier where no rule decided → the tier's ``default_action``
   (``deny``, or ``pass`` for pass-through tiers);
4. passing out of the last tier → the profile allows.

A rule matches when *all* its criteria hold. Within one criterion list, ``*_ipsets`` and
``*_nets`` entries are ORed ("in any"); ``not_*`` lists must all fail ("in none"). Ports: a rule's
``dst_ports`` matches when the port is in any range **or** the (ip, proto, port) is in any of
``dst_named_port_ipsets``; both empty means any port.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

Action = Literal["allow", "deny", "pass", "log"]
TierDefault = Literal["deny", "pass"]
IpSetKind = Literal["ip", "ip_port", "net"]
Direction = Literal["ingress", "egress"]

PROTOCOL_NUMBERS: Mapping[str, int] = {
    "ICMP": 1,
    "TCP": 6,
    "UDP": 17,
    "ICMPv6": 58,
    "SCTP": 132,
    "UDPLite": 136,
}


@dataclass(frozen=True, slots=True)
class PortRange:
    """An inclusive port range; a single port has ``first == last``."""

    first: int
    last: int

    def contains(self, port: int) -> bool:
        return self.first <= port <= self.last


@dataclass(frozen=True, slots=True)
class IcmpMatch:
    """ICMP type and optional code (a code needs a type)."""

    type: int
    code: int | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of a policy program; every criterion present must match (AND).

    ``rule_id`` names the policy and rule index (``"<policy id>/ingress/3"``) for counters,
    comments and explanations.
    """

    action: Action
    rule_id: str
    protocol: int | None = None
    not_protocol: int | None = None
    icmp: IcmpMatch | None = None
    not_icmp: IcmpMatch | None = None
    src_ipsets: tuple[str, ...] = ()
    not_src_ipsets: tuple[str, ...] = ()
    src_nets: tuple[str, ...] = ()
    not_src_nets: tuple[str, ...] = ()
    src_ports: tuple[PortRange, ...] = ()
    not_src_ports: tuple[PortRange, ...] = ()
    src_named_port_ipsets: tuple[str, ...] = ()
    not_src_named_port_ipsets: tuple[str, ...] = ()
    dst_ipsets: tuple[str, ...] = ()
    not_dst_ipsets: tuple[str, ...] = ()
    dst_nets: tuple[str, ...] = ()
    not_dst_nets: tuple[str, ...] = ()
    dst_ports: tuple[PortRange, ...] = ()
    not_dst_ports: tuple[PortRange, ...] = ()
    dst_named_port_ipsets: tuple[str, ...] = ()
    not_dst_named_port_ipsets: tuple[str, ...] = ()

    def ipset_refs(self) -> frozenset[str]:
        """Every ip set this rule reads (for reference counting and dependency order)."""
        return frozenset(
            self.src_ipsets
            + self.not_src_ipsets
            + self.src_named_port_ipsets
            + self.not_src_named_port_ipsets
            + self.dst_ipsets
            + self.not_dst_ipsets
            + self.dst_named_port_ipsets
            + self.not_dst_named_port_ipsets
        )


@dataclass(frozen=True, slots=True)
class PolicyProgram:
    """One policy's rules, in order, per direction."""

    policy_id: str
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()

    def ipset_refs(self) -> frozenset[str]:
        refs: set[str] = set()
        for rule in self.ingress + self.egress:
            refs |= rule.ipset_refs()
        return frozenset(refs)


@dataclass(frozen=True, slots=True)
class TierProgram:
    """The policies of one tier that apply to an endpoint in one direction, in order."""

    name: str
    policies: tuple[str, ...]
    default_action: TierDefault = "deny"


@dataclass(frozen=True, slots=True)
class EndpointProgram:
    """A local workload endpoint: its interface, addresses and per-direction tiers.

    ``key`` is ``"<namespace>/<pod name>"``. ``iface`` is the host-side interface name the data
    plane dispatches on.
    """

    key: str
    iface: str
    ips: tuple[str, ...]
    ingress: tuple[TierProgram, ...] = ()
    egress: tuple[TierProgram, ...] = ()

    def policy_refs(self) -> frozenset[str]:
        return frozenset(p for tier in self.ingress + self.egress for p in tier.policies)


@dataclass(frozen=True, slots=True)
class IpSet:
    """A content-addressed set of IPs (``ip``), ``"198.18.0.5,tcp:80"`` (``ip_port``) or CIDRs (``net``)."""

    set_id: str
    kind: IpSetKind
    members: frozenset[str] = field(default_factory=frozenset)


@dataclass(slots=True)
class NodeState:
    """Everything one node has programmed (or should program). Mutable; owned by one task."""

    ipsets: dict[str, IpSet] = field(default_factory=dict)
    policies: dict[str, PolicyProgram] = field(default_factory=dict)
    endpoints: dict[str, EndpointProgram] = field(default_factory=dict)

    def copy(self) -> NodeState:
        return NodeState(dict(self.ipsets), dict(self.policies), dict(self.endpoints))

    def content_hash(self) -> str:
        """A stable hash of the whole state: equal states hash equal on every machine."""
        return hashlib.sha256(canonical_json(self).encode()).hexdigest()


def canonical_json(state: NodeState) -> str:
    """Sorted, whitespace-free JSON of a node state (members sorted), for hashing and dumps."""
    doc = {
        "ipsets": {
            k: {"kind": s.kind, "members": sorted(s.members)} for k, s in sorted(state.ipsets.items())
        },
        "policies": {k: asdict(p) for k, p in sorted(state.policies.items())},
        "endpoints": {k: asdict(e) for k, e in sorted(state.endpoints.items())},
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))
