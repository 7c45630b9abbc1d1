"""Differential test of Calico v3 semantics: generated tiers and policies, Kaliko vs a direct simulator.

The simulator evaluates the v3 resources as calico.md section 2 describes them, without Felix's
rewriting: a rule's selector is matched against the peer pod's own labels, its namespaceSelector
against the peer's *namespace* labels (``all()`` any namespace, ``global()`` none), a namespaced
policy's selector fields are limited to its own namespace whenever any of them is used (including
a bare notSelector), notSelector matches anything that is not a matching pod (external IPs
included), service accounts by name or by their labels; policies apply by selector (+ namespace
for NetworkPolicy, + namespaceSelector for GlobalNetworkPolicy), tiers run valid-first then by
order (None last) then name, policies by order (None last) then the ``name/namespace/kind``
string, Allow/Deny end, Pass leaves the tier, Log continues, a tier's end applies its default
action, and no applicable policy (or passing out of the last tier) means the profile allows.
Kubernetes policies join as order-1000 policies in ``default`` whose rules use the Kubernetes
matcher of the cyclonus simulator. Only the selector language itself (`policycore.selector`,
tested on its own) is shared with the code under test.
"""

from __future__ import annotations

import ipaddress
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from test_cyclonus_differential import (
    NAMESPACE_LABELS,
    SimPod,
    sim_peer,
    sim_pods,
    sim_port,
    sim_selector,
    sim_types,
)

from policycore.calc.oracle import compile_all
from policycore.evaluate import Peer, connection_allowed
from policycore.model import ValidationFailed, parse_resource
from policycore.selector import parse

API = "projectcalico.org/v3"
EXTERNAL = "203.0.113.9"
PROTO = {"TCP": 6, "UDP": 17}
PROBES = [("TCP", 80), ("TCP", 81), ("UDP", 80)]


def account(pod: SimPod) -> str:
    return "sa-a" if pod.name == "a" else "default"


def own_labels(pod: SimPod) -> dict[str, str]:
    return {
        **pod.labels,
        "projectcalico.org/namespace": pod.namespace,
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": account(pod),
    }


def sel(text: str, labels: Mapping[str, str]) -> bool:
    return parse(text).evaluate(labels)


def ns_selector_matches(text: str, pod: SimPod) -> bool:
    if text.strip() == "global()":
        return False
    if text.strip() == "all()":
        return True
    return sel(text, NAMESPACE_LABELS[pod.namespace])


def entity_matches(
    entity: Mapping[str, Any], policy_ns: str, peer: SimPod | None, ip: str, protocol: str, port: int | None
) -> bool:
    addr = ipaddress.ip_address(ip)
    if entity.get("nets") and not any(addr in ipaddress.ip_network(n) for n in entity["nets"]):
        return False
    if any(addr in ipaddress.ip_network(n) for n in entity.get("notNets", [])):
        return False
    accounts = entity.get("serviceAccounts")
    positive = bool(entity.get("selector") or entity.get("namespaceSelector") or accounts)
    if positive or (policy_ns and entity.get("notSelector")):
        if peer is None:
            return False
        if entity.get("namespaceSelector"):
            if not ns_selector_matches(entity["namespaceSelector"], peer):
                return False
        elif policy_ns and peer.namespace != policy_ns:
            return False
        if entity.get("selector") and not sel(entity["selector"], own_labels(peer)):
            return False
        if accounts:
            if accounts.get("names") and account(peer) not in accounts["names"]:
                return False
            if accounts.get("selector") and not sel(
                accounts["selector"], {"projectcalico.org/name": account(peer)}
            ):
                return False
    if entity.get("notSelector") and peer is not None and sel(entity["notSelector"], own_labels(peer)):
        return False
    named_proto = protocol if protocol in ("UDP", "SCTP") else "TCP"

    def port_in(ports: Sequence[int | str]) -> bool:
        for p in ports:
            if isinstance(p, int) and port == p:
                return True
            if isinstance(p, str) and ":" in p:
                lo, hi = (int(v) for v in p.split(":"))
                if port is not None and lo <= port <= hi:
                    return True
            elif isinstance(p, str) and peer is not None and (p, named_proto, port) in peer.ports:
                return True
        return False

    if entity.get("ports") and not port_in(entity["ports"]):
        return False
    return not port_in(entity.get("notPorts", []))


def calico_rule_matches(
    rule: Mapping[str, Any],
    policy_ns: str,
    src: SimPod | None,
    src_ip: str,
    dst: SimPod | None,
    dst_ip: str,
    protocol: str,
    port: int,
) -> bool:
    if rule.get("protocol") and rule["protocol"] != protocol:
        return False
    if rule.get("notProtocol") and rule["notProtocol"] == protocol:
        return False
    return entity_matches(rule.get("source", {}), policy_ns, src, src_ip, protocol, None) and entity_matches(
        rule.get("destination", {}), policy_ns, dst, dst_ip, protocol, port
    )


def applies(doc: Mapping[str, Any], pod: SimPod) -> bool:
    spec, kind = doc["spec"], doc["kind"]
    if doc["apiVersion"] == "networking.k8s.io/v1":
        return doc["metadata"]["namespace"] == pod.namespace and sim_selector(spec["podSelector"], pod.labels)
    if kind == "GlobalNetworkPolicy" and (spec.get("doNotTrack") or spec.get("preDNAT")):
        return False
    if kind == "NetworkPolicy" and doc["metadata"]["namespace"] != pod.namespace:
        return False
    if spec.get("selector") and not sel(spec["selector"], own_labels(pod)):
        return False
    if spec.get("namespaceSelector") and not ns_selector_matches(spec["namespaceSelector"], pod):
        return False
    sa = spec.get("serviceAccountSelector")
    return not (sa and not sel(sa, {"projectcalico.org/name": account(pod)}))


def calico_types(spec: Mapping[str, Any]) -> set[str]:
    if spec.get("types"):
        return set(spec["types"])
    if spec.get("egress") and not spec.get("ingress"):
        return {"Egress"}
    return {"Ingress", "Egress"} if spec.get("egress") else {"Ingress"}


def sim_direction(
    docs: Sequence[dict[str, Any]],
    tiers: Mapping[str, tuple[float | None, str]],
    direction: str,
    local: SimPod,
    src: SimPod | None,
    src_ip: str,
    dst: SimPod | None,
    dst_ip: str,
    protocol: str,
    port: int,
) -> bool:
    chosen = []
    for doc in docs:
        k8s = doc["apiVersion"] == "networking.k8s.io/v1"
        types = sim_types(doc["spec"]) if k8s else calico_types(doc["spec"])
        if direction in types and applies(doc, local):
            chosen.append(doc)
    if not chosen:
        return True

    def tier_name(doc: dict[str, Any]) -> str:
        return (
            "default" if doc["apiVersion"] == "networking.k8s.io/v1" else doc["spec"].get("tier", "default")
        )

    def tier_key(name: str) -> tuple[bool, bool, float, str]:
        order = tiers[name][0] if name in tiers else None
        return (name not in tiers, order is None, order or 0.0, name)

    def policy_key(doc: dict[str, Any]) -> tuple[float, str]:
        k8s = doc["apiVersion"] == "networking.k8s.io/v1"
        order = 1000.0 if k8s else doc["spec"].get("order")
        kind = "KubernetesNetworkPolicy" if k8s else doc["kind"]
        ns = doc["metadata"].get("namespace", "") if doc["kind"] != "GlobalNetworkPolicy" else ""
        return (math.inf if order is None else order, f"{doc['metadata']['name']}/{ns}/{kind}")

    for name in sorted({tier_name(d) for d in chosen}, key=tier_key):
        passed = False
        for doc in sorted((d for d in chosen if tier_name(d) == name), key=policy_key):
            verdict = policy_verdict(doc, direction, src, src_ip, dst, dst_ip, protocol, port)
            if verdict in ("Allow", "Deny"):
                return verdict == "Allow"
            if verdict == "Pass":
                passed = True
                break
        if not passed and (tiers[name][1] if name in tiers else "Deny") == "Deny":
            return False
    return True


def policy_verdict(
    doc: dict[str, Any],
    direction: str,
    src: SimPod | None,
    src_ip: str,
    dst: SimPod | None,
    dst_ip: str,
    protocol: str,
    port: int,
) -> str | None:
    spec = doc["spec"]
    if doc["apiVersion"] == "networking.k8s.io/v1":
        ns = doc["metadata"]["namespace"]
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        other, other_ip = (src, src_ip) if direction == "Ingress" else (dst, dst_ip)
        for rule in spec.get(key, []):
            peers, ports = rule.get(peers_key, []), rule.get("ports", [])
            peer_ok = not peers or any(k8s_peer(p, ns, other, other_ip) for p in peers)
            port_ok = not ports or any(k8s_port(e, dst, protocol, port) for e in ports)
            if peer_ok and port_ok:
                return "Allow"
        return None
    policy_ns = doc["metadata"].get("namespace", "") if doc["kind"] == "NetworkPolicy" else ""
    for rule in spec.get("ingress" if direction == "Ingress" else "egress", []):
        if (
            calico_rule_matches(rule, policy_ns, src, src_ip, dst, dst_ip, protocol, port)
            and rule["action"] != "Log"
        ):
            return str(rule["action"])
    return None


def k8s_peer(peer: Mapping[str, Any], ns: str, other: SimPod | None, ip: str) -> bool:
    """A Kubernetes peer: pods via the cyclonus matcher; a non-pod only through an ipBlock."""
    if other is not None:
        return sim_peer(peer, ns, other)
    if "ipBlock" not in peer:
        return False
    addr, block = ipaddress.ip_address(ip), peer["ipBlock"]
    inside = addr in ipaddress.ip_network(block["cidr"])
    return inside and not any(addr in ipaddress.ip_network(e) for e in block.get("except", []))


def k8s_port(entry: Mapping[str, Any], dst: SimPod | None, protocol: str, port: int) -> bool:
    """A Kubernetes port entry; a named port can only resolve on a pod."""
    if dst is not None:
        return sim_port(entry, dst, protocol, port)
    if entry.get("protocol", "TCP") != protocol or isinstance(entry.get("port"), str):
        return False
    value = entry.get("port")
    return value is None or value <= port <= entry.get("endPort", value)


def sim_allowed(
    docs: Sequence[dict[str, Any]],
    tiers: Mapping[str, tuple[float | None, str]],
    src: SimPod | None,
    src_ip: str,
    dst: SimPod | None,
    dst_ip: str,
    protocol: str,
    port: int,
) -> bool:
    egress = src is None or sim_direction(
        docs, tiers, "Egress", src, src, src_ip, dst, dst_ip, protocol, port
    )
    ingress = dst is None or sim_direction(
        docs, tiers, "Ingress", dst, src, src_ip, dst, dst_ip, protocol, port
    )
    return egress and ingress


# --- generation --------------------------------------------------------------------------------

SELECTORS = [
    "pod == 'a'",
    "app == 'web'",
    "has(app)",
    "!has(app)",
    "pod in {'a', 'b'}",
    "app != 'db'",
    "all()",
]
NS_SELECTORS = ["all()", "global()", "env == 'prod'", "kubernetes.io/metadata.name == 'y'", "has(team)"]


def gen_entity(rng: random.Random, with_ports: bool) -> dict[str, Any]:
    entity: dict[str, Any] = {}
    for key, chance, values in [
        ("selector", 0.35, SELECTORS),
        ("notSelector", 0.2, SELECTORS),
        ("namespaceSelector", 0.25, NS_SELECTORS),
    ]:
        if rng.random() < chance:
            entity[key] = rng.choice(values)
    if rng.random() < 0.1:
        entity["serviceAccounts"] = rng.choice(
            [{"names": ["sa-a"]}, {"selector": "projectcalico.org/name == 'default'"}]
        )
    if rng.random() < 0.15:
        entity["nets"] = [rng.choice(["198.18.1.0/24", "198.18.0.0/16", "203.0.113.0/24", "198.18.2.2/32"])]
    if rng.random() < 0.1:
        entity["notNets"] = [rng.choice(["198.18.3.0/24", "198.18.1.1/32", "203.0.113.0/24"])]
    if with_ports and rng.random() < 0.5:
        entity["ports"] = rng.sample(
            [80, "79:80", 81, "serve-80-tcp", "serve-80-udp", "web"], rng.randint(1, 2)
        )
    if with_ports and rng.random() < 0.15:
        entity["notPorts"] = [rng.choice([80, "serve-81-tcp", "web"])]
    return entity


def gen_rule(rng: random.Random) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": rng.choice(["Allow", "Allow", "Deny", "Pass", "Log"])}
    protocol = rng.choice([None, None, "TCP", "UDP"])
    if protocol:
        rule["protocol"] = protocol
    elif rng.random() < 0.1:
        rule["notProtocol"] = rng.choice(["TCP", "UDP"])
    for side in ("source", "destination"):
        if rng.random() < 0.6:
            rule[side] = gen_entity(rng, with_ports=protocol is not None and side == "destination")
    return rule


def gen_calico(rng: random.Random, index: int) -> dict[str, Any]:
    kind = rng.choice(["NetworkPolicy", "NetworkPolicy", "GlobalNetworkPolicy"])
    spec: dict[str, Any] = {"tier": rng.choice(["default", "default", "default", "sec", "app", "ghost"])}
    order = rng.choice([None, 5, 5, 5, 1000, 1000.0, 2000])
    if order is not None:
        spec["order"] = order
    if rng.random() < 0.6:
        spec["selector"] = rng.choice(SELECTORS)
    if kind == "GlobalNetworkPolicy" and rng.random() < 0.3:
        spec["namespaceSelector"] = rng.choice(["env == 'prod'", "all()", "has(team)"])
    if rng.random() < 0.1:
        spec["serviceAccountSelector"] = "projectcalico.org/name == 'sa-a'"
    if rng.random() < 0.85:
        spec["ingress"] = [gen_rule(rng) for _ in range(rng.randint(0, 3))]
    if rng.random() < 0.5:
        spec["egress"] = [gen_rule(rng) for _ in range(rng.randint(0, 3))]
    if rng.random() < 0.5:
        spec["types"] = rng.choice([["Ingress"], ["Egress"], ["Ingress", "Egress"]])
    meta: dict[str, Any] = {"name": rng.choice(["a", "a-b", "b", f"p{index}"])}
    if kind == "NetworkPolicy":
        meta["namespace"] = rng.choice("xyz")
    return {"apiVersion": API, "kind": kind, "metadata": meta, "spec": spec}


def gen_case(rng: random.Random) -> tuple[list[dict[str, Any]], dict[str, tuple[float | None, str]]]:
    from test_cyclonus_differential import gen_policy

    tiers: dict[str, tuple[float | None, str]] = {
        "default": (1_000_000.0, "Deny"),
        "kube-admin": (1000.0, "Pass"),
        "kube-baseline": (10_000_000.0, "Pass"),
    }
    if rng.random() < 0.7:
        tiers["sec"] = (rng.choice([10.0, None, 1_000_000.0]), rng.choice(["Deny", "Pass"]))
    if rng.random() < 0.5:
        tiers["app"] = (rng.choice([50.0, 10.0]), rng.choice(["Deny", "Pass"]))
    docs: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for i in range(rng.randint(1, 5)):
        doc = gen_calico(rng, i) if rng.random() < 0.75 else gen_policy(rng, i)
        key = (doc["kind"] + doc["apiVersion"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
        if key in seen:
            continue
        try:
            parse_resource(doc)
        except ValidationFailed:
            continue
        seen.add(key)
        docs.append(doc)
    return docs, tiers


def tier_docs(tiers: Mapping[str, tuple[float | None, str]]) -> list[dict[str, Any]]:
    out = []
    for name, (order, action) in tiers.items():
        if name in ("sec", "app"):
            spec: dict[str, Any] = {"defaultAction": action}
            if order is not None:
                spec["order"] = order
            out.append({"apiVersion": API, "kind": "Tier", "metadata": {"name": name}, "spec": spec})
    return out


def check(docs: list[dict[str, Any]], tiers: dict[str, tuple[float | None, str]]) -> list[str]:
    from test_cyclonus_differential import resources_of

    pods = sim_pods()
    resources = resources_of(pods, docs) + [parse_resource(d) for d in tier_docs(tiers)]
    # Pod x/a (and y/a, z/a) run as service account sa-a, as `account` says.
    resources = [_with_account(r) for r in resources]
    states = compile_all(resources)
    wrong = []
    ends: list[tuple[SimPod | None, str]] = [(p, p.ip) for p in pods] + [(None, EXTERNAL)]
    for protocol, port in PROBES:
        for src, src_ip in ends:
            for dst, dst_ip in ends:
                if src is dst or (src is None and dst is None):
                    continue
                src_peer = Peer(src_ip, src.key, src.node) if src else Peer(src_ip)
                dst_peer = Peer(dst_ip, dst.key, dst.node) if dst else Peer(dst_ip)
                got = connection_allowed(states, src_peer, dst_peer, PROTO[protocol], port)
                want = sim_allowed(docs, tiers, src, src_ip, dst, dst_ip, protocol, port)
                if got.allowed != want:
                    side = got.ingress if got.ingress is not None and not got.ingress.allowed else got.egress
                    why = side.decided_by if side is not None else got.reason
                    pair = f"{protocol}/{port} {src_peer.key or src_ip}->{dst_peer.key or dst_ip}"
                    wrong.append(f"{pair}: kaliko {got.allowed} ({why}), sim {want}")
    return wrong


def _with_account(resource: Any) -> Any:
    if getattr(resource, "kind", "") == "Pod" and resource.metadata.name == "a":
        return resource.model_copy(
            update={"spec": resource.spec.model_copy(update={"service_account_name": "sa-a"})}
        )
    return resource


@pytest.mark.parametrize("seed", range(80))
def test_generated_calico_policies_match_the_simulator(seed: int) -> None:
    rng = random.Random(10_000 + seed)
    for case in range(3):
        docs, tiers = gen_case(rng)
        wrong = check(docs, tiers)
        assert not wrong, f"seed {seed} case {case}: tiers {tiers}\n{docs}\n" + "\n".join(wrong[:15])


def test_the_generated_cases_exercise_every_outcome() -> None:
    """Guard against a vacuous differential: the simulator sees allows and denies, pods and externals."""
    rng = random.Random(99)
    pods = sim_pods()
    outcomes = set()
    for _ in range(30):
        docs, tiers = gen_case(rng)
        for dst in pods[:3]:
            outcomes.add(sim_allowed(docs, tiers, None, EXTERNAL, dst, dst.ip, "TCP", 80))
            outcomes.add(sim_allowed(docs, tiers, pods[4], pods[4].ip, dst, dst.ip, "TCP", 80))
    assert outcomes == {True, False}


@pytest.mark.parametrize("seed", range(20))
def test_order_ties_match_the_simulator(seed: int) -> None:
    """Same tier, same order, names that sort differently as strings than as tuples ("a-b" < "a")."""
    rng = random.Random(20_000 + seed)
    docs = []
    for name in ("a", "a-b", "a.b", "a0"):
        kind = rng.choice(["GlobalNetworkPolicy", "NetworkPolicy"])
        meta: dict[str, Any] = {"name": name}
        if kind == "NetworkPolicy":
            meta["namespace"] = "x"
        rules = [{"action": rng.choice(["Allow", "Deny", "Pass"])} for _ in range(2)]
        spec = {"order": 7, "ingress": rules, "egress": list(reversed(rules)), "types": ["Ingress", "Egress"]}
        docs.append({"apiVersion": API, "kind": kind, "metadata": meta, "spec": spec})
    wrong = check(docs, {"default": (1_000_000.0, "Deny")})
    assert not wrong, f"seed {seed}: {docs}\n" + "\n".join(wrong[:15])
