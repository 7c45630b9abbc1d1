"""Cyclonus-style differential test: generated Kubernetes policies, Kaliko's verdicts vs a simulator.

The simulator below is written from the Kubernetes semantics alone (netpol.md section 2 and
cyclonus's ``pkg/matcher``: targets per policy type, peer matchers, port matchers with named ports
resolved on the destination pod), with its own label-selector evaluation — it shares no code with
Kaliko's normaliser, selector language, IR or evaluator. Every generated case is compiled by
`compile_all` and every ordered pair of the nine x/y/z by a/b/c pods is probed on TCP/80, TCP/81,
UDP/80, UDP/81 and SCTP/80; each verdict must equal the simulator's.

Generation follows cyclonus's families: targets (podSelector variations, three namespaces), peers
(pod / namespace / both / ipBlock with excepts on pod IPs / none), ports and protocols (numbers,
endPort ranges, named ports, protocol-only entries, empty entries), policyTypes (explicit, or left
to defaulting, with and without egress rules), and several policies at once. Named port ``web``
maps to different numbers in different namespaces, so resolution on the destination matters.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from policycore.calc.oracle import compile_all
from policycore.evaluate import Peer, connection_allowed
from policycore.model import Resource, parse_resource

NAMESPACE_LABELS = {
    "x": {"kubernetes.io/metadata.name": "x", "env": "prod", "team": "blue"},
    "y": {"kubernetes.io/metadata.name": "y", "env": "dev"},
    "z": {"kubernetes.io/metadata.name": "z", "env": "prod", "team": "red"},
}
POD_LABELS = {"a": {"pod": "a", "app": "web"}, "b": {"pod": "b", "app": "db"}, "c": {"pod": "c"}}
WEB_PORT = {"x": 80, "y": 81, "z": 80}
PROBES = [("TCP", 80), ("TCP", 81), ("UDP", 80), ("UDP", 81), ("SCTP", 80)]
PROTO = {"TCP": 6, "UDP": 17, "SCTP": 132}


@dataclass(frozen=True)
class SimPod:
    namespace: str
    name: str
    ip: str
    node: str
    labels: Mapping[str, str]
    ports: tuple[tuple[str, str, int], ...]  # (name, protocol, number)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def sim_pods() -> list[SimPod]:
    pods = []
    for i, ns in enumerate("xyz"):
        for j, name in enumerate("abc"):
            ports = [(f"serve-{p}-{proto.lower()}", proto, p) for proto in PROTO for p in (80, 81)]
            if name != "c":
                ports.append(("web", "TCP", WEB_PORT[ns]))
            ip = f"198.18.{i + 1}.{j + 1}"
            pods.append(SimPod(ns, name, ip, f"node-{(i + j) % 2}", POD_LABELS[name], tuple(ports)))
    return pods


def resources_of(pods: Sequence[SimPod], policies: Sequence[dict[str, Any]]) -> list[Resource]:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}
        for ns, labels in NAMESPACE_LABELS.items()
    ]
    for pod in pods:
        containers = [
            {"name": f"c{i}", "ports": [{"name": n, "containerPort": num, "protocol": proto}]}
            for i, (n, proto, num) in enumerate(pod.ports)
        ]
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": dict(pod.labels)},
                "spec": {"nodeName": pod.node, "containers": containers},
                "status": {"podIP": pod.ip},
            }
        )
    return [parse_resource(d) for d in docs + list(policies)]


# --- the independent simulator -----------------------------------------------------------------


def sim_selector(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics; ``None`` is never passed here (callers decide what absent means)."""
    assert selector is not None
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def sim_types(spec: Mapping[str, Any]) -> set[str]:
    if spec.get("policyTypes"):
        return set(spec["policyTypes"])
    return {"Ingress", "Egress"} if spec.get("egress") else {"Ingress"}


def sim_peer(peer: Mapping[str, Any], policy_ns: str, other: SimPod) -> bool:
    if "ipBlock" in peer:
        ip = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        inside = ip in ipaddress.ip_network(block["cidr"])
        return inside and not any(ip in ipaddress.ip_network(e) for e in block.get("except", []))
    ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
    ns_ok = (
        other.namespace == policy_ns
        if ns_sel is None
        else sim_selector(ns_sel, NAMESPACE_LABELS[other.namespace])
    )
    pod_ok = True if pod_sel is None else sim_selector(pod_sel, other.labels)
    return ns_ok and pod_ok


def sim_port(entry: Mapping[str, Any], dst: SimPod, protocol: str, port: int) -> bool:
    if entry.get("protocol", "TCP") != protocol:
        return False
    value = entry.get("port")
    if value is None:
        return True
    if isinstance(value, int):
        return value <= port <= entry.get("endPort", value)
    return any(n == value and p == protocol and num == port for n, p, num in dst.ports)


def sim_direction(
    policies: Sequence[dict[str, Any]],
    pod: SimPod,
    other: SimPod,
    direction: str,
    dst: SimPod,
    protocol: str,
    port: int,
) -> bool:
    targets = [
        p
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and sim_selector(p["spec"]["podSelector"], pod.labels)
        and direction in sim_types(p["spec"])
    ]
    if not targets:
        return True
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in targets:
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peers_key, [])
            ports = rule.get("ports", [])
            peer_ok = not peers or any(sim_peer(pr, policy["metadata"]["namespace"], other) for pr in peers)
            port_ok = not ports or any(sim_port(e, dst, protocol, port) for e in ports)
            if peer_ok and port_ok:
                return True
    return False


def sim_allowed(
    policies: Sequence[dict[str, Any]], src: SimPod, dst: SimPod, protocol: str, port: int
) -> bool:
    egress = sim_direction(policies, src, dst, "Egress", dst, protocol, port)
    ingress = sim_direction(policies, dst, src, "Ingress", dst, protocol, port)
    return egress and ingress


# --- generation (cyclonus's families) ----------------------------------------------------------

POD_SELECTORS: list[dict[str, Any]] = [
    {},
    {"matchLabels": {"pod": "a"}},
    {"matchLabels": {"app": "web"}},
    {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "b"]}]},
    {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["a"]}]},
    {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
    {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]},
    {"matchLabels": {"pod": "b"}, "matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]},
]
NAMESPACE_SELECTORS: list[dict[str, Any]] = [
    {},
    {"matchLabels": {"kubernetes.io/metadata.name": "y"}},
    {"matchLabels": {"env": "prod"}},
    {"matchExpressions": [{"key": "team", "operator": "Exists"}]},
    {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["blue"]}]},
    {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["x", "z"]}]},
]
IP_BLOCKS: list[dict[str, Any]] = [
    {"cidr": "198.18.1.0/24"},
    {"cidr": "198.18.0.0/16", "except": ["198.18.2.0/24"]},
    {"cidr": "198.18.1.1/32"},
    {"cidr": "192.0.0.0/4", "except": ["198.18.3.2/32", "198.18.1.0/30"]},
    {"cidr": "10.0.0.0/8"},
]
PORT_ENTRIES: list[dict[str, Any]] = [
    {"port": 80},
    {"port": 81, "protocol": "TCP"},
    {"port": 80, "endPort": 81},
    {"port": 79, "endPort": 80, "protocol": "UDP"},
    {"port": "serve-80-tcp"},
    {"port": "serve-81-udp", "protocol": "UDP"},
    {"port": "serve-80-sctp", "protocol": "SCTP"},
    {"port": "web"},
    {"port": "web", "protocol": "UDP"},
    {"protocol": "UDP"},
    {"protocol": "SCTP"},
    {},
    {"port": 81, "protocol": "SCTP"},
]


def gen_peer(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(["pod", "ns", "both", "ip", "ip", "both"])
    if kind == "ip":
        return {"ipBlock": rng.choice(IP_BLOCKS)}
    peer: dict[str, Any] = {}
    if kind in ("pod", "both"):
        peer["podSelector"] = rng.choice(POD_SELECTORS)
    if kind in ("ns", "both"):
        peer["namespaceSelector"] = rng.choice(NAMESPACE_SELECTORS)
    return peer


def gen_rule(rng: random.Random, peers_key: str) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if rng.random() < 0.75:
        rule[peers_key] = [gen_peer(rng) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.6:
        rule["ports"] = [rng.choice(PORT_ENTRIES) for _ in range(rng.randint(1, 3))]
    return rule


def gen_policy(rng: random.Random, index: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": rng.choice(POD_SELECTORS)}
    if rng.random() < 0.8:
        spec["ingress"] = [gen_rule(rng, "from") for _ in range(rng.randint(0, 2))]
    if rng.random() < 0.6:
        spec["egress"] = [gen_rule(rng, "to") for _ in range(rng.randint(0, 2))]
    mode = rng.random()
    if mode < 0.3:
        pass  # leave policyTypes to defaulting
    elif mode < 0.55:
        spec["policyTypes"] = ["Ingress"]
    elif mode < 0.75:
        spec["policyTypes"] = ["Egress"]
    else:
        spec["policyTypes"] = ["Ingress", "Egress"]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"gen-{index}", "namespace": rng.choice("xxyz")},
        "spec": spec,
    }


def check_case(policies: list[dict[str, Any]]) -> list[str]:
    pods = sim_pods()
    states = compile_all(resources_of(pods, policies))
    wrong = []
    for protocol, port in PROBES:
        for src in pods:
            for dst in pods:
                if src.key == dst.key:
                    continue
                got = connection_allowed(
                    states,
                    Peer(src.ip, src.key, src.node),
                    Peer(dst.ip, dst.key, dst.node),
                    PROTO[protocol],
                    port,
                )
                want = sim_allowed(policies, src, dst, protocol, port)
                if got.allowed != want:
                    pair = f"{protocol}/{port} {src.key}->{dst.key}"
                    wrong.append(f"{pair}: kaliko {got.allowed} ({got.reason}), k8s {want}")
    return wrong


@pytest.mark.parametrize("seed", range(60))
def test_generated_policies_match_the_simulator(seed: int) -> None:
    rng = random.Random(seed)
    for case in range(4):
        policies = [gen_policy(rng, i) for i in range(rng.randint(1, 4))]
        wrong = check_case(policies)
        assert not wrong, f"seed {seed} case {case}: {policies}\n" + "\n".join(wrong[:20])


FAMILIES: dict[str, list[dict[str, Any]]] = {
    "ingress rules without Ingress type are ignored": [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "x"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "ingress": [], "egress": [{}]},
        },
    ],
    "egress: [] alone does not add Egress by defaulting": [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "x"},
            "spec": {"podSelector": {}, "egress": []},
        },
    ],
    "named port resolves per destination": [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "x"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "web"}]}]},
        },
    ],
    "endPort range over both probe ports": [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "y"},
            "spec": {
                "podSelector": {},
                "ingress": [{"ports": [{"port": 80, "endPort": 81, "protocol": "UDP"}]}],
            },
        },
    ],
    "ipBlock except on pod IPs for ingress and egress": [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "z"},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"ipBlock": {"cidr": "198.18.0.0/16", "except": ["198.18.1.0/24"]}}]}],
                "egress": [{"to": [{"ipBlock": {"cidr": "198.18.2.0/24", "except": ["198.18.2.2/32"]}}]}],
            },
        },
    ],
    "empty port entry means TCP only": [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "x"},
            "spec": {"podSelector": {}, "ingress": [{"ports": [{}]}]},
        },
    ],
    "mixed protocols in one rule": [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "x"},
            "spec": {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [
                    {
                        "from": [{"podSelector": {}}, {"namespaceSelector": {"matchLabels": {"env": "dev"}}}],
                        "ports": [
                            {"port": 80},
                            {"protocol": "UDP"},
                            {"port": "serve-80-sctp", "protocol": "SCTP"},
                            {"port": 81},
                        ],
                    }
                ],
            },
        },
    ],
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_families(family: str) -> None:
    wrong = check_case(FAMILIES[family])
    assert not wrong, "\n".join(wrong[:20])


def test_the_simulator_is_not_trivially_permissive() -> None:
    """Guard against a vacuous differential: generated cases must deny a real share of pairs."""
    rng = random.Random(1234)
    pods = sim_pods()
    denied = total = 0
    for _ in range(20):
        policies = [gen_policy(rng, i) for i in range(3)]
        for src in pods:
            for dst in pods:
                if src is not dst:
                    total += 1
                    denied += not sim_allowed(policies, src, dst, "TCP", 80)
    assert 0.1 < denied / total < 0.9
