"""Normalisation: the exact Felix-model form of Kubernetes and Calico policies (calico.md 2.6-2.8).

Checks the canonical selector strings Calico's update processors produce (namespace clause,
``pcns.``/``pcsa.`` prefixes, ``all()``/``global()`` rewriting, service accounts), the Kubernetes
rule expansion (protocol-major, peer-minor; TCP default; endPort; named ports; ``SimplifyPorts``;
ipBlock), rule ids and their parsing, types defaulting, tiers and sort keys, and endpoint labels.
"""

from __future__ import annotations

from typing import Any

import pytest

from policycore.calc.endpoints import endpoint_labels, is_endpoint, workload_endpoint
from policycore.calc.k8s_policy import simplify_ports
from policycore.calc.normalize import (
    NormalizedPolicy,
    normalize_policy,
    parse_rule_id,
    rule_id,
    tier_sort_key,
    tier_table,
)
from policycore.ir import PortRange
from policycore.model import parse_resource
from policycore.model.kube import Pod

API = "projectcalico.org/v3"


def k8s(spec: dict[str, Any], ns: str = "x", name: str = "p") -> NormalizedPolicy:
    doc = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }
    return normalize_policy(parse_resource(doc))  # type: ignore[arg-type]


def calico(spec: dict[str, Any], ns: str = "x", name: str = "p") -> NormalizedPolicy:
    doc = {
        "apiVersion": API,
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }
    return normalize_policy(parse_resource(doc))  # type: ignore[arg-type]


def global_(spec: dict[str, Any], name: str = "g") -> NormalizedPolicy:
    doc = {"apiVersion": API, "kind": "GlobalNetworkPolicy", "metadata": {"name": name}, "spec": spec}
    return normalize_policy(parse_resource(doc))  # type: ignore[arg-type]


def canon(sel: object) -> str | None:
    return None if sel is None else sel.canonical  # type: ignore[attr-defined]


# --- applies-to selectors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod_selector", "expected"),
    [
        ({}, '(projectcalico.org/orchestrator == "k8s" && projectcalico.org/namespace == "x")'),
        (
            {"matchLabels": {"b": "2", "a": "1"}},
            '((projectcalico.org/orchestrator == "k8s" && a == "1" && b == "2")'
            ' && projectcalico.org/namespace == "x")',
        ),
        (
            {
                "matchExpressions": [
                    {"key": "k", "operator": "In", "values": ["v2", "v1"]},
                    {"key": "n", "operator": "NotIn", "values": ["q"]},
                    {"key": "e", "operator": "Exists"},
                    {"key": "d", "operator": "DoesNotExist"},
                ]
            },
            '((projectcalico.org/orchestrator == "k8s" && k in {"v1", "v2"} && n not in {"q"}'
            ' && has(e) && !has(d)) && projectcalico.org/namespace == "x")',
        ),
    ],
)
def test_k8s_pod_selector(pod_selector: dict[str, Any], expected: str) -> None:
    assert k8s({"podSelector": pod_selector}).selector.canonical == expected


def test_calico_np_selector_gets_the_namespace_clause_and_service_account_selector() -> None:
    assert calico({}).selector.canonical == 'projectcalico.org/namespace == "x"'
    assert (
        calico({"selector": "app == 'web'"}).selector.canonical
        == '(app == "web" && projectcalico.org/namespace == "x")'
    )
    with_sa = calico({"selector": "app == 'web'", "serviceAccountSelector": "role == 'fe'"})
    assert (
        with_sa.selector.canonical
        == '((app == "web" && projectcalico.org/namespace == "x") && pcsa.role == "fe")'
    )


def test_gnp_selector_with_namespace_and_service_account_selectors() -> None:
    assert global_({}).selector.canonical == "all()"
    assert global_({"namespaceSelector": "all()"}).selector.canonical == "has(projectcalico.org/namespace)"
    both = global_({"selector": "app == 'web'", "namespaceSelector": "env == 'prod'"})
    assert both.selector.canonical == '(app == "web" && pcns.env == "prod")'
    sa_all = global_({"serviceAccountSelector": "all()"})
    assert sa_all.selector.canonical == "has(projectcalico.org/serviceaccount)"


# --- rule entity selectors (getEndpointSelector) ----------------------------------------------


def ingress_source(spec_rule: dict[str, Any], policy: str = "np") -> tuple[str | None, str | None]:
    spec = {"ingress": [spec_rule]}
    normalized = calico(spec) if policy == "np" else global_(spec)
    source = normalized.ingress[0].source
    return canon(source.selector), canon(source.not_selector)


@pytest.mark.parametrize(
    ("source", "policy", "expected"),
    [
        ({}, "np", (None, None)),
        ({"selector": "a == 'b'"}, "np", ('(projectcalico.org/namespace == "x" && a == "b")', None)),
        ({"notSelector": "a == 'b'"}, "np", ('projectcalico.org/namespace == "x"', 'a == "b"')),
        ({"namespaceSelector": "env == 'prod'"}, "np", ('pcns.env == "prod"', None)),
        ({"namespaceSelector": "all()"}, "np", ("has(projectcalico.org/namespace)", None)),
        (
            {"namespaceSelector": "global()", "selector": "a == 'b'"},
            "np",
            ('(!has(projectcalico.org/namespace) && a == "b")', None),
        ),
        ({"selector": "a == 'b'"}, "gnp", ('a == "b"', None)),
        ({"notSelector": "a == 'b'"}, "gnp", (None, 'a == "b"')),
        (
            {"namespaceSelector": "env == 'prod'", "selector": "a == 'b'"},
            "gnp",
            ('(pcns.env == "prod" && a == "b")', None),
        ),
        (
            {"serviceAccounts": {"names": ["sb", "sa"]}},
            "gnp",
            ('projectcalico.org/serviceaccount in {"sa", "sb"}', None),
        ),
        (
            {"serviceAccounts": {"names": ["sa"], "selector": "role == 'x'"}, "selector": "a == 'b'"},
            "np",
            (
                '(projectcalico.org/namespace == "x" && ((pcsa.role == "x"'
                ' && projectcalico.org/serviceaccount in {"sa"}) && a == "b"))',
                None,
            ),
        ),
    ],
)
def test_rule_entity_selector(
    source: dict[str, Any], policy: str, expected: tuple[str | None, str | None]
) -> None:
    assert ingress_source({"action": "Allow", "source": source}, policy) == expected


def test_rule_nets_ports_protocol_and_icmp_are_lowered() -> None:
    rule = {
        "action": "Deny",
        "protocol": "UDP",
        "ipVersion": 6,
        "source": {
            "nets": ["2001:DB8::/32"],
            "notNets": ["2001:db8:1::/48"],
            "ports": [53, "1000:2000", "dns"],
        },
        "destination": {"notPorts": ["web", 8080]},
    }
    normalized = calico({"egress": [rule], "types": ["Egress"]}).egress[0]
    assert normalized.action == "deny" and normalized.protocol == 17 and normalized.ip_version == 6
    assert normalized.source.nets == ("2001:db8::/32",) and normalized.source.not_nets == ("2001:db8:1::/48",)
    assert normalized.source.ports == (PortRange(53, 53), PortRange(1000, 2000))
    assert normalized.source.named_ports == ("dns",)
    assert normalized.destination.not_ports == (PortRange(8080, 8080),)
    assert normalized.destination.not_named_ports == ("web",)
    icmp = calico(
        {
            "ingress": [
                {
                    "action": "Allow",
                    "protocol": "ICMP",
                    "icmp": {"type": 8},
                    "notICMP": {"type": 3, "code": 1},
                }
            ]
        }
    )
    assert icmp.ingress[0].protocol == 1
    assert (icmp.ingress[0].icmp.type, icmp.ingress[0].icmp.code) == (8, None)  # type: ignore[union-attr]
    assert (icmp.ingress[0].not_icmp.type, icmp.ingress[0].not_icmp.code) == (3, 1)  # type: ignore[union-attr]
    assert calico({"ingress": [{"action": "Pass", "protocol": 132}]}).ingress[0].protocol == 132


# --- Kubernetes rule expansion ----------------------------------------------------------------


def test_k8s_rule_expands_protocol_major_peer_minor_with_indexed_ids() -> None:
    spec = {
        "podSelector": {},
        "ingress": [
            {
                "from": [
                    {"podSelector": {"matchLabels": {"pod": "b"}}},
                    {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                ],
                "ports": [{"port": 53, "protocol": "UDP"}, {"port": 80}, {"port": 81, "protocol": "TCP"}],
            },
            {},
        ],
    }
    rules = k8s(spec).ingress
    assert [r.rule_id.rsplit("/", 1)[1] for r in rules] == ["0.0", "0.1", "0.2", "0.3", "1"]
    assert [r.protocol for r in rules] == [6, 6, 17, 17, None]
    assert rules[0].destination.ports == (PortRange(80, 81),)
    assert rules[2].destination.ports == (PortRange(53, 53),)
    assert (
        canon(rules[0].source.selector)
        == '(projectcalico.org/namespace == "x" && (projectcalico.org/orchestrator == "k8s" && pod == "b"))'
    )
    assert rules[1].source.selector is None
    assert (rules[1].source.nets, rules[1].source.not_nets) == (("10.0.0.0/8",), ("10.1.0.0/16",))
    assert all(r.action == "allow" for r in rules)
    assert rules[4].source.selector is None and rules[4].destination.ports == () and rules[4].protocol is None


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        (
            {"namespaceSelector": {}},
            '(has(projectcalico.org/namespace) && projectcalico.org/orchestrator == "k8s")',
        ),
        (
            {"namespaceSelector": {"matchLabels": {"env": "prod"}}},
            '(pcns.env == "prod" && projectcalico.org/orchestrator == "k8s")',
        ),
        (
            {
                "namespaceSelector": {"matchLabels": {"env": "prod"}},
                "podSelector": {"matchLabels": {"pod": "a"}},
            },
            '(pcns.env == "prod" && (projectcalico.org/orchestrator == "k8s" && pod == "a"))',
        ),
        (
            {"podSelector": {}},
            '(projectcalico.org/namespace == "x" && projectcalico.org/orchestrator == "k8s")',
        ),
    ],
)
def test_k8s_peer_selectors(peer: dict[str, Any], expected: str) -> None:
    rules = k8s({"podSelector": {}, "egress": [{"to": [peer]}], "policyTypes": ["Egress"]}).egress
    assert canon(rules[0].destination.selector) == expected


def test_k8s_ports_tcp_default_end_port_named_and_all_ports_entries() -> None:
    def ports_of(
        ports: list[dict[str, Any]],
    ) -> list[tuple[int | None, tuple[PortRange, ...], tuple[str, ...]]]:
        rules = k8s({"podSelector": {}, "ingress": [{"ports": ports}]}).ingress
        return [(r.protocol, r.destination.ports, r.destination.named_ports) for r in rules]

    assert ports_of([{}]) == [(6, (), ())]
    assert ports_of([{"port": 8000, "endPort": 8080}]) == [(6, (PortRange(8000, 8080),), ())]
    assert ports_of([{"port": "serve-80-tcp"}, {"port": 80}]) == [
        (6, (PortRange(80, 80),), ("serve-80-tcp",))
    ]
    assert ports_of([{"port": 80}, {"protocol": "TCP"}]) == [(6, (), ())]
    assert ports_of([{"protocol": "TCP"}, {"port": 80}]) == [(6, (), ())]
    assert ports_of([{"port": 80, "protocol": "SCTP"}, {"port": 81}]) == [
        (132, (PortRange(80, 80),), ()),
        (6, (PortRange(81, 81),), ()),
    ]


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        (
            [PortRange(80, 80), PortRange(81, 81), PortRange(82, 82), PortRange(9090, 9090), "foo"],
            ("foo", PortRange(80, 82), PortRange(9090, 9090)),
        ),
        ([PortRange(81, 81), PortRange(80, 80)], (PortRange(80, 81),)),
        ([PortRange(80, 80), PortRange(80, 80)], (PortRange(80, 80),)),
        (
            [PortRange(90, 100), PortRange(95, 120), PortRange(121, 121), PortRange(200, 201)],
            (PortRange(90, 121), PortRange(200, 201)),
        ),
        (["foo", PortRange(80, 80)], ("foo", PortRange(80, 80))),
        ([PortRange(80, 80), "foo"], (PortRange(80, 80), "foo")),
        ([PortRange(1, 65535)], (PortRange(1, 65535),)),
    ],
)
def test_simplify_ports(ports: list[PortRange | str], expected: tuple[PortRange | str, ...]) -> None:
    assert simplify_ports(ports) == expected


# --- ids, types, tiers, order -----------------------------------------------------------------


def test_policy_and_rule_ids() -> None:
    assert k8s({"podSelector": {}}).policy_id == "default/KubernetesNetworkPolicy/x/p"
    assert calico({"tier": "sec"}, name="q").policy_id == "sec/NetworkPolicy/x/q"
    assert global_({}).policy_id == "default/GlobalNetworkPolicy//g"
    ref = parse_rule_id(rule_id("sec/NetworkPolicy/x/q", "egress", 3, 1))
    assert (ref.policy_id, ref.direction, ref.index, ref.sub, ref.policy_name) == (
        "sec/NetworkPolicy/x/q",
        "egress",
        3,
        1,
        "q",
    )
    assert parse_rule_id("default/GlobalNetworkPolicy//g/ingress/0").sub is None
    with pytest.raises(ValueError):
        parse_rule_id("default/NetworkPolicy/x/q/sideways/0")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"podSelector": {}}, {"ingress"}),
        ({"podSelector": {}, "egress": [{}]}, {"ingress", "egress"}),
        ({"podSelector": {}, "egress": []}, {"ingress"}),
        ({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}, {"egress"}),
    ],
)
def test_k8s_types_defaulting(spec: dict[str, Any], expected: set[str]) -> None:
    assert k8s(spec).types == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, {"ingress"}),
        ({"egress": [{"action": "Allow"}]}, {"egress"}),
        ({"egress": [{"action": "Allow"}], "ingress": [{"action": "Allow"}]}, {"ingress", "egress"}),
        ({"types": ["Egress"], "ingress": [{"action": "Allow"}]}, {"egress"}),
    ],
)
def test_calico_types_defaulting(spec: dict[str, Any], expected: set[str]) -> None:
    assert calico(spec).types == expected


def test_k8s_policies_are_order_1000_in_the_default_tier() -> None:
    policy = k8s({"podSelector": {}})
    assert (policy.tier, policy.order, policy.kind) == ("default", 1000.0, "KubernetesNetworkPolicy")


def test_policy_sort_key_is_order_then_the_name_namespace_kind_string() -> None:
    policies = [
        calico({"order": 5}, name="a"),
        calico({"order": 5}, name="a-b"),
        calico({}, name="0"),
        k8s({"podSelector": {}}, name="k"),
        calico({"order": 1000}, name="k", ns="a"),
    ]
    ordered = [p.policy_id for p in sorted(policies, key=lambda p: p.sort_key)]
    assert ordered == [
        "default/NetworkPolicy/x/a-b",
        "default/NetworkPolicy/x/a",
        "default/NetworkPolicy/a/k",
        "default/KubernetesNetworkPolicy/x/k",
        "default/NetworkPolicy/x/0",
    ]


def test_tier_sort_key_and_table() -> None:
    keys = {
        "valid-5-b": tier_sort_key("b", 5.0),
        "valid-5-a": tier_sort_key("a", 5.0),
        "valid-1": tier_sort_key("z", 1.0),
        "valid-none": tier_sort_key("a", None),
        "invalid": tier_sort_key("0", None, valid=False),
    }
    assert sorted(keys, key=keys.__getitem__) == [
        "valid-1",
        "valid-5-a",
        "valid-5-b",
        "valid-none",
        "invalid",
    ]
    table = tier_table([])
    assert (table["default"].order, table["default"].default_action) == (1_000_000.0, "deny")
    assert table["kube-admin"].default_action == "pass" and table["kube-baseline"].order == 10_000_000.0
    tier_doc = {
        "apiVersion": API,
        "kind": "Tier",
        "metadata": {"name": "default"},
        "spec": {"order": 7, "defaultAction": "Pass"},
    }
    overridden = tier_table([parse_resource(tier_doc)])  # type: ignore[list-item]
    assert (overridden["default"].order, overridden["default"].default_action) == (7.0, "pass")


def test_gnp_for_host_endpoints_only_does_not_apply_to_workloads() -> None:
    assert global_({}).applies_to_workloads
    assert not global_({"doNotTrack": True, "applyOnForward": True}).applies_to_workloads
    assert not global_({"preDNAT": True, "applyOnForward": True}).applies_to_workloads


# --- endpoints --------------------------------------------------------------------------------


def pod(**over: Any) -> Pod:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "a", "namespace": "x", "labels": {"app": "web", "pcns.evil": "1"}},
        "spec": {
            "nodeName": "n1",
            "serviceAccountName": "fe",
            "containers": [{"ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 9090}]}],
        },
        "status": {"podIPs": [{"ip": "198.18.0.1"}, {"ip": "fd00::0001"}]},
    }
    for key, value in over.items():
        doc[key] = {**doc[key], **value}
    return parse_resource(doc)  # type: ignore[return-value]


def test_endpoint_labels() -> None:
    labels = endpoint_labels(pod(), {"env": "prod", "kubernetes.io/metadata.name": "x"})
    assert labels == {
        "app": "web",
        "projectcalico.org/namespace": "x",
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "fe",
        "pcns.env": "prod",
        "pcns.kubernetes.io/metadata.name": "x",
        "pcns.projectcalico.org/name": "x",
        "pcsa.projectcalico.org/name": "fe",
    }
    assert endpoint_labels(pod(), None) == {
        "app": "web",
        "projectcalico.org/namespace": "x",
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "fe",
        "pcsa.projectcalico.org/name": "fe",
    }


def test_workload_endpoint() -> None:
    endpoint = workload_endpoint(pod(), {})
    assert endpoint is not None
    assert (endpoint.key, endpoint.node, endpoint.ips) == ("x/a", "n1", ("198.18.0.1", "fd00::1"))
    assert [(p.name, p.protocol, p.port) for p in endpoint.ports] == [("http", "tcp", 8080)]
    assert endpoint.iface.startswith("kal") and len(endpoint.iface) == 15
    assert not is_endpoint(pod(spec={"nodeName": None}))
    assert not is_endpoint(pod(status={"podIPs": []}))
    assert not is_endpoint(pod(status={"phase": "Succeeded"}))
    assert workload_endpoint(pod(status={"phase": "Failed"}), {}) is None
