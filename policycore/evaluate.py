"""Verdicts: what a programmed `NodeState` does with a packet — the in-memory data plane's logic.

Owns `evaluate` (one direction at one endpoint, exactly the evaluation order in `policycore.ir`'s
docstring, with a trace of every tier, policy and rule consulted), `connection_allowed` (egress
at the source's node, then ingress at the destination's node) and their result types, which
carry what ``kalikoctl explain`` prints. It does not own how states are computed
(`policycore.calc`) or real enforcement (nftables).

Conventions:

* a packet's optional fields (``src_port``, ``icmp_type``, ``icmp_code``) left as ``None`` are
  "unknown": a positive criterion on them fails, a negated one holds;
* an endpoint that is not programmed on its node, or a tier that names a missing policy, or a rule
  that names a missing ip set, **fails closed** (deny, ``decided_by`` says why);
* a peer that is not a workload endpoint (``Peer.key is None``) has no side of its own to check;
  a pod can always reach itself (Kubernetes: a pod cannot block access to itself).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from policycore.ir import Direction, IcmpMatch, IpSet, NodeState, PortRange, Rule

PORT_PROTOCOL_NAMES: Mapping[int, str] = {6: "tcp", 17: "udp", 132: "sctp"}
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TraceStep(NamedTuple):
    """One thing evaluation looked at. ``outcome``: a rule's action (``allow``, ``deny``, ``pass``,
    ``log``), ``no-match`` (a policy none of whose rules matched), ``tier-default:<action>``,
    ``profile`` or ``fail-closed:<why>``."""

    tier: str
    policy: str | None
    rule_id: str | None
    outcome: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """One direction's result at one endpoint.

    ``decided_by`` is the deciding rule id, ``"profile"``, ``"tier-default:<tier>"`` or
    ``"fail-closed:<why>"``."""

    endpoint: str
    direction: Direction
    allowed: bool
    decided_by: str
    trace: tuple[TraceStep, ...]


@dataclass(frozen=True, slots=True)
class Packet:
    """The fields rules match on; IPs are parsed once."""

    src_ip: IpAddress
    dst_ip: IpAddress
    protocol: int
    dst_port: int
    src_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None

    @classmethod
    def of(
        cls,
        src_ip: str,
        dst_ip: str,
        protocol: int,
        dst_port: int,
        *,
        src_port: int | None = None,
        icmp_type: int | None = None,
        icmp_code: int | None = None,
    ) -> Packet:
        return cls(
            ipaddress.ip_address(src_ip),
            ipaddress.ip_address(dst_ip),
            protocol,
            dst_port,
            src_port,
            icmp_type,
            icmp_code,
        )


class _MissingIpSet(Exception):
    def __init__(self, set_id: str) -> None:
        self.set_id = set_id


def _in_set(ipsets: Mapping[str, IpSet], set_id: str, ip: IpAddress, protocol: int, port: int | None) -> bool:
    ipset = ipsets.get(set_id)
    if ipset is None:
        raise _MissingIpSet(set_id)
    if ipset.kind == "ip":
        return str(ip) in ipset.members
    if ipset.kind == "net":
        return any(ip in ipaddress.ip_network(m) for m in ipset.members)
    name = PORT_PROTOCOL_NAMES.get(protocol)
    return port is not None and name is not None and f"{ip},{name}:{port}" in ipset.members


def _in_nets(ip: IpAddress, nets: tuple[str, ...]) -> bool:
    return any(ip in ipaddress.ip_network(n) for n in nets)


def _icmp_matches(match: IcmpMatch, packet: Packet) -> bool:
    return match.type == packet.icmp_type and (match.code is None or match.code == packet.icmp_code)


def _port_matches(
    ranges: tuple[PortRange, ...],
    named: tuple[str, ...],
    ipsets: Mapping[str, IpSet],
    ip: IpAddress,
    packet: Packet,
    port: int | None,
) -> bool:
    in_range = port is not None and any(r.contains(port) for r in ranges)
    return in_range or any(_in_set(ipsets, s, ip, packet.protocol, port) for s in named)


def _side_matches(rule: Rule, ipsets: Mapping[str, IpSet], packet: Packet, src: bool) -> bool:
    ip, port = (packet.src_ip, packet.src_port) if src else (packet.dst_ip, packet.dst_port)
    if src:
        sets, not_sets = rule.src_ipsets, rule.not_src_ipsets
        nets, not_nets = rule.src_nets, rule.not_src_nets
        ports, not_ports = rule.src_ports, rule.not_src_ports
        named, not_named = rule.src_named_port_ipsets, rule.not_src_named_port_ipsets
    else:
        sets, not_sets = rule.dst_ipsets, rule.not_dst_ipsets
        nets, not_nets = rule.dst_nets, rule.not_dst_nets
        ports, not_ports = rule.dst_ports, rule.not_dst_ports
        named, not_named = rule.dst_named_port_ipsets, rule.not_dst_named_port_ipsets
    proto = packet.protocol
    if sets and not any(_in_set(ipsets, s, ip, proto, port) for s in sets):
        return False
    if any(_in_set(ipsets, s, ip, proto, port) for s in not_sets):
        return False
    if (nets and not _in_nets(ip, nets)) or _in_nets(ip, not_nets):
        return False
    if (ports or named) and not _port_matches(ports, named, ipsets, ip, packet, port):
        return False
    return not _port_matches(not_ports, not_named, ipsets, ip, packet, port)


def rule_matches(rule: Rule, ipsets: Mapping[str, IpSet], packet: Packet) -> bool:
    """Whether every criterion of `rule` holds for `packet` (raises on a missing ip set)."""
    if rule.protocol is not None and rule.protocol != packet.protocol:
        return False
    if rule.not_protocol is not None and rule.not_protocol == packet.protocol:
        return False
    if rule.icmp is not None and not _icmp_matches(rule.icmp, packet):
        return False
    if rule.not_icmp is not None and _icmp_matches(rule.not_icmp, packet):
        return False
    return _side_matches(rule, ipsets, packet, src=True) and _side_matches(rule, ipsets, packet, src=False)


def evaluate_packet(state: NodeState, endpoint_key: str, direction: Direction, packet: Packet) -> Verdict:
    """One direction of `packet` at a local endpoint of `state` (see the module docstring)."""
    trace: list[TraceStep] = []

    def verdict(allowed: bool, decided_by: str) -> Verdict:
        return Verdict(endpoint_key, direction, allowed, decided_by, tuple(trace))

    endpoint = state.endpoints.get(endpoint_key)
    if endpoint is None:
        trace.append(TraceStep("", None, None, "fail-closed:unprogrammed-endpoint"))
        return verdict(False, "fail-closed:unprogrammed-endpoint")
    for tier in endpoint.ingress if direction == "ingress" else endpoint.egress:
        passed = False
        for policy_id in tier.policies:
            program = state.policies.get(policy_id)
            if program is None:
                trace.append(TraceStep(tier.name, policy_id, None, "fail-closed:missing-policy"))
                return verdict(False, f"fail-closed:missing-policy:{policy_id}")
            decided: str | None = None
            for rule in program.ingress if direction == "ingress" else program.egress:
                try:
                    matched = rule_matches(rule, state.ipsets, packet)
                except _MissingIpSet as missing:
                    trace.append(TraceStep(tier.name, policy_id, rule.rule_id, "fail-closed:missing-ipset"))
                    return verdict(False, f"fail-closed:missing-ipset:{missing.set_id}")
                if matched:
                    trace.append(TraceStep(tier.name, policy_id, rule.rule_id, rule.action))
                    if rule.action != "log":
                        decided = rule.action
                        break
            if decided in ("allow", "deny"):
                return verdict(decided == "allow", trace[-1].rule_id or "")
            if decided == "pass":
                passed = True
                break
            trace.append(TraceStep(tier.name, policy_id, None, "no-match"))
        if passed:
            continue
        trace.append(TraceStep(tier.name, None, None, f"tier-default:{tier.default_action}"))
        if tier.default_action == "deny":
            return verdict(False, f"tier-default:{tier.name}")
    trace.append(TraceStep("", None, None, "profile"))
    return verdict(True, "profile")


def evaluate(
    state: NodeState,
    endpoint_key: str,
    direction: Direction,
    src_ip: str,
    dst_ip: str,
    protocol: int,
    dst_port: int,
    *,
    src_port: int | None = None,
    icmp_type: int | None = None,
    icmp_code: int | None = None,
) -> Verdict:
    """`evaluate_packet` for a packet given field by field."""
    packet = Packet.of(
        src_ip, dst_ip, protocol, dst_port, src_port=src_port, icmp_type=icmp_type, icmp_code=icmp_code
    )
    return evaluate_packet(state, endpoint_key, direction, packet)


@dataclass(frozen=True, slots=True)
class Peer:
    """One end of a connection: an IP, and for a workload endpoint its key and node."""

    ip: str
    key: str | None = None
    node: str | None = None


@dataclass(frozen=True, slots=True)
class Explanation:
    """A connection's verdict with both sides: ``egress`` at the source, ``ingress`` at the destination.

    A side is ``None`` when that end is not a workload endpoint or the connection is a pod to
    itself; ``reason`` summarises (``self``, ``allowed``, ``denied by egress``, ...)."""

    src: Peer
    dst: Peer
    protocol: int
    dst_port: int
    allowed: bool
    reason: str
    egress: Verdict | None
    ingress: Verdict | None


def locate(states: Mapping[str, NodeState], ip: str) -> Peer:
    """The workload endpoint that owns `ip` in any node's state, else an external peer."""
    wanted = ipaddress.ip_address(ip)
    for node, state in sorted(states.items()):
        for key, endpoint in sorted(state.endpoints.items()):
            if any(ipaddress.ip_address(own) == wanted for own in endpoint.ips):
                return Peer(ip, key, node)
    return Peer(ip)


def _side(
    states: Mapping[str, NodeState], peer: Peer, direction: Direction, packet: Packet
) -> Verdict | None:
    if peer.key is None:
        return None
    state = states.get(peer.node or "")
    if state is None:
        step = TraceStep("", None, None, "fail-closed:unknown-node")
        return Verdict(peer.key, direction, False, "fail-closed:unknown-node", (step,))
    return evaluate_packet(state, peer.key, direction, packet)


def connection_allowed(
    states: Mapping[str, NodeState],
    src: Peer,
    dst: Peer,
    protocol: int,
    dst_port: int,
    *,
    src_port: int | None = None,
    icmp_type: int | None = None,
    icmp_code: int | None = None,
) -> Explanation:
    """Whether `src` may open a connection to `dst`: egress at the source, ingress at the destination."""
    if src.key is not None and src.key == dst.key:
        return Explanation(src, dst, protocol, dst_port, True, "self", None, None)
    packet = Packet.of(
        src.ip, dst.ip, protocol, dst_port, src_port=src_port, icmp_type=icmp_type, icmp_code=icmp_code
    )
    egress = _side(states, src, "egress", packet)
    ingress = _side(states, dst, "ingress", packet)
    egress_ok = egress is None or egress.allowed
    ingress_ok = ingress is None or ingress.allowed
    if egress_ok and ingress_ok:
        reason = "allowed"
    elif not egress_ok and not ingress_ok:
        reason = "denied by egress and ingress"
    else:
        reason = "denied by egress" if not egress_ok else "denied by ingress"
    return Explanation(src, dst, protocol, dst_port, egress_ok and ingress_ok, reason, egress, ingress)
