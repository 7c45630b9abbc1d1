"""The validator on Kubernetes kinds: NetworkPolicy, Namespace, Pod, Service, Node."""

from __future__ import annotations

from typing import Any

import pytest

from policycore.model import ValidationFailed, key_of, parse_resource
from policycore.model.kube import KubeNetworkPolicy, Namespace, Pod


def knp(spec: dict[str, Any], name: str = "p") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"podSelector": {}, **spec},
    }


def pod(
    status: dict[str, Any] | None = None, spec: dict[str, Any] | None = None, name: str = "web"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": spec or {},
        "status": status or {},
    }


def problems(doc: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as err:
        parse_resource(doc)
    return [(p.path, p.reason) for p in err.value.problems]


REJECTED: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "endPort below port",
        knp({"ingress": [{"ports": [{"port": 80}, {"port": 90, "endPort": 80}]}]}),
        "spec.ingress[0].ports[1].endPort",
        "80 is below port 90",
    ),
    (
        "endPort with a named port",
        knp({"egress": [{"ports": [{"port": "http", "endPort": 80}]}]}),
        "spec.egress[0].ports[0].endPort",
        "requires a numeric port",
    ),
    (
        "endPort without a port",
        knp({"ingress": [{"ports": [{"endPort": 80}]}]}),
        "spec.ingress[0].ports[0].endPort",
        "requires a numeric port",
    ),
    (
        "port 0",
        knp({"ingress": [{"ports": [{"port": 0}]}]}),
        "spec.ingress[0].ports[0].port",
        "port 0 is out of range 1-65535",
    ),
    (
        "port above 65535",
        knp({"ingress": [{"ports": [{"port": 65536}]}]}),
        "spec.ingress[0].ports[0].port",
        "port 65536 is out of range 1-65535",
    ),
    (
        "endPort above 65535",
        knp({"ingress": [{"ports": [{"port": 1, "endPort": 70000}]}]}),
        "spec.ingress[0].ports[0].endPort",
        "70000 is above the maximum 65535",
    ),
    (
        "a named port that is not an IANA service name",
        knp({"ingress": [{"ports": [{"port": "Web_Port"}]}]}),
        "spec.ingress[0].ports[0].port",
        "'Web_Port' is not a port name (1-15 lower-case letters, digits and '-', with at least one letter, "
        "no '--', alphanumeric at both ends)",
    ),
    (
        "a numeric string port",
        knp({"ingress": [{"ports": [{"port": "80"}]}]}),
        "spec.ingress[0].ports[0].port",
        "'80' is not a port name (1-15 lower-case letters, digits and '-', with at least one letter, "
        "no '--', alphanumeric at both ends)",
    ),
    (
        "an unknown protocol",
        knp({"ingress": [{"ports": [{"protocol": "ICMP", "port": 1}]}]}),
        "spec.ingress[0].ports[0].protocol",
        "'ICMP' is not allowed: expected 'TCP', 'UDP' or 'SCTP'",
    ),
    (
        "host bits in ipBlock.cidr (the `from` alias)",
        knp({"ingress": [{"from": [{"ipBlock": {"cidr": "10.1.2.3/16"}}]}]}),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "'10.1.2.3/16' has host bits set: the network is 10.1.0.0/16",
    ),
    (
        "host bits in an except (the `except` alias)",
        knp(
            {
                "egress": [
                    {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.0.1/16"]}}]}
                ]
            }
        ),
        "spec.egress[0].to[0].ipBlock.except[1]",
        "'10.2.0.1/16' has host bits set: the network is 10.2.0.0/16",
    ),
    (
        "an except outside the cidr",
        knp({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}]}),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "11.0.0.0/16 is not inside cidr 10.0.0.0/8",
    ),
    (
        "an except of the other IP family",
        knp({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["fd00::/64"]}}]}]}),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "fd00::/64 is not inside cidr 10.0.0.0/8",
    ),
    (
        "ipBlock with a podSelector",
        knp({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}),
        "spec.ingress[0].from[0].ipBlock",
        "cannot be combined with podSelector or namespaceSelector in one peer",
    ),
    (
        "an empty peer",
        knp({"ingress": [{"from": [{}]}]}),
        "spec.ingress[0].from[0]",
        "a peer needs podSelector, namespaceSelector or ipBlock",
    ),
    (
        "an unknown selector operator",
        knp({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]}}),
        "spec.podSelector.matchExpressions[0].operator",
        "'Equals' is not allowed: expected 'In', 'NotIn', 'Exists' or 'DoesNotExist'",
    ),
    (
        "In without values",
        knp({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
        "spec.podSelector.matchExpressions[0].values",
        "must be non-empty for operator In",
    ),
    (
        "Exists with values",
        knp(
            {
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
                                }
                            }
                        ]
                    }
                ]
            }
        ),
        "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values",
        "must be empty for operator Exists",
    ),
    (
        "an invalid matchExpressions value",
        knp(
            {
                "podSelector": {
                    "matchExpressions": [{"key": "a", "operator": "In", "values": ["ok", "not ok"]}]
                }
            }
        ),
        "spec.podSelector.matchExpressions[0].values[1]",
        "label 'a': value 'not ok' must be at most 63 characters of [A-Za-z0-9_.-], alphanumeric "
        "at both ends",
    ),
    (
        "an invalid matchLabels key",
        knp({"podSelector": {"matchLabels": {"app name": "web"}}}),
        "spec.podSelector.matchLabels",
        "label key 'app name': name part must be 1-63 characters of [A-Za-z0-9_.-], alphanumeric "
        "at both ends",
    ),
    (
        "an unknown field in a peer",
        knp({"ingress": [{"from": [{"podSelector": {}, "serviceAccount": "x"}]}]}),
        "spec.ingress[0].from[0].serviceAccount",
        "unknown field",
    ),
    (
        "the python name of an alias",
        knp({"ingress": [{"from_": []}]}),
        "spec.ingress[0].from_",
        "unknown field",
    ),
    (
        "an unknown policy type",
        knp({"policyTypes": ["ingress"]}),
        "spec.policyTypes[0]",
        "'ingress' is not allowed: expected 'Ingress' or 'Egress'",
    ),
    (
        "a policy type listed twice",
        knp({"policyTypes": ["Ingress", "Ingress"]}),
        "spec.policyTypes[1]",
        "'Ingress' is listed more than once",
    ),
    (
        "a missing podSelector",
        {**knp({}), "spec": {}},
        "spec.podSelector",
        "required field is missing",
    ),
    (
        "more than 1024 ingress rules",
        knp({"ingress": [{}] * 1025}),
        "spec.ingress",
        "1025 entries, more than the limit of 1024",
    ),
    (
        "a namespace that is not a DNS-1123 label",
        {**knp({}), "metadata": {"name": "p", "namespace": "Shop"}},
        "metadata.namespace",
        "'Shop' is not a DNS-1123 label (lower-case letters, digits and '-', starting and ending "
        "with a letter "
        "or digit)",
    ),
    (
        "a bad podIP (the `podIP` alias)",
        pod({"podIP": "10.0.0"}),
        "status.podIP",
        "'10.0.0' is not an IP address",
    ),
    (
        "a bad podIPs entry",
        pod({"podIPs": [{"ip": "fd00::1"}, {"ip": "x"}]}),
        "status.podIPs[1].ip",
        "'x' is not an IP address",
    ),
    (
        "a containerPort out of range",
        pod(spec={"containers": [{"name": "c", "ports": [{"containerPort": 0}]}]}),
        "spec.containers[0].ports[0].containerPort",
        "0 is below the minimum 1",
    ),
    (
        "a string containerPort",
        pod(spec={"containers": [{"name": "c", "ports": [{"containerPort": "80"}]}]}),
        "spec.containers[0].ports[0].containerPort",
        "expected an integer, not str '80'",
    ),
    (
        "a named container port too long",
        pod(
            spec={
                "containers": [
                    {"name": "c", "ports": [{"name": "a-very-long-port-name", "containerPort": 80}]}
                ]
            }
        ),
        "spec.containers[0].ports[0].name",
        "'a-very-long-port-name' is longer than 15 characters",
    ),
    (
        "an unknown pod field",
        pod(spec={"hostNetwork": True}),
        "spec.hostNetwork",
        "unknown field",
    ),
    (
        "a pod name that is not DNS-1123",
        pod(name="Web"),
        "metadata.name",
        "'Web' is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', starting and "
        "ending with a "
        "letter or digit)",
    ),
    (
        "a namespace name with a dot",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}},
        "metadata.name",
        "'a.b' is not a DNS-1123 label (lower-case letters, digits and '-', starting and ending "
        "with a letter "
        "or digit)",
    ),
    (
        "a non-string label value, under a key that looks like a type tag",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "labels": {"int": 5}}},
        "metadata.labels.int",
        "expected a string, not int 5",
    ),
    (
        "a non-string label value under a hyphenated key",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "labels": {"app-name": None}}},
        "metadata.labels.app-name",
        "expected a string, not NoneType None",
    ),
    (
        "a namespace with a namespace",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "namespace": "b"}},
        "metadata.namespace",
        "Namespace is cluster-scoped and takes no namespace",
    ),
    (
        "a service targetPort out of range",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80, "targetPort": 0}]},
        },
        "spec.ports[0].targetPort",
        "port 0 is out of range 1-65535",
    ),
]


@pytest.mark.parametrize(("doc", "path", "reason"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED])
def test_rejected_with_path_and_reason(doc: dict[str, Any], path: str, reason: str) -> None:
    assert problems(doc) == [(path, reason)]


def test_valid_network_policy_and_defaults() -> None:
    policy = parse_resource(
        knp(
            {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [
                    {
                        "from": [
                            {"podSelector": {"matchLabels": {"app": "web"}}, "namespaceSelector": {}},
                            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                        ],
                        "ports": [
                            {"port": 5432},
                            {"port": 6000, "endPort": 6010, "protocol": "UDP"},
                            {"port": "pg"},
                        ],
                    }
                ],
                "egress": [{}],
            }
        )
    )
    assert isinstance(policy, KubeNetworkPolicy)
    assert policy.spec.effective_types() == ("Ingress", "Egress")
    assert policy.spec.ingress[0].from_[1].ip_block.except_ == ["10.1.0.0/16"]  # type: ignore[union-attr]
    assert [p.port for p in policy.spec.ingress[0].ports] == [5432, 6000, "pg"]
    assert key_of(policy).namespace == "shop"


def test_pod_ips_and_namespace_labels() -> None:
    p = parse_resource(pod({"podIP": "198.18.0.5", "podIPs": [{"ip": "198.18.0.5"}, {"ip": "fd00::5"}]}))
    assert isinstance(p, Pod)
    assert p.ips() == ("198.18.0.5", "fd00::5")
    ns = parse_resource(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"a": "b"}}}
    )
    assert isinstance(ns, Namespace)
    assert ns.effective_labels() == {"a": "b", "kubernetes.io/metadata.name": "shop"}


def test_pod_without_namespace_gets_the_default() -> None:
    doc = pod()
    del doc["metadata"]["namespace"]
    assert parse_resource(doc).metadata.namespace == "default"
    assert parse_resource(doc, default_namespace="stars").metadata.namespace == "stars"
    assert "namespace" not in doc["metadata"]  # the input is never modified
