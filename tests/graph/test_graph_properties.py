"""Hypothesis: any sequence of datastore updates, flushed at any points, keeps the graph equal to the oracle.

Proves, over random namespaces (labels, presence), nodes, pods (node, IP collisions, labels,
named ports, service account, phase) and policies of all three kinds (pod/namespace selectors,
ipBlocks, named and numeric ports, actions, notSelector, tiers with and without a Tier resource,
orders, doNotTrack) updated and deleted in random order: after every flush each node's state
rebuilt from the diffs alone equals `compile_all` (see `graph_replay.Checker`), and at the end the
verdicts of `policycore.evaluate.connection_allowed` for every pod pair agree with the oracle's.
"""

from __future__ import annotations

from typing import Any

from graph_replay import Checker
from graph_states import cnp, gnp, knp, namespace, node, pod, tier
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policycore.calc.oracle import compile_all
from policycore.evaluate import Peer, connection_allowed
from policycore.model import Resource
from policycore.model.resources import ResourceKey, key_of

Update = tuple[ResourceKey, Resource | None]
NAMESPACES = ("a", "b")
IPS = ("198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4", "198.18.0.5")
PORTS = (("http", 80, "TCP"), ("dns", 53, "UDP"), ("http", 8080, "TCP"))
APPS = ("web", "db")
SELECTORS = (
    "",
    "app == 'web'",
    "app == 'db'",
    "has(role)",
    "!has(app)",
    "app in {'web', 'db'} && role == 'x'",
)

maybe = st.booleans()


def _absent(key: ResourceKey) -> st.SearchStrategy[Update]:
    return st.just((key, None))


@st.composite
def pods(draw: st.DrawFn) -> Update:
    ns, name = draw(st.sampled_from(NAMESPACES)), draw(st.sampled_from(("p0", "p1", "p2", "p3")))
    if draw(st.integers(0, 7)) == 0:
        return ResourceKey("Pod", ns, name), None
    labels = {"app": draw(st.sampled_from(APPS))} if draw(maybe) else {}
    if draw(maybe):
        labels["role"] = "x"
    value = pod(
        ns,
        name,
        on=draw(st.sampled_from(("n1", "n2", "n3", "n1", "n2", None))),
        ip=draw(st.sampled_from((*IPS, None))),
        labels=labels,
        ports=tuple(draw(st.lists(st.sampled_from(PORTS), max_size=2, unique_by=lambda p: p[0]))),
        phase=draw(st.sampled_from(("Running",) * 5 + ("Succeeded",))),
        account=draw(st.sampled_from(("default", "bot"))),
    )
    return key_of(value), value


@st.composite
def namespaces(draw: st.DrawFn) -> Update:
    name = draw(st.sampled_from(NAMESPACES))
    if draw(st.integers(0, 3)) == 0:
        return ResourceKey("Namespace", "", name), None
    value = namespace(name, **({"team": draw(st.sampled_from(("x", "y")))} if draw(maybe) else {}))
    return key_of(value), value


@st.composite
def nodes(draw: st.DrawFn) -> Update:
    name = draw(st.sampled_from(("n1", "n2", "n4")))
    return (ResourceKey("Node", "", name), None) if draw(maybe) else (key_of(node(name)), node(name))


@st.composite
def tiers(draw: st.DrawFn) -> Update:
    if draw(maybe):
        return ResourceKey("Tier", "", "t1"), None
    value = tier(
        "t1", draw(st.sampled_from((None, 10.0, 2_000_000.0))), draw(st.sampled_from(("Deny", "Pass")))
    )
    return key_of(value), value


def _k8s_peer(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return {"podSelector": {"matchLabels": {"app": draw(st.sampled_from(APPS))}}}
    if kind == 1:
        return {"namespaceSelector": {"matchLabels": {"team": draw(st.sampled_from(("x", "y")))}}}
    if kind == 2:
        return {
            "namespaceSelector": {},
            "podSelector": {"matchExpressions": [{"key": "role", "operator": "Exists"}]},
        }
    return {"ipBlock": {"cidr": "198.18.0.0/24", "except": ["198.18.0.4/30"]}}


def _k8s_ports(draw: st.DrawFn) -> list[dict[str, Any]]:
    options = (
        {"port": 80},
        {"port": "http"},
        {"port": "dns", "protocol": "UDP"},
        {"port": 8000, "endPort": 8080},
    )
    return [dict(p) for p in draw(st.lists(st.sampled_from(options), max_size=2))]


def _k8s_rules(draw: st.DrawFn, peer_field: str) -> list[dict[str, Any]]:
    rules = []
    for _ in range(draw(st.integers(0, 2))):
        rule: dict[str, Any] = {"ports": _k8s_ports(draw)}
        if draw(maybe):
            rule[peer_field] = [_k8s_peer(draw) for _ in range(draw(st.integers(1, 2)))]
        rules.append(rule)
    return rules


def _calico_rule(draw: st.DrawFn, namespaced: bool) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": draw(st.sampled_from(("Allow", "Deny", "Pass", "Log")))}
    side: dict[str, Any] = {}
    if draw(maybe):
        side["selector"] = draw(st.sampled_from(SELECTORS[1:]))
    if draw(maybe):
        side["notSelector"] = draw(st.sampled_from(SELECTORS[1:]))
    if draw(maybe):
        side["namespaceSelector"] = draw(
            st.sampled_from(("all()", "team == 'x'", "global()" if namespaced else "all()"))
        )
    if draw(maybe):
        rule["protocol"] = draw(st.sampled_from(("TCP", "UDP")))
        side_ports = draw(st.lists(st.sampled_from((80, "http", "dns", "8000:8080")), min_size=1, max_size=2))
        rule["destination"] = {"ports": side_ports}
    rule["source" if draw(maybe) else "destination"] = {**rule.get("destination", {}), **side}
    return rule


@st.composite
def policies(draw: st.DrawFn) -> Update:
    kind = draw(st.sampled_from(("knp", "cnp", "gnp")))
    ns = draw(st.sampled_from(NAMESPACES))
    name = draw(st.sampled_from(("p", "q")))
    if kind == "knp":
        if draw(st.integers(0, 5)) == 0:
            return ResourceKey("KubernetesNetworkPolicy", ns, name), None
        spec: dict[str, Any] = {
            "podSelector": draw(
                st.sampled_from(({}, {"matchLabels": {"app": "web"}}, {"matchLabels": {"app": "db"}}))
            )
        }
        if draw(maybe):
            spec["policyTypes"] = draw(st.sampled_from((["Ingress"], ["Egress"], ["Ingress", "Egress"])))
        spec["ingress"] = _k8s_rules(draw, "from")
        spec["egress"] = _k8s_rules(draw, "to")
        value = knp(ns, name, **spec)
        return key_of(value), value
    key = (
        ResourceKey("NetworkPolicy", ns, name)
        if kind == "cnp"
        else ResourceKey("GlobalNetworkPolicy", "", name)
    )
    if draw(st.integers(0, 5)) == 0:
        return key, None
    calico: dict[str, Any] = {
        "tier": draw(st.sampled_from(("default", "t1", "t2"))),
        "selector": draw(st.sampled_from(SELECTORS)),
        "ingress": [_calico_rule(draw, kind == "cnp") for _ in range(draw(st.integers(0, 2)))],
        "egress": [_calico_rule(draw, kind == "cnp") for _ in range(draw(st.integers(0, 2)))],
    }
    if draw(maybe):
        calico["order"] = draw(st.sampled_from((1, 5, 1000, 2.5)))
    if draw(maybe):
        calico["types"] = draw(st.sampled_from((["Ingress"], ["Egress"], ["Ingress", "Egress"])))
    if kind == "cnp":
        value = cnp(ns, name, **calico)
    else:
        if draw(maybe):
            calico["namespaceSelector"] = draw(st.sampled_from(("team == 'x'", "all()", "has(team)")))
        if draw(st.integers(0, 5)) == 0:
            calico.update(doNotTrack=True, applyOnForward=True)
        value = gnp(name, **calico)
    return key_of(value), value


updates = st.one_of(
    pods(), pods(), pods(), namespaces(), nodes(), tiers(), policies(), policies(), policies()
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(pods(), policies(), namespaces()), min_size=6, max_size=16),
    st.lists(st.tuples(updates, st.integers(0, 4)), min_size=5, max_size=60),
)
def test_random_updates_keep_the_graph_equal_to_the_oracle(
    population: list[Update], steps: list[tuple[Update, int]]
) -> None:
    checker = Checker()
    for key, value in population:
        checker.update(key, value)
    for (key, value), flush_after in steps:
        checker.update(key, value)
        if flush_after == 0:
            checker.flush()
    checker.flush()
    checker.resend_all()
    oracle = compile_all(checker.current.values())
    peers = [
        Peer(ep.ips[0], key, node)
        for node, state in sorted(checker.states.items())
        for key, ep in sorted(state.endpoints.items())
    ]
    for src in peers:
        for dst in peers:
            for protocol, port in ((6, 80), (17, 53)):
                ours = connection_allowed(checker.states, src, dst, protocol, port)
                theirs = connection_allowed(oracle, src, dst, protocol, port)
                assert (ours.allowed, ours.reason) == (theirs.allowed, theirs.reason)
