"""Test support: the upstream netpol e2e model (namespaces x/y/z, pods a/b/c) and its truth tables.

Owns building the resources of the e2e model (``kubernetes/test/e2e/network/netpol/model.go``:
each pod labelled ``pod=<name>``, one container per (port, protocol) with a port named
``serve-<port>-<proto>``, namespaces carrying ``kubernetes.io/metadata.name``), upstream's policy
builders (``SetSpecIngressRules`` / ``SetSpecEgressRules`` append the policy type), the
`Reachability` table with upstream's four edits, and `probe`, which runs every pair through
`compile_all` + `connection_allowed`. Self pairs are ignored, as upstream does (``ignoreLoopback``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from policycore.calc.oracle import compile_all
from policycore.evaluate import Explanation, Peer, connection_allowed
from policycore.model import Resource, parse_resource
from policycore.model.kube import Pod

NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
ALL_PODS = tuple(f"{ns}/{p}" for ns in NAMESPACES for p in POD_NAMES)
PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}
NODES = ("node-1", "node-2")


def pod_ip(pod: str) -> str:
    ns, name = pod.split("/")
    return f"198.18.{NAMESPACES.index(ns) + 1}.{POD_NAMES.index(name) + 1}" if name in POD_NAMES else ""


def cluster(
    pods: Iterable[str] = ALL_PODS,
    *,
    ports: Sequence[int] = (80, 81),
    protocols: Sequence[str] = ("TCP", "UDP", "SCTP"),
    namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
    pod_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Resource]:
    """Namespaces x, y, z (always, as upstream creates all three), two nodes and the listed pods."""
    docs: list[dict[str, Any]] = []
    for ns in NAMESPACES:
        labels = dict((namespace_labels or {}).get(ns, {}))
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}})
    docs += [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}} for n in NODES]
    for i, pod in enumerate(sorted(pods)):
        ns, name = pod.split("/")
        labels = {"pod": name, **(pod_labels or {}).get(pod, {})}
        containers = [
            {
                "name": f"cont-{port}-{proto.lower()}",
                "ports": [
                    {"name": f"serve-{port}-{proto.lower()}", "containerPort": port, "protocol": proto}
                ],
            }
            for proto in protocols
            for port in ports
        ]
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {"nodeName": NODES[i % len(NODES)], "containers": containers},
                "status": {"podIP": pod_ip(pod), "phase": "Running"},
            }
        )
    return [parse_resource(d) for d in docs]


def k8s_policy(
    name: str,
    namespace: str,
    pod_selector: Mapping[str, Any] | None = None,
    *,
    ingress: list[dict[str, Any]] | None = None,
    egress: list[dict[str, Any]] | None = None,
    policy_types: list[str] | None = None,
) -> Resource:
    """Upstream's ``GenNetworkPolicyWithNameAndPodSelector`` + ``SetSpecIngressRules``/``SetSpecEgressRules``:
    passing `ingress` (even ``[]``) adds ``Ingress`` to policyTypes, likewise `egress`."""
    spec: dict[str, Any] = {"podSelector": dict(pod_selector or {})}
    types: list[str] = []
    if ingress is not None:
        spec["ingress"] = ingress
        types.append("Ingress")
    if egress is not None:
        spec["egress"] = egress
        types.append("Egress")
    spec["policyTypes"] = policy_types if policy_types is not None else types
    doc = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    return parse_resource(doc)


def match_labels(**labels: str) -> dict[str, Any]:
    return {"matchLabels": dict(labels)}


def expressions(key: str, operator: str, *values: str) -> dict[str, Any]:
    expr: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        expr["values"] = list(values)
    return {"matchExpressions": [expr]}


@dataclass(frozen=True)
class PeerSpec:
    """Upstream's ``Peer``: an empty field is a wildcard."""

    namespace: str = ""
    pod: str = ""

    def matches(self, pod: str) -> bool:
        ns, name = pod.split("/")
        return (not self.namespace or self.namespace == ns) and (not self.pod or self.pod == name)


class Reachability:
    """Upstream's expected matrix: every pair starts at `default`; later edits overwrite earlier ones."""

    def __init__(self, pods: Iterable[str], default: bool = True) -> None:
        self.pods = sorted(pods)
        self.expected = {(a, b): default for a in self.pods for b in self.pods}

    def expect(self, src: str, dst: str, value: bool) -> Reachability:
        self.expected[(src, dst)] = value
        return self

    def expect_all_ingress(self, dst: str, value: bool) -> Reachability:
        for src in self.pods:
            self.expected[(src, dst)] = value
        return self

    def expect_all_egress(self, src: str, value: bool) -> Reachability:
        for dst in self.pods:
            self.expected[(src, dst)] = value
        return self

    def expect_peer(self, src: PeerSpec, dst: PeerSpec, value: bool) -> Reachability:
        for a, b in self.expected:
            if src.matches(a) and dst.matches(b):
                self.expected[(a, b)] = value
        return self


def probe(
    resources: Sequence[Resource], pods: Iterable[str], port: int, protocol: str
) -> dict[tuple[str, str], Explanation]:
    """Every ordered pair (self pairs excluded) evaluated through the oracle's node states."""
    states = compile_all(resources)
    placed = {
        f"{r.metadata.namespace}/{r.metadata.name}": r.spec.node_name for r in resources if isinstance(r, Pod)
    }
    peers = {p: Peer(pod_ip(p), p, placed[p]) for p in pods}
    return {
        (a, b): connection_allowed(states, peers[a], peers[b], PROTOCOL_NUMBERS[protocol], port)
        for a in peers
        for b in peers
        if a != b
    }


def assert_reachability(
    resources: Sequence[Resource], port: int, protocol: str, reachability: Reachability
) -> None:
    """Upstream's ``ValidateOrFail``: every non-self pair must match; the message shows the truth table."""
    results = probe(resources, reachability.pods, port, protocol)
    wrong = {pair: e for pair, e in results.items() if e.allowed != reachability.expected[pair]}
    if wrong:
        lines = [f"{protocol}/{port}: {len(wrong)} of {len(results)} pairs wrong (expected, got, why):"]
        for (a, b), e in sorted(wrong.items()):
            side = e.egress if e.egress is not None and not e.egress.allowed else e.ingress
            why = side.decided_by if side is not None else e.reason
            lines.append(f"  {a} -> {b}: expected {reachability.expected[(a, b)]}, got {e.allowed} ({why})")
        raise AssertionError("\n".join(lines))
