"""The Kubernetes netpol e2e suite, truth table by truth table, against the oracle + evaluator.

Each test is one ``f.It`` of ``kubernetes/test/e2e/network/netpol/network_policy.go`` (current
revision: each test lists the pods it builds), with its policies built the way upstream builds
them and its expectations written as upstream writes them (``Expect`` / ``ExpectAllIngress`` /
``ExpectAllEgress`` / ``ExpectPeer``, later edits overwriting earlier ones). Every ordered pair of
distinct pods is evaluated through `compile_all` (pods spread over two nodes) and
`connection_allowed`; self pairs are ignored as upstream ignores them. Multi-step tests (update a
policy or a label, delete policies) recompile from the new resource list at each step.
"""

from __future__ import annotations

import ipaddress

import pytest
from netpol_cluster import (
    PeerSpec,
    Reachability,
    assert_reachability,
    cluster,
    expressions,
    k8s_policy,
    match_labels,
    pod_ip,
)

NS_LABEL = "kubernetes.io/metadata.name"
ALL = PeerSpec()
X, Y, Z = PeerSpec("x"), PeerSpec("y"), PeerSpec("z")
XA, YA, YB = PeerSpec("x", "a"), PeerSpec("y", "a"), PeerSpec("y", "b")


def ns_is(ns: str) -> dict[str, object]:
    return {"namespaceSelector": match_labels(**{NS_LABEL: ns})}


def pod_is(name: str) -> dict[str, object]:
    return {"podSelector": match_labels(pod=name)}


def large_cidr(ip: str) -> str:
    """Upstream's ``makeLargeCIDRForIP``: the /4 holding the IP."""
    return str(ipaddress.ip_network(f"{ip}/4", strict=False))


# --- TCP -------------------------------------------------------------------------------------


def test_default_deny_ingress() -> None:
    pods = ["x/a", "x/b", "y/a", "y/b"]
    res = [*cluster(pods, ports=[80], protocols=["TCP"]), k8s_policy("deny-ingress", "x", {}, ingress=[])]
    r = Reachability(pods).expect_peer(ALL, X, False)
    assert_reachability(res, 80, "TCP", r)


def test_default_deny_all() -> None:
    pods = ["x/a", "x/b", "y/a"]
    res = [
        *cluster(pods, ports=[80], protocols=["TCP"]),
        k8s_policy("deny-all", "x", {}, ingress=[], egress=[]),
    ]
    r = Reachability(pods).expect_peer(ALL, X, False).expect_peer(X, ALL, False)
    assert_reachability(res, 80, "TCP", r)


def test_allow_from_pods_within_server_namespace_by_pod_selector() -> None:
    pods = ["x/a", "x/b", "x/c", "y/a"]
    policy = k8s_policy("x-a-allows-x-b", "x", match_labels(pod="a"), ingress=[{"from": [pod_is("b")]}])
    r = Reachability(pods).expect_all_ingress("x/a", False).expect("x/b", "x/a", True)
    assert_reachability([*cluster(pods, ports=[80], protocols=["TCP"]), policy], 80, "TCP", r)


def test_allow_ingress_traffic_for_a_target() -> None:
    pods = ["x/a", "x/b", "y/a"]
    deny = k8s_policy("deny-all", "x", {}, ingress=[])
    allow = k8s_policy(
        "allow-all-to-a",
        "x",
        match_labels(pod="a"),
        ingress=[{"from": [{"podSelector": {}, "namespaceSelector": {}}]}],
    )
    r = Reachability(pods).expect_all_ingress("x/a", True).expect_all_ingress("x/b", False)
    assert_reachability([*cluster(pods, ports=[80], protocols=["TCP"]), deny, allow], 80, "TCP", r)


def test_allow_ingress_from_pods_in_all_namespaces() -> None:
    pods = ["x/a", "x/b", "y/a", "z/a"]
    policy = k8s_policy(
        "allow-from-another-ns",
        "x",
        match_labels(pod="a"),
        ingress=[{"from": [{"namespaceSelector": {"matchLabels": {}}}]}],
    )
    assert_reachability(
        [*cluster(pods, ports=[80], protocols=["TCP"]), policy], 80, "TCP", Reachability(pods)
    )


def test_allow_only_from_a_different_namespace_by_namespace_selector() -> None:
    pods = ["x/a", "x/b", "y/a", "z/a"]
    policy = k8s_policy(
        "allow-client-a-via-ns-selector", "x", match_labels(pod="a"), ingress=[{"from": [ns_is("y")]}]
    )
    r = Reachability(pods).expect_peer(X, XA, False).expect_peer(Z, XA, False)
    assert_reachability([*cluster(pods, ports=[80], protocols=["TCP"]), policy], 80, "TCP", r)


def test_pod_selector_with_match_expressions() -> None:
    pods = ["x/a", "x/b", "y/a"]
    policy = k8s_policy(
        "x-a-allows-x-b",
        "x",
        match_labels(pod="a"),
        ingress=[{"from": [{"podSelector": expressions("pod", "In", "b")}]}],
    )
    r = Reachability(pods).expect_all_ingress("x/a", False).expect("x/b", "x/a", True)
    assert_reachability([*cluster(pods, ports=[80], protocols=["TCP"]), policy], 80, "TCP", r)


def test_namespace_selector_with_match_expressions() -> None:
    pods = ["x/a", "x/b", "y/a", "z/a"]
    peer = {"namespaceSelector": expressions(NS_LABEL, "In", "y")}
    policy = k8s_policy("allow-ns-y-match-selector", "x", match_labels(pod="a"), ingress=[{"from": [peer]}])
    r = Reachability(pods).expect_peer(X, XA, False).expect_peer(Z, XA, False)
    assert_reachability([*cluster(pods, ports=[80], protocols=["TCP"]), policy], 80, "TCP", r)


def test_pod_selector_or_namespace_selector() -> None:
    pods = ["x/a", "x/b", "x/c", "y/a"]
    peers = [{"namespaceSelector": expressions(NS_LABEL, "NotIn", "x")}, pod_is("b")]
    policy = k8s_policy("allow-ns-y-match-selector", "x", match_labels(pod="a"), ingress=[{"from": peers}])
    r = Reachability(pods).expect("x/a", "x/a", False).expect("x/c", "x/a", False)
    assert_reachability([*cluster(pods, ports=[80], protocols=["TCP"]), policy], 80, "TCP", r)


def test_pod_selector_and_namespace_selector() -> None:
    pods = ["x/a", "x/b", "y/a", "y/b", "z/b"]
    peer = {"namespaceSelector": expressions(NS_LABEL, "NotIn", "x"), "podSelector": match_labels(pod="b")}
    policy = k8s_policy(
        "allow-ns-y-podselector-and-nsselector", "x", match_labels(pod="a"), ingress=[{"from": [peer]}]
    )
    r = (
        Reachability(pods)
        .expect_all_ingress("x/a", False)
        .expect("y/b", "x/a", True)
        .expect("z/b", "x/a", True)
    )
    assert_reachability([*cluster(pods, ports=[80], protocols=["TCP"]), policy], 80, "TCP", r)


def test_multiple_pod_selectors_and_namespace_selectors() -> None:
    pods = ["x/a", "x/b", "y/a", "y/b", "y/c"]
    peer = {
        "namespaceSelector": expressions(NS_LABEL, "NotIn", "x"),
        "podSelector": expressions("pod", "In", "b", "c"),
    }
    policy = k8s_policy("allow-ns-y-z-pod-b-c", "x", match_labels(pod="a"), ingress=[{"from": [peer]}])
    r = Reachability(pods).expect_peer(X, XA, False).expect("y/a", "x/a", False)
    assert_reachability([*cluster(pods, ports=[80], protocols=["TCP"]), policy], 80, "TCP", r)


def test_any_pod_selectors() -> None:
    pods = ["x/a", "x/b", "x/c"]
    policy = k8s_policy(
        "allow-ns-x-pod-b-c", "x", match_labels(pod="a"), ingress=[{"from": [pod_is("b"), pod_is("c")]}]
    )
    r = (
        Reachability(pods)
        .expect_all_ingress("x/a", False)
        .expect("x/b", "x/a", True)
        .expect("x/c", "x/a", True)
    )
    assert_reachability([*cluster(pods, ports=[80], protocols=["TCP"]), policy], 80, "TCP", r)


def test_only_from_a_pod_in_a_different_namespace() -> None:
    pods = ["x/a", "x/b", "y/a", "y/b", "z/a"]
    peer = {**ns_is("y"), **pod_is("a")}
    policy = k8s_policy(
        "allow-ns-y-pod-a-via-namespace-pod-selector", "x", match_labels(pod="a"), ingress=[{"from": [peer]}]
    )
    r = Reachability(pods).expect_all_ingress("x/a", False).expect("y/a", "x/a", True)
    assert_reachability([*cluster(pods, ports=[80], protocols=["TCP"]), policy], 80, "TCP", r)


def test_policy_based_on_ports() -> None:
    pods = ["x/a", "x/b", "y/a", "y/b", "z/a"]
    rule = {"from": [ns_is("y")], "ports": [{"port": 81, "protocol": "TCP"}]}
    policy = k8s_policy("allow-client-a-via-ns-selector", "x", match_labels(pod="a"), ingress=[rule])
    r = Reachability(pods).expect_peer(X, XA, False).expect_peer(Y, XA, True).expect_peer(Z, XA, False)
    assert_reachability([*cluster(pods, ports=[81], protocols=["TCP"]), policy], 81, "TCP", r)


def test_multiple_stacked_policies_with_overlapping_pod_selectors() -> None:
    pods = ["x/a", "x/b", "y/a", "y/b", "z/a"]
    base = cluster(pods, ports=[80, 81], protocols=["TCP"])
    rule81 = {"from": [ns_is("y")], "ports": [{"port": 81, "protocol": "TCP"}]}
    p81 = k8s_policy("allow-client-a-via-ns-selector", "x", match_labels(pod="a"), ingress=[rule81])
    allow = Reachability(pods).expect_peer(X, XA, False).expect_peer(Y, XA, True).expect_peer(Z, XA, False)
    assert_reachability([*base, p81], 81, "TCP", allow)
    assert_reachability([*base, p81], 80, "TCP", Reachability(pods).expect_all_ingress("x/a", False))
    rule80 = {"from": [ns_is("y")], "ports": [{"port": 80, "protocol": "TCP"}]}
    p80 = k8s_policy("allow-client-a-via-ns-selector-80", "x", match_labels(pod="a"), ingress=[rule80])
    assert_reachability([*base, p81, p80], 80, "TCP", allow)


def test_allow_all_policy() -> None:
    pods = ["x/a", "x/b", "y/a"]
    res = [*cluster(pods, ports=[80, 81], protocols=["TCP"]), k8s_policy("allow-all", "x", {}, ingress=[{}])]
    assert_reachability(res, 80, "TCP", Reachability(pods))
    assert_reachability(res, 81, "TCP", Reachability(pods))


def test_allow_ingress_on_one_named_port() -> None:
    pods = ["x/a", "x/b", "y/a"]
    policy = k8s_policy("allow-all", "x", {}, ingress=[{"ports": [{"port": "serve-81-tcp"}]}])
    res = [*cluster(pods, ports=[80, 81], protocols=["TCP"]), policy]
    assert_reachability(res, 81, "TCP", Reachability(pods))
    assert_reachability(res, 80, "TCP", Reachability(pods).expect_peer(ALL, X, False))


def test_allow_ingress_from_namespace_on_one_named_port() -> None:
    pods = ["x/a", "x/b", "y/a", "z/a"]
    rule = {"from": [ns_is("y")], "ports": [{"port": "serve-80-tcp", "protocol": "TCP"}]}
    policy = k8s_policy("allow-client-a-via-ns-selector-80", "x", match_labels(pod="a"), ingress=[rule])
    res = [*cluster(pods, ports=[80, 81], protocols=["TCP"]), policy]
    assert_reachability(
        res, 80, "TCP", Reachability(pods).expect_peer(X, XA, False).expect_peer(Z, XA, False)
    )
    assert_reachability(res, 81, "TCP", Reachability(pods).expect_all_ingress("x/a", False))


def test_allow_egress_on_one_named_port() -> None:
    pods = ["x/a", "y/a"]
    policy = k8s_policy("allow-egress", "x", {}, egress=[{"ports": [{"port": "serve-80-tcp"}]}])
    res = [*cluster(pods, ports=[80, 81], protocols=["TCP"]), policy]
    assert_reachability(res, 80, "TCP", Reachability(pods))
    assert_reachability(res, 81, "TCP", Reachability(pods).expect_peer(X, ALL, False))


def test_enforce_updated_policy() -> None:
    pods = ["x/a", "y/a"]
    base = cluster(pods, ports=[81], protocols=["TCP"])
    assert_reachability(
        [*base, k8s_policy("allow-all-mutate-to-deny-all", "x", {}, ingress=[{}])],
        81,
        "TCP",
        Reachability(pods),
    )
    updated = k8s_policy("allow-all-mutate-to-deny-all", "x", {}, ingress=[])
    assert_reachability([*base, updated], 81, "TCP", Reachability(pods).expect_peer(ALL, X, False))


def test_allow_ingress_from_updated_namespace() -> None:
    pods = ["x/a", "y/a"]
    policy = k8s_policy(
        "allow-client-a-via-ns-selector",
        "x",
        match_labels(pod="a"),
        ingress=[{"from": [{"namespaceSelector": match_labels(ns2="updated")}]}],
    )
    before = [*cluster(pods, ports=[80], protocols=["TCP"]), policy]
    assert_reachability(before, 80, "TCP", Reachability(pods).expect_all_ingress("x/a", False))
    after = [
        *cluster(pods, ports=[80], protocols=["TCP"], namespace_labels={"y": {"ns2": "updated"}}),
        policy,
    ]
    r = Reachability(pods).expect_all_ingress("x/a", False).expect_peer(Y, ALL, True)
    assert_reachability(after, 80, "TCP", r)


def test_allow_ingress_from_updated_pod() -> None:
    pods = ["x/a", "x/b"]
    wanted = {"pod": "b", "pod2": "updated"}
    policy = k8s_policy(
        "allow-client-a-via-pod-selector",
        "x",
        match_labels(pod="a"),
        ingress=[{"from": [{"podSelector": {"matchLabels": wanted}}]}],
    )
    before = [*cluster(pods, ports=[80], protocols=["TCP"]), policy]
    assert_reachability(before, 80, "TCP", Reachability(pods).expect_all_ingress("x/a", False))
    after = [*cluster(pods, ports=[80], protocols=["TCP"], pod_labels={"x/b": wanted}), policy]
    r = Reachability(pods).expect_all_ingress("x/a", False).expect("x/b", "x/a", True)
    assert_reachability(after, 80, "TCP", r)


def test_deny_ingress_from_pods_on_other_namespaces() -> None:
    pods = ["x/a", "x/b", "y/a", "z/a"]
    policy = k8s_policy(
        "deny-empty-policy", "x", {}, ingress=[{"from": [{"podSelector": {"matchLabels": {}}}]}]
    )
    r = Reachability(pods).expect_peer(Y, X, False).expect_peer(Z, X, False)
    assert_reachability([*cluster(pods, ports=[80], protocols=["TCP"]), policy], 80, "TCP", r)


def test_deny_ingress_access_to_updated_pod() -> None:
    pods = ["x/a", "y/a"]
    policy = k8s_policy("deny-ingress-via-label-selector", "x", match_labels(target="isolated"), ingress=[])
    before = [*cluster(pods, ports=[80], protocols=["TCP"]), policy]
    assert_reachability(before, 80, "TCP", Reachability(pods))
    after = [
        *cluster(pods, ports=[80], protocols=["TCP"], pod_labels={"x/a": {"target": "isolated"}}),
        policy,
    ]
    assert_reachability(after, 80, "TCP", Reachability(pods).expect_all_ingress("x/a", False))


def test_deny_egress_from_pods_by_pod_selector() -> None:
    pods = ["x/a", "x/b", "y/a"]
    policy = k8s_policy("deny-egress-pod-a", "x", match_labels(pod="a"), egress=[])
    r = Reachability(pods).expect_all_egress("x/a", False)
    assert_reachability([*cluster(pods, ports=[80], protocols=["TCP"]), policy], 80, "TCP", r)


def test_deny_egress_from_all_pods_in_a_namespace() -> None:
    pods = ["x/a", "x/b", "y/a"]
    policy = k8s_policy("deny-egress-ns-x", "x", {}, egress=[])
    r = Reachability(pods).expect_peer(X, ALL, False)
    assert_reachability([*cluster(pods, ports=[80], protocols=["TCP"]), policy], 80, "TCP", r)


def test_ingress_and_egress_specified_together() -> None:
    pods = ["x/a", "x/b", "x/c", "y/a"]
    policy = k8s_policy(
        "allow-client-a-via-pod-selector",
        "x",
        match_labels(pod="a"),
        ingress=[{"from": [pod_is("b")]}],
        egress=[{"ports": [{"port": 80}]}],
        policy_types=["Egress", "Ingress"],
    )
    res = [*cluster(pods, ports=[80, 81], protocols=["TCP"]), policy]
    assert_reachability(
        res, 80, "TCP", Reachability(pods).expect_all_ingress("x/a", False).expect("x/b", "x/a", True)
    )
    r81 = (
        Reachability(pods)
        .expect_all_ingress("x/a", False)
        .expect_all_egress("x/a", False)
        .expect("x/b", "x/a", True)
    )
    assert_reachability(res, 81, "TCP", r81)


def test_deny_egress_on_the_client_side_even_if_the_server_allows_it() -> None:
    pods = ["x/a", "y/a", "y/b"]
    egress = k8s_policy(
        "allow-to-ns-y-pod-a", "x", match_labels(pod="a"), egress=[{"to": [{**ns_is("y"), **pod_is("a")}]}]
    )
    from_xa = [{"from": [{**ns_is("x"), **pod_is("a")}]}]
    ingress_a = k8s_policy("allow-from-xa-on-ya-match-selector", "y", match_labels(pod="a"), ingress=from_xa)
    ingress_b = k8s_policy("allow-from-xa-on-yb-match-selector", "y", match_labels(pod="b"), ingress=from_xa)
    r = (
        Reachability(pods)
        .expect_peer(XA, ALL, False)
        .expect_peer(ALL, YA, False)
        .expect_peer(XA, YA, True)
        .expect_peer(ALL, YB, False)
    )
    res = [*cluster(pods, ports=[80], protocols=["TCP"]), egress, ingress_a, ingress_b]
    assert_reachability(res, 80, "TCP", r)


def test_egress_to_a_server_in_a_different_namespace_by_pod_and_namespace_selector() -> None:
    pods = ["x/a", "y/a", "y/b"]
    policy = k8s_policy(
        "allow-to-ns-y-pod-a", "x", match_labels(pod="a"), egress=[{"to": [{**ns_is("y"), **pod_is("a")}]}]
    )
    r = Reachability(pods).expect_all_egress("x/a", False).expect("x/a", "y/a", True)
    assert_reachability([*cluster(pods, ports=[80], protocols=["TCP"]), policy], 80, "TCP", r)


def test_ingress_allowing_any_port_on_a_specific_protocol() -> None:
    pods = ["x/a", "y/a"]
    policy = k8s_policy(
        "allow-ingress-by-proto", "x", match_labels(pod="a"), ingress=[{"ports": [{"protocol": "TCP"}]}]
    )
    res = [*cluster(pods, ports=[80], protocols=["TCP", "UDP"]), policy]
    assert_reachability(res, 80, "TCP", Reachability(pods))
    assert_reachability(res, 80, "UDP", Reachability(pods).expect_peer(ALL, XA, False))


def test_multiple_ingress_policies_with_allow_all_taking_precedence() -> None:
    pods = ["x/a", "y/a"]
    base = cluster(pods, ports=[81], protocols=["TCP"])
    only80 = k8s_policy("allow-ingress-port-80", "x", {}, ingress=[{"ports": [{"port": 80}]}])
    assert_reachability([*base, only80], 81, "TCP", Reachability(pods).expect_peer(ALL, X, False))
    allow_all = k8s_policy("allow-ingress", "x", {}, ingress=[{}])
    assert_reachability([*base, only80, allow_all], 81, "TCP", Reachability(pods))


def test_multiple_egress_policies_with_allow_all_taking_precedence() -> None:
    pods = ["x/a", "y/a"]
    base = cluster(pods, ports=[81], protocols=["TCP"])
    only80 = k8s_policy("allow-egress-port-80", "x", {}, egress=[{"ports": [{"port": 80}]}])
    assert_reachability([*base, only80], 81, "TCP", Reachability(pods).expect_peer(X, ALL, False))
    allow_all = k8s_policy("allow-egress", "x", {}, egress=[{}])
    assert_reachability([*base, only80, allow_all], 81, "TCP", Reachability(pods))


def test_stop_enforcing_policies_after_they_are_deleted() -> None:
    pods = ["x/a", "y/a"]
    base = cluster(pods, ports=[80], protocols=["TCP"])
    deny = k8s_policy("deny-all", "x", {}, ingress=[], egress=[])
    assert_reachability(
        [*base, deny], 80, "TCP", Reachability(pods).expect_peer(X, ALL, False).expect_peer(ALL, X, False)
    )
    assert_reachability(base, 80, "TCP", Reachability(pods))


def test_allow_egress_to_server_in_cidr_block() -> None:
    pods = ["x/a", "y/a", "y/b"]
    block = {"ipBlock": {"cidr": f"{pod_ip('y/b')}/32"}}
    policy = k8s_policy(
        "allow-client-a-via-cidr-egress-rule", "x", match_labels(pod="a"), egress=[{"to": [block]}]
    )
    r = Reachability(pods).expect_all_egress("x/a", False).expect("x/a", "y/b", True)
    assert_reachability([*cluster(pods, ports=[80], protocols=["TCP"]), policy], 80, "TCP", r)


def test_except_clause_while_egress_to_server_in_cidr_block() -> None:
    pods = ["x/a", "x/b", "x/c"]
    ip = pod_ip("x/b")
    block = {"ipBlock": {"cidr": large_cidr(ip), "except": [f"{ip}/32"]}}
    policy = k8s_policy(
        "allow-client-a-via-cidr-egress-rule", "x", match_labels(pod="a"), egress=[{"to": [block]}]
    )
    r = Reachability(pods).expect("x/a", "x/b", False)
    assert_reachability([*cluster(pods, ports=[80], protocols=["TCP"]), policy], 80, "TCP", r)


def test_ip_overlapping_both_cidr_and_except_is_allowed_by_another_policy() -> None:
    pods = ["x/a", "x/b", "x/c"]
    base = cluster(pods, ports=[80], protocols=["TCP"])
    ip = pod_ip("x/b")
    block = {"ipBlock": {"cidr": large_cidr(ip), "except": [f"{ip}/32"]}}
    first = k8s_policy(
        "allow-client-a-via-cidr-egress-rule", "x", match_labels(pod="a"), egress=[{"to": [block]}]
    )
    assert_reachability([*base, first], 80, "TCP", Reachability(pods).expect("x/a", "x/b", False))
    exact = {"ipBlock": {"cidr": f"{ip}/32"}}
    updated = k8s_policy(
        "allow-client-a-via-cidr-egress-rule", "x", match_labels(pod="a"), egress=[{"to": [exact]}]
    )
    r = Reachability(pods).expect_all_egress("x/a", False).expect("x/a", "x/b", True)
    assert_reachability([*base, updated], 80, "TCP", r)


def test_ingress_and_egress_controlled_independently() -> None:
    pods = ["x/a", "x/b", "y/a"]
    base = cluster(pods, ports=[80], protocols=["TCP"])
    allow_egress = k8s_policy("allow-egress-for-target", "x", match_labels(pod="a"), egress=[{}])
    assert_reachability([*base, allow_egress], 80, "TCP", Reachability(pods))
    deny_ingress = k8s_policy("deny-ingress-via-label-selector", "x", match_labels(pod="a"), ingress=[])
    assert_reachability(
        [*base, allow_egress, deny_ingress], 80, "TCP", Reachability(pods).expect_all_ingress("x/a", False)
    )


def test_sctp_is_not_mistaken_for_tcp() -> None:
    pods = ["x/a", "y/a"]
    deny = k8s_policy("deny-ingress", "x", {}, ingress=[])
    sctp = k8s_policy(
        "allow-only-sctp-ingress-on-port-81",
        "x",
        match_labels(pod="a"),
        ingress=[{"ports": [{"port": 81, "protocol": "SCTP"}]}],
    )
    res = [*cluster(pods, ports=[81], protocols=["TCP"]), deny, sctp]
    assert_reachability(res, 81, "TCP", Reachability(pods).expect_peer(ALL, X, False))


def test_pods_selected_by_an_sctp_policy_are_isolated() -> None:
    pods = ["x/a", "y/a"]
    sctp = k8s_policy(
        "allow-only-sctp-ingress-on-port-80",
        "x",
        match_labels(pod="a"),
        ingress=[{"ports": [{"port": 80, "protocol": "SCTP"}]}],
    )
    res = [*cluster(pods, ports=[81], protocols=["TCP"]), sctp]
    assert_reachability(res, 81, "TCP", Reachability(pods).expect_all_ingress("x/a", False))


def test_tcp_not_allowed_when_policy_specifies_only_udp() -> None:
    pods = ["x/a", "y/a"]
    udp = k8s_policy(
        "allow-only-udp-ingress-on-port-81",
        "x",
        match_labels(pod="a"),
        ingress=[{"ports": [{"port": 81, "protocol": "UDP"}]}],
    )
    res = [*cluster(pods, ports=[81], protocols=["TCP"]), udp]
    assert_reachability(res, 81, "TCP", Reachability(pods).expect_all_ingress("x/a", False))


def test_namespace_selector_match_labels_with_default_ns_label() -> None:
    pods = ["x/a", "x/b", "y/a", "z/a"]
    policy = k8s_policy(
        "allow-client-a-via-ns-selector-for-immutable-ns-label",
        "x",
        match_labels(pod="a"),
        ingress=[{"from": [ns_is("y")]}],
    )
    r = Reachability(pods).expect_peer(X, XA, False).expect_peer(Z, XA, False)
    assert_reachability([*cluster(pods, ports=[80], protocols=["TCP"]), policy], 80, "TCP", r)


def test_namespace_selector_match_expressions_with_default_ns_label() -> None:
    pods = ["x/a", "x/b", "y/a", "z/a"]
    peer = {"namespaceSelector": expressions(NS_LABEL, "NotIn", "y")}
    policy = k8s_policy(
        "allow-ns-y-match-selector-for-immutable-ns-label",
        "x",
        match_labels(pod="a"),
        egress=[{"to": [peer]}],
    )
    r = Reachability(pods).expect_peer(XA, Y, False)
    assert_reachability([*cluster(pods, ports=[80], protocols=["TCP"]), policy], 80, "TCP", r)


# --- UDP and SCTP ("Netpol [LinuxOnly]" and "Feature:SCTPConnectivity") ------------------------


@pytest.mark.parametrize("protocol", ["UDP", "SCTP"])
def test_default_deny_ingress_other_protocols(protocol: str) -> None:
    pods = ["x/a", "x/b", "y/a", "y/b"]
    res = [*cluster(pods, ports=[80], protocols=[protocol]), k8s_policy("deny-all", "x", {}, ingress=[])]
    assert_reachability(res, 80, protocol, Reachability(pods).expect_peer(ALL, X, False))


@pytest.mark.parametrize("protocol", ["UDP", "SCTP"])
def test_policy_based_on_ports_other_protocols(protocol: str) -> None:
    pods = ["x/a", "x/b", "y/a", "z/a"]
    rule = {"from": [ns_is("y")], "ports": [{"port": 81, "protocol": protocol}]}
    policy = k8s_policy("allow-ingress-on-port-81-ns-x", "x", match_labels(pod="a"), ingress=[rule])
    r = Reachability(pods).expect_peer(X, XA, False).expect_peer(Z, XA, False)
    assert_reachability([*cluster(pods, ports=[81], protocols=[protocol]), policy], 81, protocol, r)


@pytest.mark.parametrize("protocol", ["UDP", "SCTP"])
def test_only_from_a_pod_in_a_different_namespace_other_protocols(protocol: str) -> None:
    pods = ["x/a", "x/b", "y/a"]
    peer = {**ns_is("y"), **pod_is("a")}
    policy = k8s_policy(
        "allow-ns-y-pod-a-via-namespace-pod-selector", "x", match_labels(pod="a"), ingress=[{"from": [peer]}]
    )
    r = Reachability(pods).expect_all_ingress("x/a", False).expect("y/a", "x/a", True)
    assert_reachability([*cluster(pods, ports=[80], protocols=[protocol]), policy], 80, protocol, r)


# --- Older revisions (full 9-pod model, FromPort/ToPort) whose expectations differ in shape -----


def test_legacy_default_deny_all_allowing_dns_egress() -> None:
    """The first revision's 'default-deny-all': ingress [], egress UDP/53 only, probed on TCP/80."""
    policy = k8s_policy(
        "deny-all-tcp-allow-dns", "x", {}, ingress=[], egress=[{"ports": [{"protocol": "UDP", "port": 53}]}]
    )
    res = [*cluster(ports=[80, 81], protocols=["TCP", "UDP"]), policy]
    r = Reachability(res_pods()).expect_peer(ALL, X, False).expect_peer(X, ALL, False)
    assert_reachability(res, 80, "TCP", r)


def test_legacy_multiple_pod_and_namespace_selectors_nine_pods() -> None:
    """The first revision's version, on all nine pods: z/a is denied too."""
    peer = {
        "namespaceSelector": expressions(NS_LABEL, "NotIn", "x"),
        "podSelector": expressions("pod", "In", "b", "c"),
    }
    policy = k8s_policy("allow-ns-y-z-pod-b-c", "x", match_labels(pod="a"), ingress=[{"from": [peer]}])
    r = (
        Reachability(res_pods())
        .expect_peer(X, XA, False)
        .expect("y/a", "x/a", False)
        .expect("z/a", "x/a", False)
    )
    assert_reachability([*cluster(ports=[80, 81], protocols=["TCP", "UDP"]), policy], 80, "TCP", r)


def res_pods() -> list[str]:
    return [f"{ns}/{p}" for ns in "xyz" for p in "abc"]
