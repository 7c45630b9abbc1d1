"""Differential: random policies on the live lab, the in-memory data plane's verdicts against real packets.

Each round (seeded; ``KALIKO_DIFF_SEED`` picks another first seed) draws a few random policies —
Kubernetes NetworkPolicies (pod, namespace and combined selectors, ipBlocks with excepts, numeric
and named ports, TCP and UDP, ingress and/or egress) and Calico NetworkPolicies (ordered Allow and
Deny rules with selectors, protocols and ports) — applies them to the nine-pod model through the
pipeline and probes every ordered pair of pods on TCP/80 and UDP/81 for real. The offline cluster
(`kalikoctl.offline`: the compiler's node states judged by the memory data plane's evaluator) must
give the same verdict for every pair. The policies are deleted after each round.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
from collections.abc import Iterator
from typing import Any

import pytest
from live_conformance_cases import ALL_PODS, NS_LABEL, model_documents
from live_lab_support import start_lab
from netpol_cluster import pod_ip

from kalikoctl.offline import OfflineCluster
from lab.live_lab import LiveLab
from policycore.model import parse_resource
from wire.gen.kaliko.v1 import admin_pb2 as pb

pytestmark = [pytest.mark.fv, pytest.mark.netns]

ROUNDS = 4
FIRST_SEED = int(os.environ.get("KALIKO_DIFF_SEED", "20261201"))
PROBES = ((80, "TCP"), (81, "UDP"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLab]:
    for live in start_lab(tmp_path_factory.mktemp("differential")):
        live.apply(model_documents())
        yield live


def _labels(rng: random.Random) -> dict[str, Any]:
    return rng.choice(
        [
            {},
            {"matchLabels": {"pod": rng.choice("abc")}},
            {
                "matchExpressions": [
                    {"key": "pod", "operator": rng.choice(["In", "NotIn"]), "values": rng.sample("abc", 2)}
                ]
            },
        ]
    )


def _peer(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(["pod", "ns", "both", "block"])
    if kind == "block":
        ip = pod_ip(rng.choice(ALL_PODS))
        if rng.random() < 0.5:
            return {"ipBlock": {"cidr": f"{ip}/32"}}
        wide = ipaddress.ip_network(f"{ip}/{rng.choice([16, 24])}", strict=False)
        return {"ipBlock": {"cidr": str(wide), "except": [f"{ip}/32"]}}
    namespaces = {"matchLabels": {NS_LABEL: rng.choice("xyz")}} if rng.random() < 0.7 else {}
    if kind == "pod":
        return {"podSelector": _labels(rng)}
    if kind == "ns":
        return {"namespaceSelector": namespaces}
    return {"podSelector": _labels(rng), "namespaceSelector": namespaces}


def _ports(rng: random.Random) -> list[dict[str, Any]]:
    choice = rng.choice(["none", "number", "named", "protocol"])
    if choice == "none":
        return []
    protocol = rng.choice(["TCP", "UDP"])
    if choice == "number":
        return [{"port": rng.choice([80, 81]), "protocol": protocol}]
    if choice == "named":
        return [{"port": f"serve-{rng.choice([80, 81])}-{protocol.lower()}", "protocol": protocol}]
    return [{"protocol": protocol}]


def k8s_policy(rng: random.Random, name: str) -> dict[str, Any]:
    types = rng.choice([["Ingress"], ["Egress"], ["Ingress", "Egress"]])
    spec: dict[str, Any] = {"podSelector": _labels(rng), "policyTypes": types}
    for kind, side in (("Ingress", "from"), ("Egress", "to")):
        if kind in types:
            rules = []
            for _ in range(rng.randint(0, 2)):
                rule: dict[str, Any] = {}
                if rng.random() < 0.8:
                    rule[side] = [_peer(rng) for _ in range(rng.randint(1, 2))]
                ports = _ports(rng)
                if ports:
                    rule["ports"] = ports
                rules.append(rule)
            spec[kind.lower()] = rules
    namespace = rng.choice("xyz")
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip


def calico_policy(rng: random.Random, name: str) -> dict[str, Any]:
    direction = rng.choice(["ingress", "egress"])
    rules = []
    for _ in range(rng.randint(1, 3)):
        rule: dict[str, Any] = {"action": rng.choice(["Allow", "Deny"])}
        if rng.random() < 0.6:
            rule["protocol"] = rng.choice(["TCP", "UDP"])
            if rng.random() < 0.6:
                rule["destination"] = {"ports": [rng.choice([80, 81])]}
        if rng.random() < 0.6:
            peer_side = "source" if direction == "ingress" else "destination"
            rule.setdefault(peer_side, {})["selector"] = f"pod == '{rng.choice('abc')}'"
        rules.append(rule)
    spec = {
        "selector": rng.choice(["all()", f"pod == '{rng.choice('abc')}'"]),
        "order": rng.choice([10, 100, 500]),
        "types": [direction.capitalize()],
        direction: rules,
    }
    return {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": rng.choice("xyz")}, "spec": spec}  # fmt: skip


def random_policies(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for index in range(rng.randint(1, 3)):
        make = k8s_policy if rng.random() < 0.65 else calico_policy
        out.append(make(rng, f"random-{index}"))
    return out


def _ref(doc: dict[str, Any]) -> tuple[str, str, str]:
    kind = "KubernetesNetworkPolicy" if doc["apiVersion"] == "networking.k8s.io/v1" else "NetworkPolicy"
    return kind, doc["metadata"]["namespace"], doc["metadata"]["name"]


def test_memory_verdicts_equal_real_packets_for_random_policies(lab: LiveLab) -> None:
    base = [
        json.loads(d)
        for kind in ("Namespace", "Pod")
        for d in lab.admin("List", pb.ListRequest(kind=kind)).documents_json
    ]
    seen: set[bool] = set()
    compared = 0
    for seed in range(FIRST_SEED, FIRST_SEED + ROUNDS):
        policies = random_policies(seed)
        lab.apply(policies)
        try:
            offline = OfflineCluster([parse_resource(d) for d in [*base, *policies]])
            for port, protocol in PROBES:
                live = lab.probe_all(port, protocol)["allowed"]
                memory = offline.matrix(port, protocol)
                wrong = [
                    f"{a} -> {b}: live {live[a][b]}, memory {memory[a][b]}"
                    for a in ALL_PODS
                    for b in ALL_PODS
                    if a != b and live[a][b] != memory[a][b]
                ]
                assert not wrong, (
                    f"seed {seed} {protocol}/{port}, policies {json.dumps(policies)}:\n" + "\n".join(wrong)
                )
                seen |= {v for row in live.values() for v in row.values()}
                compared += sum(len(row) for row in live.values())
        finally:
            lab.delete([_ref(p) for p in policies])
    assert seen == {True, False}, "every round allowed everything or denied everything: nothing was compared"
    print(f"differential: {compared} live verdicts equal the memory data plane's over {ROUNDS} rounds")
