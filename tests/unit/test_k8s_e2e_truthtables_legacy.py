"""The legacy Kubernetes netpol e2e suite (``network_legacy.go``): server pods, short-lived clients.

Each test is one ``ginkgo.It`` of ``NetworkPolicyLegacy``: a server pod ``server`` (label
``pod-name=server``, TCP ports 80 and 81 named ``serve-80``/``serve-81``) in namespace ``a``
(the framework's namespace, without an ``ns-name`` label), extra namespaces created with
``ns-name=<name>``, and client pods labelled ``pod-name=<client>`` that exist only for their own
probe, exactly as ``testCanConnect`` / ``testCannotConnect`` create them. Each probe compiles the
cluster with that client present and checks `connection_allowed` from the client to the server.
"""

from __future__ import annotations

from typing import Any

from policycore.calc.oracle import compile_all
from policycore.evaluate import Peer, connection_allowed
from policycore.model import Resource, parse_resource

Server = tuple[str, str, tuple[int, ...]]  # namespace, name, ports
DEFAULT_SERVERS: tuple[Server, ...] = (("a", "server", (80, 81)),)


class Legacy:
    """The legacy model: namespaces with labels, server pods, and one client per probe."""

    def __init__(
        self,
        namespaces: dict[str, dict[str, str]] | None = None,
        servers: tuple[Server, ...] = DEFAULT_SERVERS,
    ) -> None:
        self.namespaces = {"a": {}, **(namespaces or {})}
        self.servers = list(servers)
        self.policies: dict[tuple[str, str], Resource] = {}
        self.pod_labels: dict[tuple[str, str], dict[str, str]] = {}

    def policy(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        """Create or update (same namespace and name) a policy."""
        doc = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
        self.policies[(namespace, name)] = parse_resource(doc)

    def _pod(self, namespace: str, name: str, ports: tuple[int, ...], index: int) -> Resource:
        labels = self.pod_labels.get((namespace, name), {"pod-name": name})
        containers = [
            {"name": f"{name}-container-{p}", "ports": [{"name": f"serve-{p}", "containerPort": p}]}
            for p in ports
        ]
        return parse_resource(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": {"nodeName": f"node-{index % 2}", "containers": containers},
                "status": {"podIP": f"198.18.9.{index + 1}"},
            }
        )

    def can_connect(
        self, namespace: str, client: str, port: int, server: tuple[str, str] = ("a", "server")
    ) -> bool:
        docs = [
            parse_resource(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": labels}}
            )
            for n, labels in self.namespaces.items()
        ]
        pods = [self._pod(ns, name, ports, i) for i, (ns, name, ports) in enumerate(self.servers)]
        pods.append(self._pod(namespace, client, (), len(pods)))
        states = compile_all([*docs, *pods, *self.policies.values()])
        by_key = {f"{p.metadata.namespace}/{p.metadata.name}": p for p in pods}
        src, dst = by_key[f"{namespace}/{client}"], by_key[f"{server[0]}/{server[1]}"]
        return connection_allowed(
            states,
            Peer(src.ips()[0], f"{namespace}/{client}", src.spec.node_name),
            Peer(dst.ips()[0], f"{server[0]}/{server[1]}", dst.spec.node_name),
            6,
            port,
        ).allowed


SERVER = {"matchLabels": {"pod-name": "server"}}


def pods(name: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": {"pod-name": name}}}


def ns_name(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"ns-name": name}}}


def test_default_deny_ingress() -> None:
    m = Legacy()
    m.policy("a", "deny-ingress", {"podSelector": {}, "ingress": []})
    assert not m.can_connect("a", "client-cannot-connect", 80)


def test_default_deny_all() -> None:
    m = Legacy({"b": {"ns-name": "b"}}, (*DEFAULT_SERVERS, ("b", "pod-b", (80, 81))))
    assert m.can_connect("a", "client-a", 80, ("b", "pod-b"))
    m.policy(
        "a",
        "default-deny-all",
        {"podSelector": {}, "policyTypes": ["Egress", "Ingress"], "ingress": [], "egress": []},
    )
    assert not m.can_connect("a", "client-to-a", 80)
    assert not m.can_connect("a", "client-to-b", 80, ("b", "pod-b"))


def test_allow_from_pods_within_server_namespace_by_pod_selector() -> None:
    m = Legacy({"b": {"ns-name": "b"}})
    assert (
        m.can_connect("a", "client-a", 80)
        and m.can_connect("a", "client-b", 80)
        and m.can_connect("b", "client-a", 80)
    )
    m.policy(
        "a",
        "allow-client-a-via-pod-selector",
        {"podSelector": SERVER, "ingress": [{"from": [pods("client-a")]}]},
    )
    assert m.can_connect("a", "client-a", 80)
    assert not m.can_connect("a", "client-b", 80)
    assert not m.can_connect("b", "client-a", 80)


def test_allow_only_from_a_different_namespace_by_namespace_selector() -> None:
    m = Legacy({"b": {"ns-name": "b"}})
    m.policy(
        "a",
        "allow-ns-b-via-namespace-selector",
        {"podSelector": SERVER, "ingress": [{"from": [ns_name("b")]}]},
    )
    assert not m.can_connect("a", "client-a", 80)
    assert m.can_connect("b", "client-b", 80)


def test_pod_selector_with_match_expressions() -> None:
    m = Legacy()
    peer = {
        "podSelector": {"matchExpressions": [{"key": "pod-name", "operator": "In", "values": ["client-a"]}]}
    }
    m.policy(
        "a",
        "allow-client-a-via-pod-selector-with-match-expressions",
        {"podSelector": SERVER, "ingress": [{"from": [peer]}]},
    )
    assert m.can_connect("a", "client-a", 80)
    assert not m.can_connect("a", "client-b", 80)


def test_namespace_selector_with_match_expressions() -> None:
    m = Legacy({"b": {"ns-name": "b"}, "c": {"ns-name": "c"}})
    peer = {
        "namespaceSelector": {"matchExpressions": [{"key": "ns-name", "operator": "NotIn", "values": ["c"]}]}
    }
    m.policy("a", "allow-any-ns-different-than-ns-a", {"podSelector": SERVER, "ingress": [{"from": [peer]}]})
    assert not m.can_connect("c", "client-a", 80)
    assert m.can_connect("b", "client-a", 80)


def test_pod_selector_or_namespace_selector() -> None:
    m = Legacy({"b": {"ns-name": "b"}})
    m.policy(
        "a",
        "allow-ns-b-or-client-b",
        {"podSelector": SERVER, "ingress": [{"from": [pods("client-b"), ns_name("b")]}]},
    )
    assert m.can_connect("b", "client-a", 80)
    assert m.can_connect("a", "client-b", 80)
    assert not m.can_connect("a", "client-c", 80)


def test_pod_selector_and_namespace_selector() -> None:
    m = Legacy({"b": {"ns-name": "b"}})
    m.policy(
        "a",
        "allow-client-b-in-ns-b",
        {"podSelector": SERVER, "ingress": [{"from": [{**pods("client-b"), **ns_name("b")}]}]},
    )
    assert not m.can_connect("b", "client-a", 80)
    assert not m.can_connect("a", "client-b", 80)
    assert m.can_connect("b", "client-b", 80)


def test_only_from_a_pod_in_a_different_namespace() -> None:
    m = Legacy({"b": {"ns-name": "b"}})
    for ns in ("a", "b"):
        for client in ("client-a", "client-b"):
            assert m.can_connect(ns, client, 80)
    m.policy(
        "a",
        "allow-ns-b-client-a",
        {"podSelector": SERVER, "ingress": [{"from": [{**ns_name("b"), **pods("client-a")}]}]},
    )
    assert not m.can_connect("a", "client-a", 80)
    assert not m.can_connect("a", "client-b", 80)
    assert m.can_connect("b", "client-a", 80)
    assert not m.can_connect("b", "client-b", 80)


def test_policy_based_on_ports() -> None:
    m = Legacy()
    m.policy("a", "allow-ingress-on-port-81", {"podSelector": SERVER, "ingress": [{"ports": [{"port": 81}]}]})
    assert not m.can_connect("a", "client-a", 80)
    assert m.can_connect("a", "client-b", 81)


def test_multiple_stacked_policies_with_overlapping_pod_selectors() -> None:
    m = Legacy()
    m.policy("a", "allow-ingress-on-port-80", {"podSelector": SERVER, "ingress": [{"ports": [{"port": 80}]}]})
    m.policy("a", "allow-ingress-on-port-81", {"podSelector": SERVER, "ingress": [{"ports": [{"port": 81}]}]})
    assert m.can_connect("a", "client-a", 80)
    assert m.can_connect("a", "client-b", 81)


def test_allow_all_policy() -> None:
    m = Legacy()
    m.policy("a", "allow-all", {"podSelector": {"matchLabels": {}}, "ingress": [{}]})
    assert m.can_connect("a", "client-a", 80)
    assert m.can_connect("a", "client-b", 81)


def test_allow_ingress_on_one_named_port() -> None:
    m = Legacy()
    m.policy(
        "a",
        "allow-client-a-via-named-port",
        {"podSelector": SERVER, "ingress": [{"ports": [{"port": "serve-80"}]}]},
    )
    assert m.can_connect("a", "client-a", 80)
    assert not m.can_connect("a", "client-b", 81)


def test_allow_ingress_from_namespace_on_one_named_port() -> None:
    m = Legacy({"b": {"ns-name": "b"}})
    rule = {"from": [ns_name("b")], "ports": [{"port": "serve-80"}]}
    m.policy("a", "allow-client-in-ns-b-via-named-port", {"podSelector": SERVER, "ingress": [rule]})
    assert not m.can_connect("a", "client-a", 80)
    assert m.can_connect("b", "client-b", 80)


def test_allow_egress_on_one_named_port() -> None:
    m = Legacy()
    spec = {
        "podSelector": {"matchLabels": {"pod-name": "client-a"}},
        "egress": [{"ports": [{"port": "serve-80"}]}],
    }
    m.policy("a", "allow-client-a-via-named-port-egress-rule", spec)
    assert m.can_connect("a", "client-a", 80)
    assert not m.can_connect("a", "client-a", 81)


def test_enforce_updated_policy() -> None:
    m = Legacy()
    m.policy(
        "a",
        "allow-ingress",
        {"podSelector": SERVER, "ingress": [{"from": [pods("client-a")], "ports": [{"port": 80}]}]},
    )
    assert m.can_connect("a", "client-a", 80)
    assert not m.can_connect("a", "client-b", 80)
    assert not m.can_connect("a", "client-a", 81)
    m.policy(
        "a",
        "allow-ingress",
        {"podSelector": SERVER, "ingress": [{"from": [pods("client-b")], "ports": [{"port": 81}]}]},
    )
    assert not m.can_connect("a", "client-b", 80)
    assert not m.can_connect("a", "client-a", 80)
    assert m.can_connect("a", "client-b", 81)


def test_allow_ingress_from_updated_namespace() -> None:
    m = Legacy({"b": {"ns-name": "b"}})
    m.policy(
        "a",
        "allow-ns-b-via-namespace-selector",
        {"podSelector": SERVER, "ingress": [{"from": [ns_name("b-updated")]}]},
    )
    assert not m.can_connect("b", "client-a", 80)
    m.namespaces["b"] = {"ns-name": "b-updated"}
    assert m.can_connect("b", "client-b", 80)


def test_allow_ingress_from_updated_pod() -> None:
    m = Legacy()
    peer = {"podSelector": {"matchExpressions": [{"key": "pod-name", "operator": "DoesNotExist"}]}}
    m.policy("a", "allow-pod-b-via-pod-selector", {"podSelector": SERVER, "ingress": [{"from": [peer]}]})
    assert not m.can_connect("a", "client-a", 80)
    m.pod_labels[("a", "client-a")] = {}
    assert m.can_connect("a", "client-a", 80)


def test_deny_ingress_access_to_updated_pod() -> None:
    m = Legacy()
    selector = {
        "matchLabels": {"pod-name": "server"},
        "matchExpressions": [{"key": "isolated", "operator": "Exists"}],
    }
    m.policy(
        "a",
        "deny-ingress-via-isolated-label-selector",
        {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": []},
    )
    assert m.can_connect("a", "client-a", 80)
    m.pod_labels[("a", "server")] = {"pod-name": "server", "isolated": ""}
    assert not m.can_connect("a", "client-a", 80)


def test_ingress_and_egress_specified_together() -> None:
    m = Legacy({"b": {"ns-name": "b"}}, (*DEFAULT_SERVERS, ("b", "pod-b", (80, 81))))
    spec = {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [ns_name("b")], "ports": [{"port": 80}]}],
        "egress": [{"to": [ns_name("b")], "ports": [{"port": 80}]}],
    }
    m.policy("a", "ingress-egress-rule", spec)
    assert m.can_connect("a", "client-a", 80, ("b", "pod-b"))
    assert m.can_connect("b", "client-b", 80)
    assert not m.can_connect("a", "client-a", 81, ("b", "pod-b"))
    assert not m.can_connect("b", "client-b", 81)


def test_egress_to_a_server_in_a_different_namespace() -> None:
    servers = (*DEFAULT_SERVERS, ("b", "ns-b-server-a", (80,)), ("b", "ns-b-server-b", (80,)))
    m = Legacy({"b": {"ns-name": "b"}}, servers)
    spec = {
        "podSelector": {"matchLabels": {"pod-name": "client-a"}},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{**ns_name("b"), **pods("ns-b-server-a")}]}],
    }
    m.policy("a", "allow-to-ns-b-server-a-via-namespace-selector", spec)
    assert m.can_connect("a", "client-a", 80, ("b", "ns-b-server-a"))
    assert not m.can_connect("a", "client-a", 80, ("b", "ns-b-server-b"))
    assert not m.can_connect("a", "client-a", 80)


def test_multiple_ingress_policies_with_allow_all_taking_precedence() -> None:
    m = Legacy()
    m.policy(
        "a",
        "allow-from-client-b-pod-selector",
        {"podSelector": SERVER, "policyTypes": ["Ingress"], "ingress": [{"from": [pods("client-b")]}]},
    )
    assert not m.can_connect("a", "client-a", 80)
    assert m.can_connect("a", "client-b", 80)
    m.policy(
        "a", "allow-all", {"podSelector": {"matchLabels": {}}, "policyTypes": ["Ingress"], "ingress": [{}]}
    )
    assert m.can_connect("a", "client-a", 80)
