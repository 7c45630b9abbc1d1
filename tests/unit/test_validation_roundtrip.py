"""`to_document` is the inverse of `parse_resource`: documents re-parse to equal resources."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policycore.model import KINDS, key_of, kind_of, parse_resource, to_document

DOCS: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "stars", "labels": {"role": "app"}}},
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}},
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "backend", "namespace": "stars", "labels": {"role": "backend"}},
        "spec": {
            "nodeName": "node-1",
            "containers": [
                {
                    "name": "probe",
                    "image": "kaliko/probe",
                    "ports": [{"name": "redis", "containerPort": 6379}],
                }
            ],
        },
        "status": {"podIP": "198.18.0.10", "podIPs": [{"ip": "198.18.0.10"}], "phase": "Running"},
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "backend", "namespace": "stars"},
        "spec": {"selector": {"role": "backend"}, "ports": [{"port": 6379, "targetPort": "redis"}]},
    },
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "backend-policy", "namespace": "stars"},
        "spec": {
            "podSelector": {"matchLabels": {"role": "backend"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": {"role": "frontend"}}},
                        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.9.0.0/16"]}},
                        {
                            "namespaceSelector": {
                                "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["x"]}]
                            }
                        },
                    ],
                    "ports": [{"protocol": "TCP", "port": 6379}, {"port": 7000, "endPort": 7010}],
                }
            ],
        },
    },
    {
        "apiVersion": "kaliko.io/v1",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "security.deny-icmp"},
        "spec": {
            "tier": "security",
            "order": 10.5,
            "selector": "all()",
            "namespaceSelector": "has(team)",
            "types": ["Ingress", "Egress"],
            "ingress": [
                {"action": "Deny", "protocol": "ICMP", "icmp": {"type": 8, "code": 0}},
                {"action": "Allow", "protocol": "ICMP", "notICMP": {"type": 3}},
                {
                    "action": "Pass",
                    "protocol": "TCP",
                    "ipVersion": 4,
                    "source": {"nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16"], "notPorts": ["1000:2000"]},
                    "destination": {
                        "ports": [80, "http"],
                        "selector": "app == 'web'",
                        "namespaceSelector": "global()",
                    },
                    "metadata": {"annotations": {"why": "web"}},
                },
            ],
            "egress": [
                {"action": "Log", "notProtocol": 17, "destination": {"serviceAccounts": {"names": ["api"]}}}
            ],
            "preDNAT": False,
            "doNotTrack": False,
        },
    },
    {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-ui", "namespace": "stars", "resourceVersion": "42"},
        "spec": {
            "selector": "",
            "ingress": [{"action": "Allow", "source": {"namespaceSelector": "role == 'ui'"}}],
        },
    },
    {
        "apiVersion": "kaliko.io/v1",
        "kind": "Tier",
        "metadata": {"name": "security"},
        "spec": {"order": 100, "defaultAction": "Pass"},
    },
]


@pytest.mark.parametrize("doc", DOCS, ids=[d["kind"] for d in DOCS])
def test_round_trip(doc: dict[str, Any]) -> None:
    resource = parse_resource(doc)
    again = to_document(resource)
    assert parse_resource(again) == resource
    assert to_document(parse_resource(again)) == again
    assert json.loads(json.dumps(again)) == again  # plain JSON values only
    assert key_of(parse_resource(again)) == key_of(resource)


def test_to_document_uses_the_document_spelling() -> None:
    doc = to_document(parse_resource(DOCS[5]))
    rules = doc["spec"]["ingress"]
    assert "notICMP" in rules[1] and "notNets" in rules[2]["source"] and "ipVersion" in rules[2]
    assert "preDNAT" in doc["spec"] and "doNotTrack" in doc["spec"]
    knp = to_document(parse_resource(DOCS[4]))
    assert "from" in knp["spec"]["ingress"][0] and "except" in knp["spec"]["ingress"][0]["from"][1]["ipBlock"]
    assert to_document(parse_resource(DOCS[2]))["status"]["podIP"] == "198.18.0.10"


def test_every_kind_is_covered() -> None:
    assert {kind_of(parse_resource(d)) for d in DOCS} == set(KINDS)


ports = st.one_of(
    st.integers(0, 65535),
    st.tuples(st.integers(0, 65535), st.integers(0, 65535)).map(lambda t: f"{min(t)}:{max(t)}"),
    st.sampled_from(["http", "dns-tcp", "web_1"]),
)
nets = st.tuples(st.integers(0, 255), st.integers(8, 32)).map(
    lambda t: f"{t[0]}.0.0.0/8" if t[1] == 8 else f"10.{t[0]}.0.0/16"
)
selectors = st.sampled_from(["", "all()", "app == 'web'", "has(role) && env in {'a', 'b'}", "!has(x)"])
entities = st.fixed_dictionaries(
    {},
    optional={
        "nets": st.lists(nets, max_size=3),
        "notNets": st.lists(nets, max_size=3),
        "selector": selectors,
        "notSelector": selectors,
        "namespaceSelector": selectors,
        "ports": st.lists(ports, max_size=3),
        "notPorts": st.lists(ports, max_size=3),
    },
)


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": draw(st.sampled_from(["Allow", "Deny", "Log", "Pass"]))}
    source, destination = draw(entities), draw(entities)
    has_ports = any(e.get("ports") or e.get("notPorts") for e in (source, destination))
    if has_ports or draw(st.booleans()):
        rule["protocol"] = draw(st.sampled_from(["TCP", "UDP", "SCTP", 6, 17]))
    if source:
        rule["source"] = source
    if destination:
        rule["destination"] = destination
    return rule


@settings(max_examples=150, deadline=None)
@given(
    ingress=st.lists(rules(), max_size=4),
    egress=st.lists(rules(), max_size=4),
    order=st.none() | st.floats(0, 1e6),
)
def test_round_trip_of_generated_policies(ingress: list[Any], egress: list[Any], order: float | None) -> None:
    spec: dict[str, Any] = {"ingress": ingress, "egress": egress, "selector": "app == 'x'"}
    if order is not None:
        spec["order"] = order
    doc = {
        "apiVersion": "kaliko.io/v1",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "g"},
        "spec": spec,
    }
    resource = parse_resource(doc)
    assert parse_resource(to_document(resource)) == resource
