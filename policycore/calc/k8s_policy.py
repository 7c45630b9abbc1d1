"""Kubernetes NetworkPolicy → Calico v3 rules, as Calico's ``K8sNetworkPolicyToCalico`` converts them.

Owns the expansion of one ``networking.k8s.io/v1`` rule into Calico rules (one per protocol and
peer, all Allow), label-selector → Calico-selector text, and ``SimplifyPorts``. It does not own
the v3 → Felix lowering that follows (namespace clauses, pcns. prefixes: `policycore.calc.normalize`).

Source: ``libcalico-go/lib/backend/k8s/conversion/conversion.go`` (calico.md 2.7):

* a port with no protocol is TCP; ``endPort`` makes ``port:endPort``; a named port passes through;
  a port entry with a protocol and no port means every port of that protocol;
* ports are grouped by protocol (protocols sorted by name, ``""`` = no ports at all first); a
  protocol with an "every port" entry keeps no port list; each group goes through ``SimplifyPorts``
  (named ports first in input order, then the numeric ports merged into sorted ranges; inputs of
  at most one port or at most one numeric port are returned unchanged);
* no ports → one rule with no protocol and no ports; no peers → one rule with no peer;
* peer ``ipBlock`` → nets ``[cidr]`` and notNets ``except``; otherwise selector = pod selector
  (always prefixed ``projectcalico.org/orchestrator == 'k8s'``) and namespaceSelector = ``all()``
  for ``{}``, ``""`` when absent (same namespace);
* rules come out protocol-major, peer-minor.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from policycore.ir import PortRange
from policycore.model.kube import LabelSelector, NetworkPolicyPeer, NetworkPolicyPort

ORCHESTRATOR_CLAUSE = "projectcalico.org/orchestrator == 'k8s'"
CalicoPort = PortRange | str


@dataclass(frozen=True, slots=True)
class CalicoPeer:
    """The peer fields of one converted rule (empty strings / tuples = not set)."""

    selector: str = ""
    namespace_selector: str = ""
    nets: tuple[str, ...] = ()
    not_nets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CalicoRule:
    """One converted Allow rule: protocol name (or None), destination ports, and the peer."""

    protocol: str | None
    ports: tuple[CalicoPort, ...]
    peer: CalicoPeer


def k8s_selector(selector: LabelSelector | None, *, pod: bool) -> str:
    """``k8sSelectorToCalico``: the Calico selector text of a pod or namespace label selector."""
    parts = [ORCHESTRATOR_CLAUSE] if pod else []
    if selector is None:
        return " && ".join(parts)
    if not pod and not selector.match_labels and not selector.match_expressions:
        return "all()"
    parts += [f"{k} == '{selector.match_labels[k]}'" for k in sorted(selector.match_labels)]
    for expr in selector.match_expressions:
        values = "', '".join(expr.values)
        if expr.operator == "In":
            parts.append(f"{expr.key} in {{ '{values}' }}")
        elif expr.operator == "NotIn":
            parts.append(f"{expr.key} not in {{ '{values}' }}")
        elif expr.operator == "Exists":
            parts.append(f"has({expr.key})")
        else:
            parts.append(f"! has({expr.key})")
    return " && ".join(parts)


def k8s_rule_to_calico(
    peers: Sequence[NetworkPolicyPeer], ports: Sequence[NetworkPolicyPort]
) -> list[CalicoRule]:
    """``k8sRuleToCalico``: one k8s ingress/egress rule as Calico rules, in Calico's order."""
    by_protocol: dict[str, tuple[CalicoPort, ...] | None] = {}
    if not ports:
        by_protocol = {"": None}
    for port in ports:
        if port.port is None:
            by_protocol[port.protocol] = None
            continue
        text = str(port.port) if port.end_port is None else f"{port.port}:{port.end_port}"
        if port.protocol not in by_protocol or by_protocol[port.protocol]:
            by_protocol[port.protocol] = (*(by_protocol.get(port.protocol) or ()), _port_from_string(text))
    calico_peers = [_peer(p) for p in peers] or [CalicoPeer()]
    return [
        CalicoRule(protocol or None, simplify_ports(by_protocol[protocol] or ()), peer)
        for protocol in sorted(by_protocol)
        for peer in calico_peers
    ]


def simplify_ports(ports: Sequence[CalicoPort]) -> tuple[CalicoPort, ...]:
    """``SimplifyPorts``: named ports first, then the numeric ports as merged, sorted ranges."""
    numeric = sorted((p.first, p.last) for p in ports if isinstance(p, PortRange))
    if len(ports) <= 1 or sum(last - first + 1 for first, last in numeric) <= 1:
        return tuple(ports)
    merged: list[list[int]] = []
    for first, last in numeric:
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return (*(p for p in ports if isinstance(p, str)), *(PortRange(a, b) for a, b in merged))


def _peer(peer: NetworkPolicyPeer) -> CalicoPeer:
    if peer.ip_block is not None:
        return CalicoPeer(
            nets=(_net(peer.ip_block.cidr),), not_nets=tuple(_net(e) for e in peer.ip_block.except_)
        )
    return CalicoPeer(
        selector=k8s_selector(peer.pod_selector, pod=True),
        namespace_selector=k8s_selector(peer.namespace_selector, pod=False),
    )


def _port_from_string(text: str) -> CalicoPort:
    first, sep, last = text.partition(":")
    if sep:
        return PortRange(int(first), int(last))
    return PortRange(int(text), int(text)) if text.isdigit() else text


def _net(cidr: str) -> str:
    return str(ipaddress.ip_network(cidr, strict=False))
