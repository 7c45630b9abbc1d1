"""Calico v3 policy semantics end to end: resources → `compile_all` → `connection_allowed`.

Each test states one rule of calico.md section 2 (tiers and their order, Pass, Log, Deny before
Allow, tier default actions, policy order with None last and ties by name, notSelector vs
``!selector``, ``global()`` namespace selectors, service accounts, notNets, notPorts, named ports,
GlobalNetworkPolicy namespaceSelector, host-endpoint-only GNPs, missing tiers failing closed,
ICMP, notProtocol, ipVersion) and checks both the verdict and what decided it.
"""

from __future__ import annotations

from typing import Any

from netpol_cluster import cluster, k8s_policy, pod_ip

from policycore.calc.normalize import parse_rule_id
from policycore.calc.oracle import compile_all
from policycore.evaluate import Explanation, Peer, connection_allowed
from policycore.model import Resource, parse_resource

TCP, UDP, ICMP = 6, 17, 1
API = "projectcalico.org/v3"


def np(name: str, ns: str, spec: dict[str, Any]) -> Resource:
    return parse_resource(
        {
            "apiVersion": API,
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }
    )


def gnp(name: str, spec: dict[str, Any]) -> Resource:
    return parse_resource(
        {"apiVersion": API, "kind": "GlobalNetworkPolicy", "metadata": {"name": name}, "spec": spec}
    )


def tier(name: str, order: float | None, default_action: str = "Deny") -> Resource:
    spec: dict[str, Any] = {"defaultAction": default_action}
    if order is not None:
        spec["order"] = order
    return parse_resource({"apiVersion": API, "kind": "Tier", "metadata": {"name": name}, "spec": spec})


def base(**kw: Any) -> list[Resource]:
    return cluster(ports=[80, 81], protocols=["TCP", "UDP"], **kw)


def node_of(pod: str) -> str:
    return "node-1" if sorted(f"{n}/{p}" for n in "xyz" for p in "abc").index(pod) % 2 == 0 else "node-2"


def conn(
    resources: list[Resource], src: str, dst: str, port: int = 80, protocol: int = TCP, **kw: Any
) -> Explanation:
    states = compile_all(resources)
    src_peer = Peer(pod_ip(src), src, node_of(src)) if "/" in src else Peer(src)
    dst_peer = Peer(pod_ip(dst), dst, node_of(dst)) if "/" in dst else Peer(dst)
    return connection_allowed(states, src_peer, dst_peer, protocol, port, **kw)


def decided(e: Explanation) -> str:
    """What decided: the denying side if one denied, else the ingress side."""
    side = e.egress if e.egress is not None and not e.egress.allowed else e.ingress
    assert side is not None
    return side.decided_by


ALLOW_ALL_IN = {"ingress": [{"action": "Allow"}]}
DENY_ALL_IN = {"ingress": [{"action": "Deny"}]}


def test_a_lower_ordered_tier_decides_first() -> None:
    res = [
        *base(),
        tier("security", 100),
        np("deny", "x", {"tier": "security", "selector": "pod == 'a'", **DENY_ALL_IN}),
        k8s_policy("allow", "x", {}, ingress=[{}]),
    ]
    e = conn(res, "y/a", "x/a")
    assert not e.allowed
    assert parse_rule_id(decided(e)).policy_id == "security/NetworkPolicy/x/deny"
    assert [s.tier for s in e.ingress.trace][:1] == ["security"]  # type: ignore[union-attr]


def test_pass_skips_to_the_next_tier() -> None:
    res = [
        *base(),
        tier("security", 100),
        np("pass", "x", {"tier": "security", "ingress": [{"action": "Pass"}, {"action": "Deny"}]}),
        k8s_policy("only-from-y", "x", {}, ingress=[{"from": [{"namespaceSelector": {}}]}]),
    ]
    e = conn(res, "y/a", "x/a")
    assert e.allowed
    assert decided(e) == "default/KubernetesNetworkPolicy/x/only-from-y/ingress/0"
    outcomes = [(s.tier, s.outcome) for s in e.ingress.trace]  # type: ignore[union-attr]
    assert outcomes[0] == ("security", "pass")


def test_pass_out_of_the_last_tier_reaches_the_allowing_profile() -> None:
    res = [*base(), np("pass", "x", {"ingress": [{"action": "Pass"}]})]
    e = conn(res, "y/a", "x/a")
    assert e.allowed and decided(e) == "profile"


def test_tier_default_pass_falls_through_and_tier_default_deny_drops() -> None:
    only_z = {
        "ingress": [
            {"action": "Allow", "source": {"namespaceSelector": "kubernetes.io/metadata.name == 'z'"}}
        ]
    }
    passing = [*base(), tier("t", 10, "Pass"), np("only-z", "x", {"tier": "t", **only_z})]
    assert conn(passing, "y/a", "x/a").allowed
    assert decided(conn(passing, "y/a", "x/a")) == "profile"
    denying = [*base(), tier("t", 10, "Deny"), np("only-z", "x", {"tier": "t", **only_z})]
    e = conn(denying, "y/a", "x/a")
    assert not e.allowed and decided(e) == "tier-default:t"
    assert conn(denying, "z/a", "x/a").allowed


def test_log_continues_to_the_next_rule() -> None:
    res = [*base(), np("log-then-deny", "x", {"ingress": [{"action": "Log"}, {"action": "Deny"}]})]
    e = conn(res, "y/a", "x/a")
    assert not e.allowed
    assert [s.outcome for s in e.ingress.trace] == ["log", "deny"]  # type: ignore[union-attr]
    assert decided(e).endswith("/ingress/1")


def test_first_deny_or_allow_wins_by_order() -> None:
    deny10 = np("deny", "x", {"order": 10, **DENY_ALL_IN})
    allow20 = np("allow", "x", {"order": 20, **ALLOW_ALL_IN})
    assert not conn([*base(), deny10, allow20], "y/a", "x/a").allowed
    deny30 = np("deny", "x", {"order": 30, **DENY_ALL_IN})
    assert conn([*base(), deny30, allow20], "y/a", "x/a").allowed


def test_rules_within_a_policy_run_in_order() -> None:
    res = [
        *base(),
        np(
            "p",
            "x",
            {"ingress": [{"action": "Deny", "source": {"selector": "pod == 'a'"}}, {"action": "Allow"}]},
        ),
    ]
    assert not conn(res, "x/a", "x/b").allowed
    assert conn(res, "x/c", "x/b").allowed


def test_unordered_policies_run_after_kubernetes_policies_and_ordered_ones_before() -> None:
    k8s_allow = k8s_policy("allow", "x", {}, ingress=[{}])
    unordered_deny = np("deny", "x", DENY_ALL_IN)
    assert conn([*base(), k8s_allow, unordered_deny], "y/a", "x/a").allowed
    early_deny = np("deny", "x", {"order": 999, **DENY_ALL_IN})
    assert not conn([*base(), k8s_allow, early_deny], "y/a", "x/a").allowed


def test_equal_order_is_broken_by_the_name_namespace_kind_string() -> None:
    # Felix compares "<name>/<namespace>/<kind>" as one string: "a-b/..." sorts before "a/..." ('-' < '/').
    res = [*base(), np("a", "x", {"order": 5, **ALLOW_ALL_IN}), np("a-b", "x", {"order": 5, **DENY_ALL_IN})]
    states = compile_all(res)
    endpoint = next(s.endpoints["x/a"] for s in states.values() if "x/a" in s.endpoints)
    assert endpoint.ingress[0].policies == ("default/NetworkPolicy/x/a-b", "default/NetworkPolicy/x/a")
    assert not conn(res, "y/a", "x/a").allowed
    res2 = [*base(), np("b", "x", {"order": 5, **ALLOW_ALL_IN}), np("c", "x", {"order": 5, **DENY_ALL_IN})]
    assert conn(res2, "y/a", "x/a").allowed


def test_tiers_with_equal_order_sort_by_name_and_unordered_tiers_come_last() -> None:
    res = [
        *base(),
        tier("b", 5),
        tier("a", 5),
        tier("last", None),
        np("pb", "x", {"tier": "b", **DENY_ALL_IN}),
        np("pa", "x", {"tier": "a", "ingress": [{"action": "Pass"}]}),
        np("pl", "x", {"tier": "last", **ALLOW_ALL_IN}),
    ]
    states = compile_all(res)
    endpoint = next(s.endpoints["x/a"] for s in states.values() if "x/a" in s.endpoints)
    assert [t.name for t in endpoint.ingress] == ["a", "b", "last"]
    assert not conn(res, "y/a", "x/a").allowed


def test_not_selector_matches_non_endpoints_but_negated_selector_does_not() -> None:
    external = "203.0.113.7"
    not_sel = gnp(
        "deny-not-b",
        {
            "selector": "pod == 'a'",
            "ingress": [{"action": "Deny", "source": {"notSelector": "pod == 'b'"}}, {"action": "Allow"}],
        },
    )
    e = conn([*base(), not_sel], external, "x/a")
    assert not e.allowed and decided(e).startswith("default/GlobalNetworkPolicy//deny-not-b/ingress/0")
    assert conn([*base(), not_sel], "y/b", "x/a").allowed
    negated = gnp(
        "deny-not-b",
        {
            "selector": "pod == 'a'",
            "ingress": [{"action": "Deny", "source": {"selector": "pod != 'b'"}}, {"action": "Allow"}],
        },
    )
    assert conn([*base(), negated], external, "x/a").allowed
    assert not conn([*base(), negated], "y/c", "x/a").allowed


def test_a_bare_not_selector_in_a_namespaced_policy_is_limited_to_its_namespace() -> None:
    rule = {"action": "Deny", "source": {"notSelector": "pod == 'b'"}}
    res = [*base(), np("deny-not-b", "x", {"ingress": [rule, {"action": "Allow"}]})]
    assert not conn(res, "x/c", "x/a").allowed  # in x and not b
    assert conn(res, "y/c", "x/a").allowed  # other namespace: the namespace clause does not match
    assert conn(res, "203.0.113.7", "x/a").allowed


def test_namespace_selector_global_matches_no_pods_and_all_matches_every_namespace() -> None:
    glob = np("g", "x", {"ingress": [{"action": "Allow", "source": {"namespaceSelector": "global()"}}]})
    assert not conn([*base(), glob], "y/a", "x/a").allowed
    assert not conn([*base(), glob], "x/b", "x/a").allowed
    every = np(
        "g",
        "x",
        {
            "ingress": [
                {"action": "Allow", "source": {"namespaceSelector": "all()", "selector": "pod == 'b'"}}
            ]
        },
    )
    assert conn([*base(), every], "z/b", "x/a").allowed
    assert not conn([*base(), every], "z/c", "x/a").allowed


def test_rule_selector_without_namespace_selector_is_same_namespace_in_np_and_any_in_gnp() -> None:
    in_np = np("p", "x", {"ingress": [{"action": "Allow", "source": {"selector": "pod == 'b'"}}]})
    assert conn([*base(), in_np], "x/b", "x/a").allowed
    assert not conn([*base(), in_np], "y/b", "x/a").allowed
    in_gnp = gnp(
        "p",
        {
            "selector": "projectcalico.org/namespace == 'x'",
            "ingress": [{"action": "Allow", "source": {"selector": "pod == 'b'"}}],
        },
    )
    assert conn([*base(), in_gnp], "y/b", "x/a").allowed


def test_service_accounts_by_name_and_by_selector() -> None:
    resources = base()
    # Give y/b the "frontend" service account.
    docs = []
    for r in resources:
        doc = r.model_dump(by_alias=True, exclude_none=True, mode="json")
        if doc["kind"] == "Pod" and doc["metadata"]["namespace"] == "y" and doc["metadata"]["name"] == "b":
            doc["spec"]["serviceAccountName"] = "frontend"
        docs.append(parse_resource(doc))
    by_name = np(
        "sa",
        "x",
        {
            "ingress": [
                {
                    "action": "Allow",
                    "source": {"namespaceSelector": "all()", "serviceAccounts": {"names": ["frontend"]}},
                }
            ]
        },
    )
    assert conn([*docs, by_name], "y/b", "x/a").allowed
    assert not conn([*docs, by_name], "y/a", "x/a").allowed
    by_selector = gnp(
        "sa",
        {
            "selector": "pod == 'a'",
            "ingress": [
                {
                    "action": "Allow",
                    "source": {"serviceAccounts": {"selector": "projectcalico.org/name == 'frontend'"}},
                }
            ],
        },
    )
    assert conn([*docs, by_selector], "y/b", "x/a").allowed
    assert not conn([*docs, by_selector], "y/c", "x/a").allowed
    policy_sa = np(
        "only-frontend-pods",
        "y",
        {"serviceAccountSelector": "projectcalico.org/name == 'frontend'", **DENY_ALL_IN},
    )
    assert not conn([*docs, policy_sa], "x/a", "y/b").allowed
    assert conn([*docs, policy_sa], "x/a", "y/a").allowed


def test_not_nets_excludes_sources() -> None:
    res = [
        *base(),
        np("p", "x", {"ingress": [{"action": "Allow", "source": {"notNets": ["198.18.2.0/24"]}}]}),
    ]
    assert not conn(res, "y/a", "x/a").allowed
    assert conn(res, "z/a", "x/a").allowed
    nets = [
        *base(),
        np(
            "p",
            "x",
            {"ingress": [{"action": "Allow", "source": {"nets": ["198.18.2.0/24", "198.18.3.1/32"]}}]},
        ),
    ]
    assert conn(nets, "y/c", "x/a").allowed and conn(nets, "z/a", "x/a").allowed
    assert not conn(nets, "z/b", "x/a").allowed


def test_not_ports_and_port_ranges() -> None:
    rule = {"action": "Allow", "protocol": "TCP", "destination": {"notPorts": [80]}}
    res = [*base(), np("p", "x", {"ingress": [rule]})]
    assert not conn(res, "y/a", "x/a", 80).allowed
    assert conn(res, "y/a", "x/a", 81).allowed
    ranged = [
        *base(),
        np(
            "p",
            "x",
            {"ingress": [{"action": "Allow", "protocol": "UDP", "destination": {"ports": ["79:80"]}}]},
        ),
    ]
    assert conn(ranged, "y/a", "x/a", 80, UDP).allowed
    assert not conn(ranged, "y/a", "x/a", 81, UDP).allowed
    assert not conn(ranged, "y/a", "x/a", 80, TCP).allowed


def test_named_ports_in_calico_rules_resolve_on_the_destination() -> None:
    egress = {
        "egress": [
            {
                "action": "Allow",
                "protocol": "TCP",
                "destination": {
                    "selector": "pod == 'b'",
                    "namespaceSelector": "all()",
                    "ports": ["serve-81-tcp"],
                },
            }
        ]
    }
    res = [*base(), np("p", "x", {"selector": "pod == 'a'", "types": ["Egress"], **egress})]
    assert conn(res, "x/a", "y/b", 81).allowed
    assert not conn(res, "x/a", "y/b", 80).allowed
    assert not conn(res, "x/a", "y/a", 81).allowed
    udp = [
        *base(),
        np(
            "p",
            "x",
            {"ingress": [{"action": "Allow", "protocol": "UDP", "destination": {"ports": ["serve-80-udp"]}}]},
        ),
    ]
    assert conn(udp, "y/a", "x/a", 80, UDP).allowed
    assert not conn(udp, "y/a", "x/a", 80, TCP).allowed
    not_named = [
        *base(),
        np(
            "p",
            "x",
            {
                "ingress": [
                    {"action": "Allow", "protocol": "TCP", "destination": {"notPorts": ["serve-80-tcp"]}}
                ]
            },
        ),
    ]
    assert not conn(not_named, "y/a", "x/a", 80).allowed
    assert conn(not_named, "y/a", "x/a", 81).allowed


def test_gnp_namespace_selector_limits_the_policy_to_matching_namespaces() -> None:
    labels = {"x": {"env": "prod"}, "z": {"env": "prod"}, "y": {"env": "dev"}}
    res = [
        *base(namespace_labels=labels),
        gnp("deny-prod-a", {"selector": "pod == 'a'", "namespaceSelector": "env == 'prod'", **DENY_ALL_IN}),
    ]
    assert not conn(res, "y/b", "x/a").allowed
    assert not conn(res, "y/b", "z/a").allowed
    assert conn(res, "x/b", "y/a").allowed
    assert conn(res, "y/b", "x/b").allowed


def test_gnp_namespace_selector_all_selects_every_namespaced_endpoint() -> None:
    res = [*base(), gnp("deny", {"namespaceSelector": "all()", **DENY_ALL_IN})]
    assert not conn(res, "x/a", "y/c").allowed


def test_do_not_track_and_pre_dnat_policies_do_not_apply_to_pods() -> None:
    untracked = gnp("untracked", {"doNotTrack": True, "applyOnForward": True, **DENY_ALL_IN})
    pre_dnat = gnp("pre-dnat", {"preDNAT": True, "applyOnForward": True, **DENY_ALL_IN})
    assert conn([*base(), untracked, pre_dnat], "y/a", "x/a").allowed


def test_a_policy_in_a_missing_tier_fails_closed_after_valid_tiers() -> None:
    only_y = {
        "ingress": [
            {"action": "Allow", "source": {"namespaceSelector": "kubernetes.io/metadata.name == 'y'"}}
        ]
    }
    res = [
        *base(),
        np("ghostly", "x", {"tier": "ghost", **only_y}),
        k8s_policy("allow-all", "x", {}, ingress=[{}]),
    ]
    states = compile_all(res)
    endpoint = next(s.endpoints["x/a"] for s in states.values() if "x/a" in s.endpoints)
    assert [(t.name, t.default_action) for t in endpoint.ingress] == [("default", "deny"), ("ghost", "deny")]
    assert conn(res, "x/b", "x/a").allowed  # the default tier allows first
    alone = [*base(), np("ghostly", "x", {"tier": "ghost", **only_y})]
    e = conn(alone, "z/a", "x/a")
    assert not e.allowed and decided(e) == "tier-default:ghost"
    assert conn(alone, "y/a", "x/a").allowed


def test_icmp_type_and_code() -> None:
    rule = {"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8, "code": 0}}
    res = [*base(), np("ping", "x", {"ingress": [rule]})]
    assert conn(res, "y/a", "x/a", 0, ICMP, icmp_type=8, icmp_code=0).allowed
    assert not conn(res, "y/a", "x/a", 0, ICMP, icmp_type=0, icmp_code=0).allowed
    not_icmp = [
        *base(),
        np("ping", "x", {"ingress": [{"action": "Allow", "protocol": "ICMP", "notICMP": {"type": 8}}]}),
    ]
    assert not conn(not_icmp, "y/a", "x/a", 0, ICMP, icmp_type=8).allowed
    assert conn(not_icmp, "y/a", "x/a", 0, ICMP, icmp_type=3).allowed


def test_not_protocol() -> None:
    res = [
        *base(),
        np("p", "x", {"ingress": [{"action": "Deny", "notProtocol": "TCP"}, {"action": "Allow"}]}),
    ]
    assert conn(res, "y/a", "x/a", 80, TCP).allowed
    assert not conn(res, "y/a", "x/a", 80, UDP).allowed


def test_ip_version_restricts_a_rule_to_one_family() -> None:
    v6_only = [*base(), np("p", "x", {"ingress": [{"action": "Allow", "ipVersion": 6}]})]
    assert not conn(v6_only, "y/a", "x/a").allowed
    v4_only = [*base(), np("p", "x", {"ingress": [{"action": "Allow", "ipVersion": 4}]})]
    assert conn(v4_only, "y/a", "x/a").allowed


def test_egress_and_ingress_are_both_checked_across_tiers() -> None:
    res = [
        *base(),
        tier("security", 1),
        gnp(
            "no-egress-from-y",
            {
                "tier": "security",
                "selector": "projectcalico.org/namespace == 'y'",
                "types": ["Egress"],
                "egress": [{"action": "Deny"}],
            },
        ),
    ]
    e = conn(res, "y/a", "x/a")
    assert not e.allowed and e.reason == "denied by egress"
    assert e.ingress is not None and e.ingress.allowed
    assert conn(res, "x/a", "y/a").allowed


def without_namespace(resources: list[Resource], name: str) -> list[Resource]:
    return [r for r in resources if not (r.kind == "Namespace" and r.metadata.name == name)]


def test_a_pod_whose_namespace_is_missing_has_a_missing_profile_that_denies() -> None:
    # Felix replaces an active profile it does not know (kns.<ns> of a missing Namespace) with
    # DummyDropRules: where the profile would decide, both directions are denied.
    res = without_namespace(base(), "y")
    into = conn(res, "x/a", "y/a")
    assert not into.allowed and into.reason == "denied by ingress"
    assert decided(into) == "tier-default:kns.y"
    out = conn(res, "y/a", "x/a")
    assert not out.allowed and out.reason == "denied by egress"
    assert conn(res, "x/a", "z/a").allowed  # pods of existing namespaces keep their allowing profile
    states = compile_all(res)
    endpoint = next(s.endpoints["y/a"] for s in states.values() if "y/a" in s.endpoints)
    assert [(t.name, t.policies, t.default_action) for t in endpoint.egress] == [("kns.y", (), "deny")]


def test_policies_still_decide_before_a_missing_profile_and_pass_reaches_it() -> None:
    res = without_namespace(base(), "y")
    allow = np("allow", "y", ALLOW_ALL_IN)
    e = conn([*res, allow], "x/a", "y/a")
    assert e.allowed and decided(e) == "default/NetworkPolicy/y/allow/ingress/0"
    passing = np("pass", "y", {"ingress": [{"action": "Pass"}]})
    e = conn([*res, passing], "x/a", "y/a")
    assert not e.allowed and decided(e) == "tier-default:kns.y"
    assert [s.tier for s in e.ingress.trace] == ["default", "kns.y"]  # type: ignore[union-attr]
    # It inherits no pcns. labels, so namespaceSelector peers no longer match it.
    y_out = np("out", "y", {"types": ["Egress"], "egress": [{"action": "Allow"}]})
    from_y = k8s_policy(
        "from-y",
        "x",
        {},
        ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}],
    )
    assert conn([*base(), y_out, from_y], "y/a", "x/a").allowed
    e = conn([*res, y_out, from_y], "y/a", "x/a")
    assert not e.allowed and e.reason == "denied by ingress"
