"""Test support: resource builders and the library of datastore states the graph tests replay.

Each state is a whole datastore (a list of resources); `SCENARIO` is an ordered list of states
that together exercise every input the graph reads: namespace labels (and their change), pods
appearing, moving node, changing IP, labels or named ports, finishing; nodes with and without
pods; Kubernetes policies with pod/namespace selectors, ipBlocks, named and numeric ports, both
directions; Calico NetworkPolicies and GlobalNetworkPolicies in several tiers (including one with
no Tier resource), Pass/Log/Deny rules, notSelector, service accounts, doNotTrack; a policy moving
tier or changing order and types only; shared selectors (one set for two policies) and two pods
with one IP.
"""

from __future__ import annotations

from typing import Any

from policycore.model import Resource, parse_resource

CALICO = "projectcalico.org/v3"


def namespace(name: str, **labels: str) -> Resource:
    return parse_resource(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    )


def node(name: str) -> Resource:
    return parse_resource({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})


def pod(
    ns: str,
    name: str,
    *,
    on: str | None = "n1",
    ip: str | None = "198.18.0.1",
    labels: dict[str, str] | None = None,
    ports: tuple[tuple[str, int, str], ...] = (),
    phase: str = "Running",
    account: str = "default",
) -> Resource:
    spec: dict[str, Any] = {
        "serviceAccountName": account,
        "containers": [
            {
                "name": "main",
                "ports": [{"name": n, "containerPort": p, "protocol": proto} for n, p, proto in ports],
            }
        ],
    }
    if on is not None:
        spec["nodeName"] = on
    status: dict[str, Any] = {"phase": phase}
    if ip is not None:
        status["podIP"] = ip
    doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": spec,
        "status": status,
    }
    return parse_resource(doc)


def knp(ns: str, name: str, **spec: Any) -> Resource:
    spec.setdefault("podSelector", {})
    doc = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
    }
    return parse_resource({**doc, "spec": spec})


def cnp(ns: str, name: str, **spec: Any) -> Resource:
    doc = {"apiVersion": CALICO, "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns}}
    return parse_resource({**doc, "spec": spec})


def gnp(name: str, **spec: Any) -> Resource:
    return parse_resource(
        {"apiVersion": CALICO, "kind": "GlobalNetworkPolicy", "metadata": {"name": name}, "spec": spec}
    )


def tier(name: str, order: float | None, default_action: str = "Deny") -> Resource:
    spec: dict[str, Any] = {"defaultAction": default_action}
    if order is not None:
        spec["order"] = order
    return parse_resource({"apiVersion": CALICO, "kind": "Tier", "metadata": {"name": name}, "spec": spec})


def labels(app: str, **more: str) -> dict[str, str]:
    return {"app": app, **more}


HTTP = (("http", 80, "TCP"), ("metrics", 9090, "TCP"))
SQL = (("sql", 5432, "TCP"), ("dns", 53, "UDP"))

BASE: list[Resource] = [
    namespace("prod", team="a"),
    namespace("dev", team="b"),
    node("n1"),
    node("n2"),
    pod("prod", "web-1", on="n1", ip="198.18.1.1", labels=labels("web"), ports=HTTP),
    pod("prod", "web-2", on="n2", ip="198.18.1.2", labels=labels("web"), ports=HTTP),
    pod("prod", "client", on="n1", ip="198.18.1.3", labels=labels("client")),
    pod("dev", "client", on="n2", ip="198.18.2.1", labels=labels("client"), account="tester"),
    pod("dev", "db", on="n3", ip="198.18.2.2", labels=labels("db"), ports=SQL),
]

ALLOW_CLIENT = knp(
    "prod",
    "allow-client",
    podSelector={"matchLabels": {"app": "web"}},
    ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": 80}]}],
)
FROM_TEAM_B = knp(
    "prod",
    "from-team-b",
    podSelector={"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "client"]}]},
    policyTypes=["Ingress", "Egress"],
    ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}], "ports": [{"port": "http"}]}],
    egress=[
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]},
        {
            "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "db"}}}],
            "ports": [{"port": "sql"}],
        },
    ],
)
DENY_ALL_DEV = knp("dev", "deny-all", policyTypes=["Ingress", "Egress"])
SECURITY = tier("security", 100, "Pass")
SECURITY_CNP = cnp(
    "prod",
    "guard",
    tier="security",
    order=10,
    selector="app == 'web'",
    ingress=[
        {"action": "Deny", "source": {"notSelector": "has(app)"}},
        {"action": "Log", "protocol": "TCP", "destination": {"ports": [9090, "8000:8080"]}},
        {"action": "Pass", "source": {"selector": "app == 'client'", "namespaceSelector": "all()"}},
    ],
)
GLOBAL_EGRESS = gnp(
    "team-a-egress",
    order=500,
    selector="app == 'web'",
    namespaceSelector="team == 'a'",
    egress=[
        {
            "action": "Allow",
            "protocol": "TCP",
            "destination": {"selector": "app == 'db'", "ports": ["sql", 5432]},
        },
        {"action": "Allow", "protocol": "UDP", "destination": {"nets": ["198.18.0.0/16"], "ports": ["dns"]}},
        {"action": "Deny"},
    ],
)
SERVICE_ACCOUNTS = gnp(
    "testers",
    selector="has(app)",
    serviceAccountSelector="",
    ingress=[{"action": "Allow", "source": {"serviceAccounts": {"names": ["tester"]}}}],
)
UNTRACKED = gnp(
    "untracked", selector="all()", doNotTrack=True, applyOnForward=True, ingress=[{"action": "Deny"}]
)
ORPHAN_TIER_CNP = cnp("dev", "orphan", tier="missing", selector="app == 'db'", ingress=[{"action": "Allow"}])

SCENARIO: list[list[Resource]] = [
    BASE,
    [*BASE, ALLOW_CLIENT],
    [*BASE, ALLOW_CLIENT, FROM_TEAM_B, DENY_ALL_DEV],
    # dev joins team a: the namespaceSelector peer loses its members, the GNP gains a namespace
    [*BASE[2:], namespace("prod", team="a"), namespace("dev", team="a"), FROM_TEAM_B, GLOBAL_EGRESS],
    [*BASE, SECURITY, SECURITY_CNP, GLOBAL_EGRESS, SERVICE_ACCOUNTS, UNTRACKED, ORPHAN_TIER_CNP],
    # the same policies re-ordered and re-typed, selectors unchanged
    [
        *BASE,
        SECURITY,
        SECURITY_CNP,
        ORPHAN_TIER_CNP,
        gnp(
            "team-a-egress",
            order=5,
            selector="app == 'web'",
            namespaceSelector="team == 'a'",
            types=["Ingress"],
        ),
        gnp("testers", order=2000, selector="has(app)", ingress=[{"action": "Allow"}]),
        cnp("prod", "early", order=1, selector="app == 'web'", ingress=[{"action": "Log"}]),
    ],
    # the tier moves before everything and stops passing; the guard policy moves to tier default
    [
        *BASE,
        tier("security", 1, "Deny"),
        cnp("prod", "guard", order=10, selector="app == 'web'", ingress=[{"action": "Allow"}]),
        GLOBAL_EGRESS,
        ORPHAN_TIER_CNP,
    ],
    # pods move node, change IP, labels and ports, finish, lose their node; two pods share an IP
    [
        *BASE[:4],
        pod("prod", "web-1", on="n2", ip="198.18.1.9", labels=labels("web"), ports=HTTP[:1]),
        pod("prod", "web-2", on="n2", ip="198.18.1.2", labels=labels("client"), ports=HTTP),
        pod("prod", "client", on=None, ip=None, labels=labels("client")),
        pod("dev", "client", on="n1", ip="198.18.1.9", labels=labels("client")),
        pod("dev", "db", on="n3", ip="198.18.2.2", labels=labels("db"), ports=SQL, phase="Succeeded"),
        ALLOW_CLIENT,
        FROM_TEAM_B,
        GLOBAL_EGRESS,
    ],
    # a namespace disappears under its pods; a policy of its namespace stays
    [*[r for r in BASE if r is not BASE[1]], node("n4"), DENY_ALL_DEV, FROM_TEAM_B, SERVICE_ACCOUNTS],
    # two policies share a rule selector (one set), one selects nothing
    [
        *BASE,
        knp("prod", "a", ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]),
        knp(
            "prod",
            "b",
            podSelector={"matchLabels": {"app": "web"}},
            ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
        ),
        knp("prod", "nobody", podSelector={"matchLabels": {"app": "ghost"}}, ingress=[{}]),
    ],
]
