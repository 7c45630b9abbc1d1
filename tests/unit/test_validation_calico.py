"""The validator on Kaliko/Calico kinds: every rejection names the exact field path and reason."""

from __future__ import annotations

from typing import Any

import pytest

from policycore.model import Problem, ValidationFailed, parse_resource
from policycore.model.calico import GlobalNetworkPolicy


def gnp(spec: dict[str, Any], name: str = "p") -> dict[str, Any]:
    return {
        "apiVersion": "kaliko.io/v1",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def rule(**fields: Any) -> dict[str, Any]:
    return {"action": "Allow", **fields}


def problems(doc: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as err:
        parse_resource(doc)
    return [(p.path, p.reason) for p in err.value.problems]


REJECTED: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "host bits in a CIDR",
        gnp({"ingress": [rule(source={"nets": ["10.0.0.1/8"]})]}),
        "spec.ingress[0].source.nets[0]",
        "'10.0.0.1/8' has host bits set: the network is 10.0.0.0/8",
    ),
    (
        "host bits in an IPv6 CIDR",
        gnp({"egress": [rule(destination={"notNets": ["fd00::1/64"]})]}),
        "spec.egress[0].destination.notNets[0]",
        "'fd00::1/64' has host bits set: the network is fd00::/64",
    ),
    (
        "an invalid CIDR",
        gnp({"ingress": [rule(source={"nets": ["10.0.0.300/8"]})]}),
        "spec.ingress[0].source.nets[0]",
        "'10.0.0.300/8' is not a valid CIDR: '10.0.0.300/8' does not appear to be an IPv4 or IPv6 network",
    ),
    (
        "a CIDR without a prefix length",
        gnp({"ingress": [rule(source={"nets": ["10.0.0.1"]})]}),
        "spec.ingress[0].source.nets[0]",
        "'10.0.0.1' is not a CIDR: a prefix length is required (e.g. 10.0.0.1/32)",
    ),
    (
        "a prefix longer than the address",
        gnp({"ingress": [rule(source={"nets": ["10.0.0.0/33"]})]}),
        "spec.ingress[0].source.nets[0]",
        "'10.0.0.0/33' is not a valid CIDR: '10.0.0.0/33' does not appear to be an IPv4 or IPv6 network",
    ),
    (
        "a policy selector that does not parse",
        gnp({"selector": "app == "}),
        "spec.selector",
        "selector 'app == ': at position 7: expected a string literal after '==', found the end of "
        "the selector",
    ),
    (
        "an entity selector that does not parse",
        gnp({"ingress": [rule(source={"selector": "a == 'x"})]}),
        "spec.ingress[0].source.selector",
        'selector "a == \'x": at position 5: unterminated string literal',
    ),
    (
        "global() in the policy selector",
        gnp({"selector": "global()"}),
        "spec.selector",
        "selector 'global()': global() is only allowed in a rule's namespaceSelector",
    ),
    (
        "global() in the policy's namespaceSelector",
        gnp({"namespaceSelector": "global() || a == 'b'"}),
        "spec.namespaceSelector",
        "selector \"global() || a == 'b'\": global() is only allowed in a rule's namespaceSelector",
    ),
    (
        "global() in the serviceAccountSelector",
        gnp({"serviceAccountSelector": "global()"}),
        "spec.serviceAccountSelector",
        "selector 'global()': global() is only allowed in a rule's namespaceSelector",
    ),
    (
        "a selector over 1024 characters",
        gnp({"selector": "a == '" + "x" * 1020 + "'"}),
        "spec.selector",
        "selector is 1027 characters, more than the limit of 1024",
    ),
    (
        "an entity selector over 1024 characters",
        gnp({"ingress": [rule(destination={"notSelector": "has(" + "k" * 1100 + ")"})]}),
        "spec.ingress[0].destination.notSelector",
        "selector is 1105 characters, more than the limit of 1024",
    ),
    (
        "a port above 65535",
        gnp({"ingress": [rule(protocol="TCP", destination={"ports": [80, 70000]})]}),
        "spec.ingress[0].destination.ports[1]",
        "port 70000 is out of range 0-65535",
    ),
    (
        "a negative port",
        gnp({"ingress": [rule(protocol="UDP", source={"notPorts": [-1]})]}),
        "spec.ingress[0].source.notPorts[0]",
        "port -1 is out of range 0-65535",
    ),
    (
        "a reversed port range",
        gnp({"ingress": [rule(protocol="TCP", destination={"ports": ["90:80"]})]}),
        "spec.ingress[0].destination.ports[0]",
        "port range '90:80': min 90 is above max 80",
    ),
    (
        "a port range past 65535",
        gnp({"ingress": [rule(protocol="TCP", destination={"ports": ["1:65536"]})]}),
        "spec.ingress[0].destination.ports[0]",
        "port range '1:65536': 65536 is out of range 0-65535",
    ),
    (
        "a port range that is not numbers",
        gnp({"ingress": [rule(protocol="TCP", destination={"ports": ["a:b"]})]}),
        "spec.ingress[0].destination.ports[0]",
        "port range 'a:b' must be 'min:max' with numbers",
    ),
    (
        "a boolean port",
        gnp({"ingress": [rule(protocol="TCP", destination={"ports": [True]})]}),
        "spec.ingress[0].destination.ports[0]",
        "a port must be a number, a range 'min:max' or a name, not True",
    ),
    (
        "an invalid port name",
        gnp({"ingress": [rule(protocol="TCP", destination={"ports": ["has space"]})]}),
        "spec.ingress[0].destination.ports[0]",
        "'has space' is not a port number, a range or a valid port name ([a-zA-Z0-9_.-]{1,128})",
    ),
    (
        "ports without a protocol",
        gnp({"ingress": [rule(destination={"ports": [80]})]}),
        "spec.ingress[0].destination.ports",
        "ports require protocol TCP, UDP or SCTP",
    ),
    (
        "notPorts with ICMP",
        gnp({"egress": [rule(protocol="ICMP", source={"notPorts": [80]})]}),
        "spec.egress[0].source.notPorts",
        "ports require protocol TCP, UDP or SCTP",
    ),
    (
        "icmp without an ICMP protocol",
        gnp({"ingress": [rule(icmp={"type": 8})]}),
        "spec.ingress[0].icmp",
        "ICMP matches require protocol ICMP or ICMPv6",
    ),
    (
        "notICMP with TCP",
        gnp({"ingress": [rule(protocol="TCP", notICMP={"type": 8})]}),
        "spec.ingress[0].notICMP",
        "ICMP matches require protocol ICMP or ICMPv6",
    ),
    (
        "an ICMP type above 254",
        gnp({"ingress": [rule(protocol="ICMP", notICMP={"type": 255})]}),
        "spec.ingress[0].notICMP.type",
        "255 is above the maximum 254",
    ),
    (
        "an ICMP code without a type",
        gnp({"ingress": [rule(protocol="ICMP", icmp={"code": 0})]}),
        "spec.ingress[0].icmp.code",
        "an ICMP code requires a type",
    ),
    (
        "ICMP with ipVersion 6",
        gnp({"ingress": [rule(protocol="ICMP", ipVersion=6)]}),
        "spec.ingress[0].protocol",
        "ICMP requires ipVersion 4 (use ICMPv6)",
    ),
    (
        "a net of the wrong IP version",
        gnp({"ingress": [rule(ipVersion=4, destination={"nets": ["10.0.0.0/8", "fd00::/8"]})]}),
        "spec.ingress[0].destination.nets[1]",
        "fd00::/8 is IPv6 but ipVersion is 4",
    ),
    (
        "an IPv6 net after an IPv4 one (Calico: one family per rule)",
        gnp({"ingress": [rule(source={"nets": ["10.0.0.0/8"]}, destination={"notNets": ["fd00::/8"]})]}),
        "spec.ingress[0].destination.notNets[0]",
        "fd00::/8 is IPv6 but source.nets[0] is IPv4: a rule's CIDRs must all be IPv4 or all IPv6",
    ),
    (
        "ICMP as notProtocol with ipVersion 6",
        gnp({"egress": [rule(notProtocol="ICMP", ipVersion=6)]}),
        "spec.egress[0].notProtocol",
        "ICMP requires ipVersion 4 (use ICMPv6)",
    ),
    (
        "global() in a rule's selector",
        gnp({"ingress": [rule(source={"selector": "global()"})]}),
        "spec.ingress[0].source.selector",
        "selector 'global()': global() is only allowed in a rule's namespaceSelector",
    ),
    (
        "global() combined with more in a rule's namespaceSelector",
        gnp({"ingress": [rule(destination={"namespaceSelector": "global() && has(a)"})]}),
        "spec.ingress[0].destination.namespaceSelector",
        "selector 'global() && has(a)': global() must be the whole namespaceSelector",
    ),
    (
        "a type listed twice",
        gnp({"types": ["Egress", "Ingress", "Egress"]}),
        "spec.types[2]",
        "'Egress' is listed more than once",
    ),
    (
        "preDNAT with the Egress type",
        gnp({"preDNAT": True, "applyOnForward": True, "types": ["Egress"]}),
        "spec.types",
        "a preDNAT policy cannot have the Egress type",
    ),
    (
        "an unknown protocol name",
        gnp({"ingress": [rule(protocol="tcp")]}),
        "spec.ingress[0].protocol",
        "protocol 'tcp' is not one of TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255",
    ),
    (
        "a protocol number out of range",
        gnp({"ingress": [rule(notProtocol=256)]}),
        "spec.ingress[0].notProtocol",
        "protocol 256 is out of range 1-255",
    ),
    (
        "an unknown action",
        gnp({"ingress": [{"action": "allow"}]}),
        "spec.ingress[0].action",
        "'allow' is not allowed: expected 'Allow', 'Deny', 'Log' or 'Pass'",
    ),
    ("a rule without an action", gnp({"egress": [{}]}), "spec.egress[0].action", "required field is missing"),
    (
        "an unknown field in a rule",
        gnp({"ingress": [rule(sauce={})]}),
        "spec.ingress[0].sauce",
        "unknown field",
    ),
    (
        "a snake_case field (aliases only)",
        gnp({"ingress": [rule(source={"not_nets": ["10.0.0.0/8"]})]}),
        "spec.ingress[0].source.not_nets",
        "unknown field",
    ),
    ("an unknown top-level field", {**gnp({}), "status": {}}, "status", "unknown field"),
    (
        "an unknown type",
        gnp({"types": ["Ingress", "Forward"]}),
        "spec.types[1]",
        "'Forward' is not allowed: expected 'Ingress' or 'Egress'",
    ),
    (
        "a policy name that is not DNS-1123",
        gnp({}, name="Allow_All"),
        "metadata.name",
        "'Allow_All' is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', "
        "starting and ending with a letter or digit)",
    ),
    (
        "a tier name that is not DNS-1123",
        gnp({"tier": "Security"}),
        "spec.tier",
        "'Security' is not a DNS-1123 label (lower-case letters, digits and '-', "
        "starting and ending with a letter or digit)",
    ),
    (
        "more than 1024 ingress rules",
        gnp({"ingress": [rule()] * 1025}),
        "spec.ingress",
        "1025 entries, more than the limit of 1024",
    ),
    (
        "more than 1024 egress rules",
        gnp({"egress": [rule()] * 1030}),
        "spec.egress",
        "1030 entries, more than the limit of 1024",
    ),
    (
        "more than 256 nets",
        gnp(
            {"ingress": [rule(source={"nets": [f"10.0.{i}.0/24" for i in range(255)] + ["11.0.0.0/8"] * 2})]}
        ),
        "spec.ingress[0].source.nets",
        "257 entries, more than the limit of 256",
    ),
    (
        "more than 256 notNets",
        gnp({"ingress": [rule(destination={"notNets": ["11.0.0.0/8"] * 300})]}),
        "spec.ingress[0].destination.notNets",
        "300 entries, more than the limit of 256",
    ),
    (
        "more than 50 ports",
        gnp({"ingress": [rule(protocol="TCP", destination={"ports": list(range(1, 52))})]}),
        "spec.ingress[0].destination.ports",
        "51 entries, more than the limit of 50",
    ),
    (
        "a string order",
        gnp({"order": "100"}),
        "spec.order",
        "expected a number, not str '100'",
    ),
    (
        "a string ipVersion",
        gnp({"ingress": [rule(ipVersion="4")]}),
        "spec.ingress[0].ipVersion",
        "'4' is not allowed: expected 4 or 6",
    ),
    (
        "a rule that is not a mapping",
        gnp({"ingress": ["allow"]}),
        "spec.ingress[0]",
        "expected a mapping, not str 'allow'",
    ),
    (
        "preDNAT with egress rules",
        gnp({"preDNAT": True, "applyOnForward": True, "egress": [rule()]}),
        "spec.egress",
        "a preDNAT policy cannot have egress rules",
    ),
    (
        "doNotTrack without applyOnForward",
        gnp({"doNotTrack": True}),
        "spec.applyOnForward",
        "must be true when doNotTrack or preDNAT is set",
    ),
    (
        "a service-account name that is not DNS-1123",
        gnp({"ingress": [rule(source={"serviceAccounts": {"names": ["Bad!"]}})]}),
        "spec.ingress[0].source.serviceAccounts.names[0]",
        "'Bad!' is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', "
        "starting and ending with a letter or digit)",
    ),
    (
        "a label key that is not valid",
        {**gnp({}), "metadata": {"name": "p", "labels": {"-bad": "x"}}},
        "metadata.labels",
        "label key '-bad': name part must be 1-63 characters of [A-Za-z0-9_.-], alphanumeric at both ends",
    ),
]


@pytest.mark.parametrize(("doc", "path", "reason"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED])
def test_rejected_with_path_and_reason(doc: dict[str, Any], path: str, reason: str) -> None:
    assert problems(doc) == [(path, reason)]


def test_every_problem_is_reported_not_just_the_first() -> None:
    doc = gnp(
        {
            "selector": "a ==",
            "ingress": [rule(source={"nets": ["10.0.0.1/8"]}), {"action": "Nope"}],
            "egress": [rule(protocol="TCP", destination={"ports": [0, 99999]})],
        },
        name="UPPER",
    )
    assert [path for path, _ in problems(doc)] == [
        "metadata.name",
        "spec.selector",
        "spec.ingress[0].source.nets[0]",
        "spec.ingress[1].action",
        "spec.egress[0].destination.ports[1]",
    ]


def test_error_message_lists_every_problem() -> None:
    with pytest.raises(ValidationFailed) as err:
        parse_resource(gnp({"ingress": [{"action": "x"}], "order": "1"}))
    assert str(err.value) == (
        "spec.order: expected a number, not str '1'; "
        "spec.ingress[0].action: 'x' is not allowed: expected 'Allow', 'Deny', 'Log' or 'Pass'"
    )
    assert err.value.problems[0] == Problem("spec.order", "expected a number, not str '1'")


def test_cluster_scoped_kind_rejects_a_namespace() -> None:
    doc = gnp({})
    doc["metadata"]["namespace"] = "default"
    assert problems(doc) == [
        ("metadata.namespace", "GlobalNetworkPolicy is cluster-scoped and takes no namespace")
    ]


def test_unknown_kind_and_api_version() -> None:
    assert problems({"apiVersion": "kaliko.io/v1", "kind": "Widget", "metadata": {"name": "w"}}) == [
        (
            "kind",
            "unknown kind 'Widget' for apiVersion kaliko.io/v1 (known: NetworkPolicy, "
            "GlobalNetworkPolicy, Tier)",
        )
    ]
    assert problems({"apiVersion": "kaliko.io/v2", "kind": "Tier"}) == [
        (
            "apiVersion",
            "unknown apiVersion 'kaliko.io/v2' (known: v1, networking.k8s.io/v1, kaliko.io/v1, "
            "projectcalico.org/v3)",
        )
    ]
    assert problems({"kind": "Tier"}) == [("apiVersion", "required field is missing")]
    assert problems({"apiVersion": "v1"}) == [("kind", "required field is missing")]


def test_not_a_mapping() -> None:
    with pytest.raises(ValidationFailed) as err:
        parse_resource(["a"])  # type: ignore[arg-type]
    assert err.value.problems == [Problem("", "a resource must be a mapping, not list")]


ACCEPTED: list[dict[str, Any]] = [
    gnp({"ingress": [rule(protocol="TCP", destination={"ports": [0, 65535, "1:2", "http", "8080"]})]}),
    gnp({"ingress": [rule(protocol=6, destination={"ports": [80]})]}),
    gnp({"ingress": [rule(protocol="ICMPv6", ipVersion=6, icmp={"type": 128, "code": 0})]}),
    gnp({"ingress": [rule(protocol=1, notICMP={"type": 254})]}),
    gnp({"ingress": [rule(source={"namespaceSelector": "global()"})]}),
    gnp({"selector": "a == '" + "x" * 1017 + "'"}),  # exactly 1024 characters
    gnp({"ingress": [rule()] * 1024, "egress": [rule(action="Deny")] * 1024}),
    gnp({"ingress": [rule(source={"nets": [f"10.0.{i}.0/24" for i in range(256)]})]}),
    gnp({"ingress": [rule(protocol="SCTP", destination={"ports": list(range(1, 51))})]}),
    gnp({"order": 100, "tier": "security", "types": ["Egress"]}),
    gnp({"doNotTrack": True, "applyOnForward": True}),
]


@pytest.mark.parametrize("doc", ACCEPTED, ids=range(len(ACCEPTED)))
def test_accepted_at_the_limits(doc: dict[str, Any]) -> None:
    assert isinstance(parse_resource(doc), GlobalNetworkPolicy)


def test_namespaced_calico_policy_and_tier() -> None:
    np = parse_resource(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-web"},
            "spec": {
                "selector": "app == 'web'",
                "ingress": [rule(protocol="TCP", destination={"ports": [80]})],
            },
        },
        default_namespace="shop",
    )
    assert (np.metadata.namespace, np.spec.ingress[0].destination.ports) == ("shop", [80])
    tier = parse_resource({"apiVersion": "kaliko.io/v1", "kind": "Tier", "metadata": {"name": "security"}})
    assert tier.spec.default_action == "Deny"  # type: ignore[union-attr]
    assert problems(
        {
            "apiVersion": "kaliko.io/v1",
            "kind": "Tier",
            "metadata": {"name": "t"},
            "spec": {"defaultAction": "Allow"},
        }
    ) == [("spec.defaultAction", "'Allow' is not allowed: expected 'Deny' or 'Pass'")]
    dotted = {"apiVersion": "kaliko.io/v1", "kind": "Tier", "metadata": {"name": "team.a"}}
    assert problems(dotted) == [
        (
            "metadata.name",
            "'team.a' is not a DNS-1123 label (lower-case letters, digits and '-', "
            "starting and ending with a letter or digit)",
        )
    ]
    assert problems(
        {
            "apiVersion": "kaliko.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "n"},
            "spec": {"namespaceSelector": ""},
        }
    ) == [("spec.namespaceSelector", "unknown field")]
