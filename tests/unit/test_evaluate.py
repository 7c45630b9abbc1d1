"""The evaluator on hand-built IR states: the evaluation order of `policycore.ir`, criterion by criterion.

Checks profile allow with no tiers, Log continuing, Pass skipping the rest of a tier, tier
default deny and pass, Pass out of the last tier, every match criterion (protocol, notProtocol,
ICMP, ip sets and their negation, nets and notNets, port ranges and named-port sets and their
negation, unknown source ports), failing closed on inconsistent states, `connection_allowed`
(self, external peers, both sides, unknown nodes), `locate`, and the `MemoryDataPlane`.
"""

from __future__ import annotations

import pytest

from node_agent.dataplane.memory import MemoryDataPlane
from node_agent.dataplane.protocol import DataPlaneError
from policycore.evaluate import Peer, connection_allowed, evaluate, locate
from policycore.ir import (
    EndpointProgram,
    IcmpMatch,
    IpSet,
    NodeState,
    PolicyProgram,
    PortRange,
    Rule,
    TierProgram,
)

A, B, EXT = "10.0.0.1", "10.0.0.2", "192.0.2.9"


def state(
    ingress: list[TierProgram] | None = None,
    policies: list[PolicyProgram] | None = None,
    ipsets: list[IpSet] | None = None,
) -> NodeState:
    endpoint = EndpointProgram("ns/a", "kal0", (A,), tuple(ingress or ()), ())
    return NodeState(
        {s.set_id: s for s in ipsets or []}, {p.policy_id: p for p in policies or []}, {"ns/a": endpoint}
    )


def pol(name: str, *rules: Rule) -> PolicyProgram:
    return PolicyProgram(name, ingress=rules)


def rule(action: str = "allow", name: str = "r", **criteria: object) -> Rule:
    return Rule(action=action, rule_id=name, **criteria)  # type: ignore[arg-type]


def verdict(s: NodeState, src: str = B, protocol: int = 6, port: int = 80, **kw: int) -> tuple[bool, str]:
    v = evaluate(s, "ns/a", "ingress", src, A, protocol, port, **kw)
    return v.allowed, v.decided_by


def test_no_tiers_means_the_profile_allows() -> None:
    assert verdict(state()) == (True, "profile")


def test_log_continues_and_the_next_deciding_rule_wins() -> None:
    s = state(
        [TierProgram("t", ("p",))], [pol("p", rule("log", "p/0"), rule("deny", "p/1"), rule("allow", "p/2"))]
    )
    v = evaluate(s, "ns/a", "ingress", B, A, 6, 80)
    assert (v.allowed, v.decided_by) == (False, "p/1")
    assert [step.outcome for step in v.trace] == ["log", "deny"]


def test_pass_skips_the_rest_of_the_tier() -> None:
    tiers = [TierProgram("t1", ("p1", "p2")), TierProgram("t2", ("p3",))]
    s = state(
        tiers,
        [pol("p1", rule("pass", "p1/0")), pol("p2", rule("deny", "p2/0")), pol("p3", rule("allow", "p3/0"))],
    )
    v = evaluate(s, "ns/a", "ingress", B, A, 6, 80)
    assert (v.allowed, v.decided_by) == (True, "p3/0")
    assert [(t.tier, t.policy, t.outcome) for t in v.trace] == [("t1", "p1", "pass"), ("t2", "p3", "allow")]


def test_tier_defaults() -> None:
    no_match = pol("p", rule("allow", "p/0", protocol=17))
    assert verdict(state([TierProgram("t", ("p",), "deny")], [no_match])) == (False, "tier-default:t")
    assert verdict(state([TierProgram("t", ("p",), "pass")], [no_match])) == (True, "profile")
    chained = state(
        [TierProgram("t", ("p",), "pass"), TierProgram("u", ("q",))],
        [no_match, pol("q", rule("deny", "q/0"))],
    )
    assert verdict(chained) == (False, "q/0")


def test_pass_out_of_the_last_tier_reaches_the_profile() -> None:
    assert verdict(state([TierProgram("t", ("p",))], [pol("p", rule("pass", "p/0"))])) == (True, "profile")


def test_a_policy_without_a_matching_rule_hands_over_to_the_next_policy() -> None:
    s = state(
        [TierProgram("t", ("p", "q"))],
        [pol("p", rule("deny", "p/0", protocol=17)), pol("q", rule("allow", "q/0"))],
    )
    v = evaluate(s, "ns/a", "ingress", B, A, 6, 80)
    assert v.decided_by == "q/0"
    assert [(t.policy, t.outcome) for t in v.trace] == [("p", "no-match"), ("q", "allow")]


@pytest.mark.parametrize(
    ("criteria", "packet", "matches"),
    [
        ({"protocol": 6}, {}, True),
        ({"protocol": 17}, {}, False),
        ({"not_protocol": 6}, {}, False),
        ({"not_protocol": 17}, {}, True),
        ({"src_nets": ("10.0.0.0/24",)}, {}, True),
        ({"src_nets": ("10.1.0.0/16", "10.0.0.2/32")}, {}, True),
        ({"src_nets": ("10.1.0.0/16",)}, {}, False),
        ({"not_src_nets": ("10.0.0.0/30",)}, {}, False),
        ({"not_src_nets": ("fd00::/8",)}, {}, True),
        ({"dst_nets": ("10.0.0.1/32",)}, {}, True),
        ({"not_dst_nets": ("10.0.0.1/32",)}, {}, False),
        ({"dst_ports": (PortRange(79, 80),)}, {}, True),
        ({"dst_ports": (PortRange(81, 90),)}, {}, False),
        ({"dst_ports": (PortRange(81, 90),), "dst_named_port_ipsets": ("n:web",)}, {}, True),
        ({"dst_named_port_ipsets": ("n:web",)}, {"port": 81}, False),
        ({"dst_named_port_ipsets": ("n:web",)}, {"protocol": 17}, False),
        ({"not_dst_ports": (PortRange(80, 80),)}, {}, False),
        ({"not_dst_named_port_ipsets": ("n:web",)}, {}, False),
        ({"not_dst_named_port_ipsets": ("n:web",)}, {"port": 81}, True),
        ({"src_ipsets": ("s:b",)}, {}, True),
        ({"src_ipsets": ("s:b",)}, {"src": EXT}, False),
        ({"not_src_ipsets": ("s:b",)}, {}, False),
        ({"not_src_ipsets": ("s:b",)}, {"src": EXT}, True),
        ({"dst_ipsets": ("s:b",)}, {}, False),
        ({"src_ports": (PortRange(1000, 2000),)}, {}, False),
        ({"src_ports": (PortRange(1000, 2000),)}, {"src_port": 1500}, True),
        ({"not_src_ports": (PortRange(1000, 2000),)}, {}, True),
        ({"not_src_ports": (PortRange(1000, 2000),)}, {"src_port": 1500}, False),
        ({"protocol": 1, "icmp": IcmpMatch(8)}, {"protocol": 1, "icmp_type": 8, "icmp_code": 3}, True),
        ({"protocol": 1, "icmp": IcmpMatch(8, 0)}, {"protocol": 1, "icmp_type": 8, "icmp_code": 3}, False),
        ({"protocol": 1, "icmp": IcmpMatch(8)}, {"protocol": 1}, False),
        ({"protocol": 1, "not_icmp": IcmpMatch(8)}, {"protocol": 1, "icmp_type": 0}, True),
        ({"protocol": 1, "not_icmp": IcmpMatch(8)}, {"protocol": 1, "icmp_type": 8}, False),
    ],
)
def test_rule_criteria(criteria: dict[str, object], packet: dict[str, object], matches: bool) -> None:
    sets = [IpSet("s:b", "ip", frozenset({B})), IpSet("n:web", "ip_port", frozenset({f"{A},tcp:80"}))]
    s = state([TierProgram("t", ("p",))], [pol("p", rule("allow", "p/0", **criteria))], sets)
    kw = {k: v for k, v in packet.items() if k in ("src_port", "icmp_type", "icmp_code")}
    allowed, _ = verdict(
        s,
        src=str(packet.get("src", B)),
        protocol=int(packet.get("protocol", 6)),
        port=int(packet.get("port", 80)),
        **kw,  # type: ignore[arg-type]
    )
    assert allowed is matches


def test_ipv6_and_net_kind_sets() -> None:
    sets = [IpSet("c:nets", "net", frozenset({"fd00::/64"}))]
    s = NodeState(
        {x.set_id: x for x in sets},
        {"p": pol("p", rule("allow", "p/0", src_ipsets=("c:nets",)))},
        {"ns/a": EndpointProgram("ns/a", "kal0", ("fd00::1",), (TierProgram("t", ("p",)),))},
    )
    assert evaluate(s, "ns/a", "ingress", "fd00::0002", "fd00::1", 6, 80).allowed
    assert not evaluate(s, "ns/a", "ingress", "fd01::2", "fd00::1", 6, 80).allowed


def test_inconsistent_states_fail_closed() -> None:
    assert verdict(state([TierProgram("t", ("missing",))])) == (False, "fail-closed:missing-policy:missing")
    s = state([TierProgram("t", ("p",))], [pol("p", rule("allow", "p/0", src_ipsets=("s:gone",)))])
    assert verdict(s) == (False, "fail-closed:missing-ipset:s:gone")
    v = evaluate(state(), "ns/other", "ingress", B, A, 6, 80)
    assert (v.allowed, v.decided_by) == (False, "fail-closed:unprogrammed-endpoint")


def two_nodes() -> dict[str, NodeState]:
    deny_in = PolicyProgram(
        "deny", ingress=(rule("deny", "deny/0", src_nets=("10.0.0.3/32",)), rule("allow", "deny/1"))
    )
    a = EndpointProgram("ns/a", "kal0", (A,), (TierProgram("t", ("deny",)),), ())
    b = EndpointProgram("ns/b", "kal1", (B,), (), (TierProgram("t", ("no-egress",)),))
    no_egress = PolicyProgram("no-egress", egress=(rule("allow", "no-egress/0", dst_nets=("10.0.0.1/32",)),))
    return {
        "n1": NodeState({}, {"deny": deny_in}, {"ns/a": a}),
        "n2": NodeState({}, {"no-egress": no_egress}, {"ns/b": b}),
    }


def test_connection_checks_egress_at_the_source_and_ingress_at_the_destination() -> None:
    states = two_nodes()
    a, b = Peer(A, "ns/a", "n1"), Peer(B, "ns/b", "n2")
    ok = connection_allowed(states, b, a, 6, 80)
    assert ok.allowed and ok.reason == "allowed"
    assert ok.egress is not None and ok.egress.decided_by == "no-egress/0" and ok.egress.direction == "egress"
    assert ok.ingress is not None and ok.ingress.decided_by == "deny/1"
    to_ext = connection_allowed(states, b, Peer(EXT), 6, 80)
    assert not to_ext.allowed and to_ext.reason == "denied by egress" and to_ext.ingress is None
    from_ext = connection_allowed(states, Peer("10.0.0.3"), a, 6, 80)
    assert not from_ext.allowed and from_ext.reason == "denied by ingress" and from_ext.egress is None


def test_a_pod_reaches_itself_and_unknown_nodes_fail_closed() -> None:
    states = two_nodes()
    b = Peer(B, "ns/b", "n2")
    assert connection_allowed(states, b, b, 6, 80).reason == "self"
    lost = connection_allowed(states, Peer(A, "ns/a", "gone"), b, 6, 80)
    assert (
        not lost.allowed and lost.egress is not None and lost.egress.decided_by == "fail-closed:unknown-node"
    )


def test_locate_finds_the_endpoint_owning_an_ip() -> None:
    states = two_nodes()
    assert locate(states, B) == Peer(B, "ns/b", "n2")
    assert locate(states, EXT) == Peer(EXT)


def test_memory_data_plane_applies_atomically_and_answers_verdicts() -> None:
    dp = MemoryDataPlane()
    desired = two_nodes()["n1"]
    dp.apply(desired)
    desired.endpoints.clear()  # the data plane holds its own copy
    assert set(dp.programmed().endpoints) == {"ns/a"}
    assert dp.verdict("ns/a", "ingress", "10.0.0.3", A, 6, 80).decided_by == "deny/0"
    dp.apply(two_nodes()["n1"])
    assert dp.applies == 2 and dp.resync() == 0

    def refuse(_: NodeState) -> None:
        raise DataPlaneError("refused")

    dp.fail_apply = refuse
    with pytest.raises(DataPlaneError):
        dp.apply(NodeState())
    assert set(dp.programmed().endpoints) == {"ns/a"} and dp.applies == 2
    dp.fail_apply = None
    dp.close()
    with pytest.raises(DataPlaneError):
        dp.apply(NodeState())
