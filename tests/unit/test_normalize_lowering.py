"""Lowering into the IR: Felix's ``ruleToParsedRule`` choices and ip-set ids, reproduced exactly.

Checks that a positive selector absorbs the notSelector, that named ports become ``ip_port`` sets
filtered by the positive selector (with Calico's ``n:`` id formula and protocol choice), that the
selector set is dropped only when a side has named ports and no numeric ports, the ``ipVersion``
guard, that only typed directions are emitted, and `IpSetSpec.members_of`.
"""

from __future__ import annotations

from typing import Any

from policycore.calc.endpoints import NamedPort, WorkloadEndpoint
from policycore.calc.lowering import (
    IpSetSpec,
    ipset_members,
    lower_rule,
    named_port_set,
    selector_set,
    to_program,
)
from policycore.calc.normalize import NormalizedEntity, NormalizedPolicy, NormalizedRule, normalize_policy
from policycore.ir import PortRange
from policycore.model import parse_resource
from policycore.selector import ALL, parse, unique_id

API = "projectcalico.org/v3"


def gnp(spec: dict[str, Any]) -> NormalizedPolicy:
    doc = {"apiVersion": API, "kind": "GlobalNetworkPolicy", "metadata": {"name": "g"}, "spec": spec}
    return normalize_policy(parse_resource(doc))  # type: ignore[arg-type]


def test_selector_set_id_is_the_selector_unique_id() -> None:
    sel = parse("a == 'b'")
    assert selector_set(sel) == IpSetSpec(sel.unique_id, "ip", sel)
    assert ALL.unique_id == "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"


def test_named_port_set_id_follows_make_unique_id() -> None:
    sel = parse("a == 'b'")
    spec = named_port_set(sel, "udp", "dns")
    assert spec.set_id == unique_id("n", f"{sel.unique_id},udp,dns")
    assert spec.set_id.startswith("n:") and (spec.kind, spec.named_port, spec.protocol) == (
        "ip_port",
        "dns",
        "udp",
    )


def test_positive_selector_absorbs_the_not_selector() -> None:
    program, specs = to_program(
        gnp({"ingress": [{"action": "Allow", "source": {"selector": "a == 'b'", "notSelector": "c == 'd'"}}]})
    )
    rule = program.ingress[0]
    combined = parse('(a == "b") && (!(c == "d"))')
    assert rule.src_ipsets == (combined.unique_id,) and rule.not_src_ipsets == ()
    assert set(specs) == {combined.unique_id}


def test_a_lone_not_selector_is_a_negated_set() -> None:
    program, specs = to_program(
        gnp({"ingress": [{"action": "Allow", "source": {"notSelector": "c == 'd'"}}]})
    )
    assert program.ingress[0].src_ipsets == () and program.ingress[0].not_src_ipsets == (
        parse("c == 'd'").unique_id,
    )
    assert set(specs) == {parse("c == 'd'").unique_id}


def test_named_ports_filter_by_the_positive_selector_and_replace_the_selector_set() -> None:
    rule = {
        "action": "Allow",
        "protocol": "UDP",
        "destination": {"selector": "app == 'dns'", "ports": ["dns"], "notPorts": ["bad"]},
    }
    program, specs = to_program(gnp({"egress": [rule], "types": ["Egress"]}))
    lowered = program.egress[0]
    sel = parse("app == 'dns'")
    assert lowered.dst_ipsets == ()
    assert lowered.dst_named_port_ipsets == (named_port_set(sel, "udp", "dns").set_id,)
    assert lowered.not_dst_named_port_ipsets == (named_port_set(sel, "udp", "bad").set_id,)
    assert set(specs) == set(lowered.ipset_refs())


def test_numeric_ports_keep_the_selector_set_next_to_named_port_sets() -> None:
    rule = {
        "action": "Allow",
        "protocol": "TCP",
        "destination": {"selector": "app == 'web'", "ports": [80, "http"]},
    }
    program, _ = to_program(gnp({"egress": [rule], "types": ["Egress"]}))
    lowered = program.egress[0]
    sel = parse("app == 'web'")
    assert lowered.dst_ipsets == (sel.unique_id,)
    assert lowered.dst_ports == (PortRange(80, 80),)
    assert lowered.dst_named_port_ipsets == (named_port_set(sel, "tcp", "http").set_id,)


def test_named_ports_without_a_selector_use_all_and_tcp_by_default() -> None:
    doc = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": "web"}]}]},
    }
    program, specs = to_program(normalize_policy(parse_resource(doc)))  # type: ignore[arg-type]
    assert program.ingress[0].dst_named_port_ipsets == (named_port_set(ALL, "tcp", "web").set_id,)
    assert program.ingress[0].protocol == 6 and set(specs) == {named_port_set(ALL, "tcp", "web").set_id}


def test_ip_version_guard() -> None:
    v4 = to_program(gnp({"ingress": [{"action": "Allow", "ipVersion": 4}]}))[0].ingress[0]
    assert v4.src_nets == ("0.0.0.0/0",)
    # Validation rejects nets of the other family; lowering still guards rules built directly.
    mixed = NormalizedRule(
        "default/GlobalNetworkPolicy//g/ingress/0",
        "allow",
        ip_version=6,
        source=NormalizedEntity(nets=("10.0.0.0/8", "fd00::/8"), not_nets=("10.1.0.0/16",)),
    )
    v6, _ = lower_rule(mixed)
    assert v6 is not None and v6.src_nets == ("fd00::/8",) and v6.not_src_nets == ()
    never = NormalizedRule(
        "default/GlobalNetworkPolicy//g/ingress/0",
        "allow",
        ip_version=6,
        destination=NormalizedEntity(nets=("10.0.0.0/8",)),
    )
    assert lower_rule(never) == (None, {})


def test_only_typed_directions_are_emitted() -> None:
    program, specs = to_program(
        gnp(
            {
                "types": ["Ingress"],
                "ingress": [{"action": "Allow"}],
                "egress": [{"action": "Allow", "destination": {"selector": "a == 'b'"}}],
            }
        )
    )
    assert len(program.ingress) == 1 and program.egress == () and specs == {}


def endpoint(
    labels: dict[str, str], ips: tuple[str, ...], ports: tuple[NamedPort, ...] = ()
) -> WorkloadEndpoint:
    return WorkloadEndpoint("x/a", "x", "a", "n1", "kal0", ips, labels, ports)


def test_members_of_and_ipset_members() -> None:
    sel = parse("app == 'web'")
    web = endpoint(
        {"app": "web"},
        ("198.18.0.1", "fd00::1"),
        (NamedPort("http", "tcp", 8080), NamedPort("http", "udp", 53), NamedPort("http", "tcp", 8081)),
    )
    db = endpoint({"app": "db"}, ("198.18.0.2",), (NamedPort("http", "tcp", 80),))
    assert selector_set(sel).members_of(web) == {"198.18.0.1", "fd00::1"}
    assert selector_set(sel).members_of(db) == frozenset()
    assert named_port_set(sel, "tcp", "http").members_of(web) == {
        "198.18.0.1,tcp:8080",
        "198.18.0.1,tcp:8081",
        "fd00::1,tcp:8080",
        "fd00::1,tcp:8081",
    }
    assert ipset_members(named_port_set(ALL, "tcp", "http"), [web, db]) >= {"198.18.0.2,tcp:80"}
    assert ipset_members(selector_set(ALL), [web, db]) == {"198.18.0.1", "fd00::1", "198.18.0.2"}
