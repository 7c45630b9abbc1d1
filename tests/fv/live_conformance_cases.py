"""Kubernetes netpol conformance cases as data, for the live lab: upstream's model and truth tables.

Owns the nine-pod model of the upstream e2e suite (namespaces x, y, z; pods a, b, c labelled
``pod=<name>``; one container per port and protocol with ports named ``serve-<port>-<proto>``) as
manifests the lab can run (each pod asks for its model address with Calico's ipAddrs annotation,
so CIDR cases name real addresses), and a representative subset of the truth tables of
``tests/unit/test_k8s_e2e_truthtables.py`` (same policies, same expectations, built with the same
`netpol_cluster` builders), TCP and UDP, including multi-step cases (update, delete).
"""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from netpol_cluster import (
    NAMESPACES,
    POD_NAMES,
    PeerSpec,
    Reachability,
    expressions,
    k8s_policy,
    match_labels,
    pod_ip,
)

from policycore.model import to_document

NS_LABEL = "kubernetes.io/metadata.name"
PORTS = (80, 81)
PROTOCOLS = ("TCP", "UDP")
ALL_PODS = tuple(f"{ns}/{p}" for ns in NAMESPACES for p in POD_NAMES)
ALL = PeerSpec()
X, Y, Z = PeerSpec("x"), PeerSpec("y"), PeerSpec("z")
XA, YA = PeerSpec("x", "a"), PeerSpec("y", "a")


@dataclass(frozen=True)
class Probe:
    port: int
    protocol: str
    expected: Reachability


@dataclass(frozen=True)
class CaseStep:
    """The policies that exist after this step (others are deleted), then what to probe."""

    policies: tuple[dict[str, Any], ...]
    probes: tuple[Probe, ...]


@dataclass(frozen=True)
class LiveCase:
    name: str
    pods: tuple[str, ...]
    steps: tuple[CaseStep, ...]


def model_documents() -> list[dict[str, Any]]:
    """Namespaces x, y, z and the nine pods, unplaced (the lab places them), at their model IPs."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in NAMESPACES
    ]
    for pod in ALL_PODS:
        ns, name = pod.split("/")
        containers = [
            {
                "name": f"cont-{port}-{proto.lower()}",
                "ports": [
                    {"name": f"serve-{port}-{proto.lower()}", "containerPort": port, "protocol": proto}
                ],
            }
            for proto in PROTOCOLS
            for port in PORTS
        ]
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "labels": {"pod": name},
                    "annotations": {"cni.projectcalico.org/ipAddrs": f'["{pod_ip(pod)}"]'},
                },
                "spec": {"containers": containers},
            }
        )
    return docs


def policy(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return to_document(k8s_policy(*args, **kwargs))


def ns_is(ns: str) -> dict[str, Any]:
    return {"namespaceSelector": match_labels(**{NS_LABEL: ns})}


def pod_is(name: str) -> dict[str, Any]:
    return {"podSelector": match_labels(pod=name)}


def one(name: str, pods: list[str], policies: list[dict[str, Any]], *probes: Probe) -> LiveCase:
    return LiveCase(name, tuple(pods), (CaseStep(tuple(policies), probes),))


def tcp(port: int, expected: Reachability) -> Probe:
    return Probe(port, "TCP", expected)


def udp(port: int, expected: Reachability) -> Probe:
    return Probe(port, "UDP", expected)


def _cases() -> list[LiveCase]:
    cases = []
    p = ["x/a", "x/b", "y/a", "y/b"]
    cases.append(
        one(
            "default-deny-ingress",
            p,
            [policy("deny-ingress", "x", {}, ingress=[])],
            tcp(80, Reachability(p).expect_peer(ALL, X, False)),
        )
    )
    p = ["x/a", "x/b", "y/a"]
    cases.append(
        one(
            "default-deny-all",
            p,
            [policy("deny-all", "x", {}, ingress=[], egress=[])],
            tcp(80, Reachability(p).expect_peer(ALL, X, False).expect_peer(X, ALL, False)),
        )
    )
    p = ["x/a", "x/b", "x/c", "y/a"]
    cases.append(
        one(
            "allow-from-pods-in-namespace-by-pod-selector",
            p,
            [policy("x-a-allows-x-b", "x", match_labels(pod="a"), ingress=[{"from": [pod_is("b")]}])],
            tcp(80, Reachability(p).expect_all_ingress("x/a", False).expect("x/b", "x/a", True)),
        )
    )
    p = ["x/a", "x/b", "y/a"]
    allow_a = policy(
        "allow-all-to-a",
        "x",
        match_labels(pod="a"),
        ingress=[{"from": [{"podSelector": {}, "namespaceSelector": {}}]}],
    )
    cases.append(
        one(
            "allow-ingress-for-a-target",
            p,
            [policy("deny-all", "x", {}, ingress=[]), allow_a],
            tcp(80, Reachability(p).expect_all_ingress("x/a", True).expect_all_ingress("x/b", False)),
        )
    )
    p = ["x/a", "x/b", "y/a", "z/a"]
    cases.append(
        one(
            "allow-only-from-another-namespace",
            p,
            [policy("allow-y", "x", match_labels(pod="a"), ingress=[{"from": [ns_is("y")]}])],
            tcp(80, Reachability(p).expect_peer(X, XA, False).expect_peer(Z, XA, False)),
        )
    )
    peer = {"namespaceSelector": expressions(NS_LABEL, "In", "y")}
    cases.append(
        one(
            "namespace-selector-match-expressions",
            p,
            [policy("allow-ns-y-expr", "x", match_labels(pod="a"), ingress=[{"from": [peer]}])],
            tcp(80, Reachability(p).expect_peer(X, XA, False).expect_peer(Z, XA, False)),
        )
    )
    p = ["x/a", "x/b", "x/c", "y/a"]
    peers = [{"namespaceSelector": expressions(NS_LABEL, "NotIn", "x")}, pod_is("b")]
    cases.append(
        one(
            "pod-selector-or-namespace-selector",
            p,
            [policy("ns-or-pod", "x", match_labels(pod="a"), ingress=[{"from": peers}])],
            tcp(80, Reachability(p).expect("x/a", "x/a", False).expect("x/c", "x/a", False)),
        )
    )
    p = ["x/a", "x/b", "y/a", "y/b", "z/b"]
    peer = {"namespaceSelector": expressions(NS_LABEL, "NotIn", "x"), "podSelector": match_labels(pod="b")}
    cases.append(
        one(
            "pod-selector-and-namespace-selector",
            p,
            [policy("ns-and-pod", "x", match_labels(pod="a"), ingress=[{"from": [peer]}])],
            tcp(
                80,
                Reachability(p)
                .expect_all_ingress("x/a", False)
                .expect("y/b", "x/a", True)
                .expect("z/b", "x/a", True),
            ),
        )
    )
    p = ["x/a", "x/b", "y/a", "y/b", "z/a"]
    rule = {"from": [ns_is("y")], "ports": [{"port": 81, "protocol": "TCP"}]}
    cases.append(
        one(
            "policy-based-on-ports",
            p,
            [policy("allow-81", "x", match_labels(pod="a"), ingress=[rule])],
            tcp(81, Reachability(p).expect_peer(X, XA, False).expect_peer(Z, XA, False)),
            tcp(80, Reachability(p).expect_all_ingress("x/a", False)),
        )
    )
    p = ["x/a", "x/b", "y/a"]
    cases.append(
        one(
            "allow-ingress-on-one-named-port",
            p,
            [policy("allow-named", "x", {}, ingress=[{"ports": [{"port": "serve-81-tcp"}]}])],
            tcp(81, Reachability(p)),
            tcp(80, Reachability(p).expect_peer(ALL, X, False)),
        )
    )
    cases.append(
        one(
            "deny-egress-by-pod-selector",
            p,
            [policy("deny-egress-a", "x", match_labels(pod="a"), egress=[])],
            tcp(80, Reachability(p).expect_all_egress("x/a", False)),
            udp(81, Reachability(p).expect_all_egress("x/a", False)),
        )
    )
    p = ["x/a", "y/a", "y/b"]
    to = [{"to": [{**ns_is("y"), **pod_is("a")}]}]
    cases.append(
        one(
            "egress-to-another-namespace-by-pod-and-namespace-selector",
            p,
            [policy("to-y-a", "x", match_labels(pod="a"), egress=to)],
            tcp(80, Reachability(p).expect_all_egress("x/a", False).expect("x/a", "y/a", True)),
        )
    )
    block = {"ipBlock": {"cidr": f"{pod_ip('y/b')}/32"}}
    cases.append(
        one(
            "allow-egress-to-a-cidr",
            p,
            [policy("to-cidr", "x", match_labels(pod="a"), egress=[{"to": [block]}])],
            tcp(80, Reachability(p).expect_all_egress("x/a", False).expect("x/a", "y/b", True)),
        )
    )
    p = ["x/a", "x/b", "x/c"]
    ip = pod_ip("x/b")
    wide = {"ipBlock": {"cidr": str(ipaddress.ip_network(f"{ip}/4", strict=False)), "except": [f"{ip}/32"]}}
    cases.append(
        one(
            "egress-cidr-except",
            p,
            [policy("cidr-except", "x", match_labels(pod="a"), egress=[{"to": [wide]}])],
            tcp(80, Reachability(p).expect("x/a", "x/b", False)),
        )
    )
    p = ["x/a", "y/a"]
    cases.append(
        one(
            "ingress-any-port-of-one-protocol",
            p,
            [policy("by-proto", "x", match_labels(pod="a"), ingress=[{"ports": [{"protocol": "TCP"}]}])],
            tcp(80, Reachability(p)),
            udp(80, Reachability(p).expect_peer(ALL, XA, False)),
        )
    )
    cases.append(
        one(
            "tcp-not-allowed-when-only-udp",
            p,
            [
                policy(
                    "only-udp",
                    "x",
                    match_labels(pod="a"),
                    ingress=[{"ports": [{"port": 81, "protocol": "UDP"}]}],
                )
            ],
            tcp(81, Reachability(p).expect_all_ingress("x/a", False)),
            udp(81, Reachability(p)),
        )
    )
    p = ["x/a", "x/b", "y/a", "y/b"]
    cases.append(
        one(
            "udp-default-deny-ingress",
            p,
            [policy("deny-all", "x", {}, ingress=[])],
            udp(80, Reachability(p).expect_peer(ALL, X, False)),
        )
    )
    p = ["x/a", "x/b", "y/a", "z/a"]
    rule = {"from": [ns_is("y")], "ports": [{"port": 81, "protocol": "UDP"}]}
    cases.append(
        one(
            "udp-policy-based-on-ports",
            p,
            [policy("udp-81", "x", match_labels(pod="a"), ingress=[rule])],
            udp(81, Reachability(p).expect_peer(X, XA, False).expect_peer(Z, XA, False)),
        )
    )
    p = ["x/a", "y/a"]
    allow_all = policy("mutate", "x", {}, ingress=[{}])
    deny_all = policy("mutate", "x", {}, ingress=[])
    cases.append(
        LiveCase(
            "enforce-updated-policy",
            tuple(p),
            (
                CaseStep((allow_all,), (tcp(81, Reachability(p)),)),
                CaseStep((deny_all,), (tcp(81, Reachability(p).expect_peer(ALL, X, False)),)),
            ),
        )
    )
    both = policy("deny-all", "x", {}, ingress=[], egress=[])
    cases.append(
        LiveCase(
            "stop-enforcing-after-delete",
            tuple(p),
            (
                CaseStep(
                    (both,),
                    (
                        tcp(80, Reachability(p).expect_peer(X, ALL, False).expect_peer(ALL, X, False)),
                        udp(80, Reachability(p).expect_peer(X, ALL, False).expect_peer(ALL, X, False)),
                    ),
                ),
                CaseStep((), (tcp(80, Reachability(p)), udp(80, Reachability(p)))),
            ),
        )
    )
    return cases


CASES = _cases()
