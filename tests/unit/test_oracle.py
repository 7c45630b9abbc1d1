"""The oracle's full recompute: which nodes, endpoints, policies and ip sets each node gets.

Checks that Node resources get (empty) states, that an endpoint program lists exactly the tiers
and policies selecting it per direction in Felix's order, that a node holds only the policies
selecting one of its endpoints and exactly the ip sets those reference with cluster-wide members,
that policies Kaliko cannot normalise are treated as absent, and that the result does not
depend on the order resources are listed in.
"""

from __future__ import annotations

import random
from typing import Any

from netpol_cluster import cluster, k8s_policy, pod_ip

from policycore.calc.lowering import selector_set
from policycore.calc.normalize import normalize_policy
from policycore.calc.oracle import compile_all
from policycore.ir import canonical_json
from policycore.model import Resource, parse_resource
from policycore.model.calico import EntityRule, ServiceAccountMatch

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


def where(states: dict[str, Any], key: str) -> str:
    return next(node for node, s in states.items() if key in s.endpoints)


def test_every_node_gets_a_state_and_every_endpoint_lands_on_its_node() -> None:
    extra = parse_resource({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "idle"}})
    states = compile_all([*cluster(["x/a", "x/b", "y/a"]), extra])
    assert set(states) == {"node-1", "node-2", "idle"}
    assert states["idle"].endpoints == {} and states["idle"].policies == {} and states["idle"].ipsets == {}
    assert sorted(k for s in states.values() for k in s.endpoints) == ["x/a", "x/b", "y/a"]
    program = states[where(states, "x/b")].endpoints["x/b"]
    assert program.ips == (pod_ip("x/b"),) and program.ingress == () and program.egress == ()


def test_endpoint_tiers_and_policy_order_per_direction() -> None:
    tier = parse_resource(
        {
            "apiVersion": API,
            "kind": "Tier",
            "metadata": {"name": "sec"},
            "spec": {"order": 10, "defaultAction": "Pass"},
        }
    )
    res = [
        *cluster(["x/a", "x/b"]),
        tier,
        np("late", "x", {"ingress": [{"action": "Allow"}]}),
        np("early", "x", {"order": 1, "types": ["Ingress", "Egress"], "ingress": [{"action": "Allow"}]}),
        np(
            "sec",
            "x",
            {"tier": "sec", "selector": "pod == 'a'", "types": ["Egress"], "egress": [{"action": "Pass"}]},
        ),
        k8s_policy("k", "x", {}, ingress=[{}]),
    ]
    states = compile_all(res)
    a = states[where(states, "x/a")].endpoints["x/a"]
    assert [(t.name, t.policies, t.default_action) for t in a.ingress] == [
        (
            "default",
            (
                "default/NetworkPolicy/x/early",
                "default/KubernetesNetworkPolicy/x/k",
                "default/NetworkPolicy/x/late",
            ),
            "deny",
        )
    ]
    assert [(t.name, t.policies, t.default_action) for t in a.egress] == [
        ("sec", ("sec/NetworkPolicy/x/sec",), "pass"),
        ("default", ("default/NetworkPolicy/x/early",), "deny"),
    ]
    b = states[where(states, "x/b")].endpoints["x/b"]
    assert [t.name for t in b.egress] == ["default"]


def test_nodes_hold_only_policies_for_local_endpoints_and_exactly_their_ip_sets() -> None:
    # x/a and y/a land on different nodes; the policy selects only x/a, its rule selects y pods.
    rule = {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}
    res = [
        *cluster(["x/a", "y/a", "y/b"]),
        k8s_policy("from-y", "x", {"matchLabels": {"pod": "a"}}, ingress=[rule]),
    ]
    states = compile_all(res)
    home = where(states, "x/a")
    other = next(n for n in states if n != home)
    assert set(states[home].policies) == {"default/KubernetesNetworkPolicy/x/from-y"}
    assert states[other].policies == {} and states[other].ipsets == {}
    refs = states[home].policies["default/KubernetesNetworkPolicy/x/from-y"].ipset_refs()
    assert set(states[home].ipsets) == refs and len(refs) == 1
    (ipset,) = states[home].ipsets.values()
    assert ipset.kind == "ip" and ipset.members == {pod_ip("y/a"), pod_ip("y/b")}
    policy = normalize_policy(res[-1])  # type: ignore[arg-type]
    assert ipset.set_id == selector_set(policy.ingress[0].source.selector).set_id  # type: ignore[arg-type]


def test_unnormalisable_policies_are_treated_as_absent() -> None:
    # Validation rejects such names; a policy that slipped past it must still be treated as absent.
    good = np("bad", "x", {"ingress": [{"action": "Deny", "source": {"serviceAccounts": {"names": ["ok"]}}}]})
    accounts = ServiceAccountMatch.model_construct(names=["it's"], selector="")
    source = EntityRule().model_copy(update={"service_accounts": accounts})
    rule = good.spec.ingress[0].model_copy(update={"source": source})  # type: ignore[union-attr]
    bad = good.model_copy(update={"spec": good.spec.model_copy(update={"ingress": [rule]})})  # type: ignore[union-attr]
    states = compile_all([*cluster(["x/a"]), bad])
    assert all(s.policies == {} for s in states.values())


def test_result_does_not_depend_on_resource_order() -> None:
    res = [
        *cluster(),
        k8s_policy("a", "x", {}, ingress=[{"from": [{"podSelector": {}}]}], egress=[]),
        np(
            "b",
            "y",
            {
                "order": 3,
                "ingress": [
                    {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["serve-80-tcp"]}}
                ],
            },
        ),
    ]
    expected = {n: canonical_json(s) for n, s in compile_all(res).items()}
    rng = random.Random(7)
    for _ in range(5):
        shuffled = res[:]
        rng.shuffle(shuffled)
        assert {n: canonical_json(s) for n, s in compile_all(shuffled).items()} == expected
