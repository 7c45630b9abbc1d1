"""Lowering: a `NormalizedPolicy` into the rule IR plus the ip sets its rules reference.

Owns `IpSetSpec` (what an ip set contains, as a function of the endpoints), `lower_rule` and
`to_program` — Felix's ``ruleToParsedRule`` (``felix/calc/rule_scanner.go``, calico.md 1.4) — and
`ipset_members`. It does not own which policies are active on a node or which endpoints exist
(the oracle, the graph), nor how a data plane matches (`policycore.evaluate`, nftables).

Felix's choices, reproduced exactly so ip-set ids and rules match Calico's:

* a positive selector absorbs the negative one: ``(<sel>) && (!(<notSel>))``; a notSelector
  survives as its own (negated) set only when the side has no positive selector;
* each named port becomes an ``ip_port`` set filtered by the side's positive selector (``all()``
  if none), for the rule's protocol (TCP unless the rule says UDP or SCTP); id ``n:`` +
  ``MakeUniqueID("n", "<selector uid>,<proto>,<name>")``; negated named ports use the positive
  selector too;
* the selector set itself is dropped when the side has named ports and no numeric ports (the
  named-port sets already filter by it);
* nets stay inline (``src_nets``/``dst_nets``): the IR ORs the entries of one ``*_ipsets`` list,
  and a rule's nets must AND with its selector, so they cannot share a list.

``ipVersion`` (not an IR field) is lowered into nets: nets of the other family are dropped (a
side whose nets were all of the other family can never match, so the rule is omitted), and if
neither side keeps a net, ``0.0.0.0/0`` or ``::/0`` is added as the source net. Only the
directions in the policy's ``types`` are emitted: the others can never be evaluated.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from policycore.calc.endpoints import WorkloadEndpoint
from policycore.calc.normalize import NormalizedEntity, NormalizedPolicy, NormalizedRule
from policycore.ir import IpSetKind, PolicyProgram, Rule
from policycore.selector import ALL, Selector, parse, unique_id

NAMED_PORT_PROTOCOLS = {17: "udp", 132: "sctp"}
ANY_NET = {4: "0.0.0.0/0", 6: "::/0"}


@dataclass(frozen=True, slots=True)
class IpSetSpec:
    """What one ip set holds: IPs of the endpoints `selector` matches (``ip``), or for ``ip_port``
    ``"<ip>,<protocol>:<port>"`` for each of their container ports called `named_port` with `protocol`."""

    set_id: str
    kind: IpSetKind
    selector: Selector
    named_port: str = ""
    protocol: str = ""

    def members_of(self, endpoint: WorkloadEndpoint) -> frozenset[str]:
        """The members one endpoint contributes (nothing unless the selector matches it)."""
        if not self.selector.evaluate(endpoint.labels):
            return frozenset()
        if self.kind == "ip":
            return frozenset(endpoint.ips)
        return frozenset(
            f"{ip},{p.protocol}:{p.port}"
            for ip in endpoint.ips
            for p in endpoint.ports
            if p.name == self.named_port and p.protocol == self.protocol
        )


def selector_set(selector: Selector) -> IpSetSpec:
    """The ``ip`` set of a selector; its id is the selector's unique id (``s:...``)."""
    return IpSetSpec(selector.unique_id, "ip", selector)


def named_port_set(selector: Selector, protocol: str, name: str) -> IpSetSpec:
    """The ``ip_port`` set of a named port on the endpoints a selector matches (id ``n:...``)."""
    set_id = unique_id("n", f"{selector.unique_id},{protocol},{name}")
    return IpSetSpec(set_id, "ip_port", selector, name, protocol)


def ipset_members(spec: IpSetSpec, endpoints: Iterable[WorkloadEndpoint]) -> frozenset[str]:
    """The full membership of a set over `endpoints` (cluster-wide)."""
    members: set[str] = set()
    for endpoint in endpoints:
        members |= spec.members_of(endpoint)
    return frozenset(members)


@dataclass(frozen=True, slots=True)
class _Side:
    ipsets: tuple[str, ...]
    not_ipsets: tuple[str, ...]
    named: tuple[str, ...]
    not_named: tuple[str, ...]


def _lower_side(entity: NormalizedEntity, protocol: str, specs: dict[str, IpSetSpec]) -> _Side:
    positive, negative = entity.selector, entity.not_selector
    if positive is not None and negative is not None:
        positive, negative = parse(f"({positive.canonical}) && (!({negative.canonical}))"), None
    filter_by = positive or ALL
    named = [named_port_set(filter_by, protocol, n) for n in entity.named_ports]
    not_named = [named_port_set(filter_by, protocol, n) for n in entity.not_named_ports]
    sets = [selector_set(positive)] if positive is not None and (entity.ports or not named) else []
    not_sets = [selector_set(negative)] if negative is not None else []
    for spec in (*named, *not_named, *sets, *not_sets):
        specs[spec.set_id] = spec
    return _Side(
        tuple(s.set_id for s in sets),
        tuple(s.set_id for s in not_sets),
        tuple(s.set_id for s in named),
        tuple(s.set_id for s in not_named),
    )


def _of_version(nets: tuple[str, ...], version: int | None) -> tuple[str, ...]:
    if version is None:
        return nets
    return tuple(n for n in nets if ipaddress.ip_network(n).version == version)


def lower_rule(rule: NormalizedRule) -> tuple[Rule | None, dict[str, IpSetSpec]]:
    """One rule in the IR and the sets it needs; ``None`` if its ``ipVersion`` makes it unmatchable."""
    src_nets = _of_version(rule.source.nets, rule.ip_version)
    dst_nets = _of_version(rule.destination.nets, rule.ip_version)
    if (rule.source.nets and not src_nets) or (rule.destination.nets and not dst_nets):
        return None, {}
    if rule.ip_version is not None and not src_nets and not dst_nets:
        src_nets = (ANY_NET[rule.ip_version],)
    specs: dict[str, IpSetSpec] = {}
    protocol = NAMED_PORT_PROTOCOLS.get(rule.protocol or 0, "tcp")
    src = _lower_side(rule.source, protocol, specs)
    dst = _lower_side(rule.destination, protocol, specs)
    lowered = Rule(
        action=rule.action,
        rule_id=rule.rule_id,
        protocol=rule.protocol,
        not_protocol=rule.not_protocol,
        icmp=rule.icmp,
        not_icmp=rule.not_icmp,
        src_ipsets=src.ipsets,
        not_src_ipsets=src.not_ipsets,
        src_nets=src_nets,
        not_src_nets=_of_version(rule.source.not_nets, rule.ip_version),
        src_ports=rule.source.ports,
        not_src_ports=rule.source.not_ports,
        src_named_port_ipsets=src.named,
        not_src_named_port_ipsets=src.not_named,
        dst_ipsets=dst.ipsets,
        not_dst_ipsets=dst.not_ipsets,
        dst_nets=dst_nets,
        not_dst_nets=_of_version(rule.destination.not_nets, rule.ip_version),
        dst_ports=rule.destination.ports,
        not_dst_ports=rule.destination.not_ports,
        dst_named_port_ipsets=dst.named,
        not_dst_named_port_ipsets=dst.not_named,
    )
    return lowered, specs


def _lower_rules(rules: tuple[NormalizedRule, ...], specs: dict[str, IpSetSpec]) -> tuple[Rule, ...]:
    out: list[Rule] = []
    for rule in rules:
        lowered, needed = lower_rule(rule)
        if lowered is not None:
            out.append(lowered)
            specs.update(needed)
    return tuple(out)


def to_program(policy: NormalizedPolicy) -> tuple[PolicyProgram, dict[str, IpSetSpec]]:
    """The policy's IR program (only the directions in its types) and every set it references."""
    specs: dict[str, IpSetSpec] = {}
    ingress = _lower_rules(policy.ingress, specs) if "ingress" in policy.types else ()
    egress = _lower_rules(policy.egress, specs) if "egress" in policy.types else ()
    return PolicyProgram(policy.policy_id, ingress, egress), specs
