"""The nftables renderer and listing parser without a kernel: rule text, table model, delta scripts.

What the kernel does with the text is proven by tests/fv/test_nft_dataplane.py; here: the shape
of every rule (fingerprint comment, no anonymous sets, one nft rule per OR alternative), fail
closed on missing references, incremental renders equal full renders, delta scripts are empty
when nothing changed and ordered so that nothing is referenced before it exists or deleted while
referenced, and the listing parser reads nft's text format back into the model.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node_agent.dataplane.nft_model import TableModel, create_script, update_script
from node_agent.dataplane.nft_netlink import hook_text
from node_agent.dataplane.nft_readback import (
    KernelChain,
    KernelTable,
    drift,
    kernel_model,
    parse_sets,
    rule_comment,
)
from node_agent.dataplane.nft_render import render
from node_agent.dataplane.nft_rules import (
    FROM_WL_MAP,
    SOURCES_SET,
    RenderError,
    endpoint_chain,
    endpoint_chain_rules,
    nets_set_name,
    policy_chain,
    rule_lines,
    set_name,
)
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
from policycore.naming import iface_name

WEB = IpSet("s:web", "ip", frozenset({"198.18.0.2", "198.18.0.3", "fe80::1", "garbage"}))
NAMED = IpSet(
    "s:http", "ip_port", frozenset({"198.18.0.2,tcp:8080", "198.18.0.3,udp:53", "198.18.0.4,gre:1"})
)
NETS = IpSet("n:x", "net", frozenset({"10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32"}))
SETS = {s.set_id: s for s in (WEB, NAMED, NETS)}
FINGERPRINTED = re.compile(r' comment "[0-9a-f]{12} [^"]*"$')


def _lines(rule: Rule) -> list[str]:
    return rule_lines(rule, SETS, {})


def test_every_rule_line_has_a_fingerprint_comment_and_no_anonymous_set() -> None:
    rule = Rule(
        "allow",
        "t/knp/ns/p/ingress/0",
        protocol=6,
        src_ipsets=("s:web", "n:x"),
        dst_ports=(PortRange(80, 80), PortRange(8000, 8080)),
        dst_named_port_ipsets=("s:http",),
    )
    lines = _lines(rule)
    assert len(lines) == 2 * 3  # (2 src sets) x (2 port ranges + 1 named-port set)
    for text in lines:
        assert FINGERPRINTED.search(text) and "t/knp/ns/p/ingress/0" in text
        assert "{" not in text.split(" comment ")[0]
        assert "counter meta mark set meta mark | 0x10000 return" in text
    assert any(f"ip daddr . meta l4proto . th dport @{set_name('s:http')}" in t for t in lines)
    assert any("th dport 8000-8080" in t for t in lines)


def test_actions_negations_and_guards() -> None:
    deny = _lines(Rule("deny", "r/1", not_src_ipsets=("s:web",), not_dst_ports=(PortRange(53, 53),)))
    assert [t.split(" comment ")[0] for t in deny] == [
        f"ip saddr != @{set_name('s:web')} meta l4proto != @port-protocols counter drop",
        f"ip saddr != @{set_name('s:web')} meta l4proto @port-protocols th dport != 53 counter drop",
    ]
    passes = _lines(Rule("pass", "r/2", protocol=17, dst_ports=(PortRange(53, 53),)))
    assert passes[0].startswith(
        "meta l4proto 17 th dport 53 counter meta mark set meta mark | 0x20000 return"
    )
    logged = _lines(Rule("log", "r/3", protocol=1, icmp=IcmpMatch(8, 0)))
    assert logged[0].startswith('meta l4proto 1 icmp type 8 icmp code 0 counter log prefix "kaliko r/3 "')
    not_icmp = _lines(Rule("deny", "r/4", not_icmp=IcmpMatch(8, 0)))
    assert [t.split(" counter")[0] for t in not_icmp] == [
        "icmp type != 8",
        "icmp type 8 icmp code != 0",
        "meta l4proto != 1",
    ]


def test_nets_become_content_addressed_interval_sets() -> None:
    used: dict[str, tuple[str, ...]] = {}
    rule = Rule(
        "allow", "r/0", src_nets=("10.1.0.0/16", "10.0.0.0/8", "2001:db8::/32"), not_dst_nets=("192.168.1.7",)
    )
    lines = rule_lines(rule, SETS, used)
    assert used == {
        nets_set_name(("10.0.0.0/8",)): ("10.0.0.0/8",),
        nets_set_name(("192.168.1.7/32",)): ("192.168.1.7/32",),
    }
    assert f"ip saddr @{nets_set_name(('10.0.0.0/8',))}" in lines[0]
    with pytest.raises(RenderError, match=r"r/9\.src_nets: 'nope'"):
        rule_lines(Rule("allow", "r/9", src_nets=("nope",)), SETS, {})


def test_missing_references_fail_closed() -> None:
    lines = _lines(Rule("allow", "r/0", protocol=6, src_ipsets=("s:gone",)))
    assert len(lines) == 1 and lines[0].startswith("meta l4proto 6 counter drop comment")
    assert "fail closed: missing ip set s:gone" in lines[0]
    ep = EndpointProgram(
        "ns/a", iface_name("ns", "a"), ("198.18.0.2",), ingress=(TierProgram("t", ("p", "q")),)
    )
    policies = {"p": PolicyProgram("p", ingress=(Rule("allow", "p/ingress/0"),))}
    rules = endpoint_chain_rules(ep, "ingress", policies)
    assert "jump " + policy_chain("p", "ingress") in rules[2]
    assert rules[-1].startswith("counter drop") and "missing policy q" in rules[-1]


def test_endpoint_chains_walk_tiers_like_felix() -> None:
    policies = {
        "a": PolicyProgram(
            "a", ingress=(Rule("allow", "a/ingress/0"),), egress=(Rule("allow", "a/egress/0"),)
        ),
        "b": PolicyProgram("b", ingress=(Rule("deny", "b/ingress/0"),), egress=(Rule("deny", "b/egress/0"),)),
        "empty": PolicyProgram("empty"),
    }
    tiers = (TierProgram("one", ("a", "empty", "b"), "deny"), TierProgram("two", ("b",), "pass"))
    ep = EndpointProgram("ns/a", iface_name("ns", "a"), ("198.18.0.2",), ingress=tiers, egress=tiers)
    bodies = [r.split(" comment ")[0] for r in endpoint_chain_rules(ep, "ingress", policies)]
    pa, pb = policy_chain("a", "ingress"), policy_chain("b", "ingress")
    assert bodies == [  # an ingress allow accepts inside the policy chain: no mark test after a jump
        "meta mark set meta mark & 0xfffcffff counter",
        "meta mark set meta mark & 0xfffdffff counter",
        f"counter jump {pa}",
        f"meta mark & 0x20000 == 0 counter jump {pb}",
        "meta mark & 0x20000 == 0 counter drop",
        "meta mark set meta mark & 0xfffdffff counter",
        f"counter jump {pb}",
        "counter accept",
    ]
    egress = [r.split(" comment ")[0] for r in endpoint_chain_rules(ep, "egress", policies)]
    qa, qb = policy_chain("a", "egress"), policy_chain("b", "egress")
    assert egress == [  # an egress allow marks and returns: the destination's ingress still decides
        "meta mark set meta mark & 0xfffcffff counter",
        "meta mark set meta mark & 0xfffdffff counter",
        f"counter jump {qa}",
        "meta mark & 0x10000 == 0x10000 counter return",
        f"meta mark & 0x20000 == 0 counter jump {qb}",
        "meta mark & 0x10000 == 0x10000 counter return",
        "meta mark & 0x20000 == 0 counter drop",
        "meta mark set meta mark & 0xfffdffff counter",
        f"counter jump {qb}",
        "meta mark & 0x10000 == 0x10000 counter return",
        "counter return",
    ]
    no_tiers = EndpointProgram("ns/b", iface_name("ns", "b"), ())
    bodies = [r.split(" comment ")[0] for r in endpoint_chain_rules(no_tiers, "egress", policies)]
    assert bodies == ["meta mark set meta mark & 0xfffcffff counter", "counter return"]  # no tiers: allow


def test_an_allow_accepts_at_once_on_ingress_and_marks_on_egress() -> None:
    rule = Rule("allow", "p/0", protocol=6)
    (ingress,) = rule_lines(rule, SETS, {}, "ingress")
    (egress,) = rule_lines(rule, SETS, {}, "egress")
    assert ingress.split(" comment ")[0] == "meta l4proto 6 counter accept"
    assert egress.split(" comment ")[0] == "meta l4proto 6 counter meta mark set meta mark | 0x10000 return"
    passing = Rule("pass", "p/1")
    assert rule_lines(passing, SETS, {}, "ingress") == rule_lines(passing, SETS, {}, "egress")


def _state(
    *endpoints: EndpointProgram, policies: tuple[PolicyProgram, ...] = (), sets: tuple[IpSet, ...] = ()
) -> NodeState:
    return NodeState(
        {s.set_id: s for s in sets}, {p.policy_id: p for p in policies}, {e.key: e for e in endpoints}
    )


def test_set_elements_keep_only_what_can_match_ipv4() -> None:
    model = render(_state(sets=(WEB, NAMED, NETS))).model
    assert model.sets[set_name("s:web")].elements == {"198.18.0.2", "198.18.0.3"}
    assert model.sets[set_name("s:http")].elements == {"198.18.0.2 . 6 . 8080", "198.18.0.3 . 17 . 53"}
    assert model.sets[set_name("n:x")].elements == {"10.0.0.0/8"} and model.sets[set_name("n:x")].interval
    assert model.sets[set_name("s:web")].elements is not WEB.members  # filtered: a set of its own
    clean = IpSet("s:ok", "ip", frozenset({"198.18.0.2"}))
    assert render(_state(sets=(clean,))).model.sets[set_name("s:ok")].elements is clean.members  # shared
    twins = IpSet("s:np", "ip_port", frozenset({"198.18.0.2,tcp:80", "198.18.0.2,tcp:080"}))
    first = render(_state(sets=(twins,)))
    assert first.model.sets[set_name("s:np")].elements == {"198.18.0.2 . 6 . 80"}  # only the canonical one
    one = IpSet("s:np", "ip_port", frozenset({"198.18.0.2,tcp:80"}))
    moved = render(_state(sets=(one,)), first)
    assert moved.model.sets[set_name("s:np")].elements == {"198.18.0.2 . 6 . 80"}  # moving keeps it
    assert update_script(first.model, moved.model, moved.moves) == ""


def test_bad_interfaces_are_refused_with_the_field_path() -> None:
    with pytest.raises(RenderError, match=r"endpoints\[ns/a\]\.iface: 'eth0'"):
        render(_state(EndpointProgram("ns/a", "eth0", ())))
    twice = (EndpointProgram("ns/a", "kal1", ()), EndpointProgram("ns/b", "kal1", ()))
    with pytest.raises(RenderError, match=r"endpoints\[ns/b\]\.iface: 'kal1' is already used by ns/a"):
        render(_state(*twice))


def test_delta_scripts_are_ordered_and_minimal() -> None:
    policy = PolicyProgram("p", ingress=(Rule("allow", "p/ingress/0", src_ipsets=("s:web",)),))
    ep = EndpointProgram("ns/a", iface_name("ns", "a"), ("198.18.0.2",), ingress=(TierProgram("t", ("p",)),))
    full = render(_state(ep, policies=(policy,), sets=(WEB,)))
    lines = create_script(full.model).splitlines()
    assert lines[:3] == ["add table ip kaliko", "delete table ip kaliko", "add table ip kaliko"]
    tw = endpoint_chain(ep.iface, "ingress")
    assert lines.index(f'add chain ip kaliko {tw} {{ comment "ingress of endpoint ns/a"; }}') < next(
        i for i, x in enumerate(lines) if x.startswith(f'add element ip kaliko to-wl {{ "{ep.iface}"')
    )
    assert update_script(full.model, render(_state(ep, policies=(policy,), sets=(WEB,)), full).model) == ""
    gone = update_script(full.model, render(_state(), full).model).splitlines()
    order = [
        next(i for i, x in enumerate(gone) if x.startswith(p))
        for p in (
            f"delete element ip kaliko {FROM_WL_MAP}",
            f"flush chain ip kaliko {tw}",
            f"delete set ip kaliko {set_name('s:web')}",
            f"delete chain ip kaliko {tw}",
        )
    ]
    assert order == sorted(order)


ids = st.sampled_from(["s:a", "s:b", "s:c"])
ips = st.sampled_from([f"198.18.0.{i}" for i in range(1, 6)])
members = ips | st.sampled_from(
    ["fe80::1", "01.2.3.4", "198.18.0.1,tcp:80", "198.18.0.1,tcp:080", "198.18.0.2,udp:53"]
)
rules = st.builds(
    Rule,
    st.sampled_from(["allow", "deny", "pass", "log"]),
    st.just("p/r"),
    protocol=st.sampled_from([None, 6, 17]),
    src_ipsets=st.lists(ids, max_size=2).map(tuple),
    dst_ports=st.lists(st.builds(PortRange, st.just(80), st.sampled_from([80, 90])), max_size=2).map(tuple),
    src_nets=st.lists(st.sampled_from(["10.0.0.0/8", "10.1.0.0/16"]), max_size=2).map(tuple),
)
states = st.builds(
    lambda sets, pols, eps: _state(*eps, policies=tuple(pols), sets=tuple(sets)),
    st.lists(st.builds(IpSet, ids, st.sampled_from(["ip", "ip_port"]), st.frozensets(members)), max_size=3),
    st.lists(
        st.builds(
            lambda i, r: PolicyProgram(i, ingress=tuple(r)),
            st.sampled_from(["p", "q"]),
            st.lists(rules, max_size=3),
        ),
        max_size=2,
    ),
    st.lists(
        st.builds(
            lambda pod, pols, d: EndpointProgram(
                f"ns/{pod}", iface_name("ns", pod), (), ingress=(TierProgram("t", tuple(pols), d),)
            ),
            st.sampled_from(["a", "b"]),
            st.lists(st.sampled_from(["p", "q", "r"]), max_size=2),
            st.sampled_from(["deny", "pass"]),
        ),
        max_size=2,
    ),
)


def _mix(a: NodeState, c: NodeState, drop: frozenset[str]) -> NodeState:
    """``a`` with ``c``'s objects laid over it and the keys in ``drop`` removed: unchanged objects
    stay the same objects, as they do between two states of a real agent."""

    def merged(x: dict, y: dict) -> dict:  # type: ignore[type-arg]
        return {k: v for k, v in {**x, **y}.items() if k not in drop}

    return NodeState(
        merged(a.ipsets, c.ipsets), merged(a.policies, c.policies), merged(a.endpoints, c.endpoints)
    )


keys = st.frozensets(st.sampled_from(["s:a", "s:b", "s:c", "p", "q", "ns/a", "ns/b"]), max_size=3)


@settings(max_examples=300, deadline=None)
@given(states, states, keys)
def test_incremental_render_equals_full_render_and_scripts_vanish_when_equal(
    a: NodeState, c: NodeState, drop: frozenset[str]
) -> None:
    b = _mix(a, c, drop)
    first = render(a)
    moved = render(b, first)
    assert moved.model == render(b).model
    assert update_script(moved.model, render(b).model) == ""
    assert (update_script(first.model, moved.model) == "") == (first.model == moved.model)
    assert update_script(first.model, moved.model, moved.moves) == update_script(first.model, moved.model)


def _listing(model: TableModel) -> str:
    """The model's sets in nft's listing format (what `nft -n -s list set ...` prints for each)."""
    out = []
    for spec in model.sets.values():
        out.append(f"table ip kaliko {{\n\t{'map' if spec.is_map else 'set'} {spec.name} {{")
        out.append(f"\t\ttype {spec.type}")
        if spec.interval:
            out.append("\t\tflags interval")
        if spec.elements:
            items = sorted(e.removesuffix("/32") for e in spec.elements)
            out.append("\t\telements = { " + ",\n\t\t\t     ".join(items) + " }")
        out.append("\t}\n}")
    return "\n".join(out) + "\n"


def _kernel(model: TableModel, sets_text: str) -> KernelTable:
    """What the driver reads back for ``model``: chains as netlink gives them, sets as nft lists them."""
    chains = {c.name: KernelChain(c.hook, [rule_comment(r) for r in c.rules]) for c in model.chains.values()}
    return KernelTable(parse_sets(sets_text), chains)


def test_readback_round_trips_and_drift_is_counted_per_object() -> None:
    policy = PolicyProgram(
        "p", ingress=(Rule("allow", "p/ingress/0", src_nets=("10.0.0.1/32", "10.0.0.2/31")),)
    )
    ep = EndpointProgram("ns/a", iface_name("ns", "a"), (), ingress=(TierProgram("t", ("p",)),))
    desired = render(_state(ep, policies=(policy,), sets=(WEB, NAMED))).model
    text = _listing(desired)
    kernel = kernel_model(_kernel(desired, text), desired)
    assert kernel is not None and drift(kernel, desired) == 0 and update_script(kernel, desired) == ""
    tw = endpoint_chain(ep.iface, "ingress")
    broken = _kernel(desired, text.replace("198.18.0.3 . 17 . 53", "198.18.0.9 . 17 . 53"))
    broken.chains[tw].comments = [c for c in broken.chains[tw].comments if "Start of tier" not in (c or "")]
    broken.chains["stray"] = KernelChain("", [None])
    kernel = kernel_model(broken, desired)
    assert kernel is not None and drift(kernel, desired) == 3
    repair = update_script(kernel, desired).splitlines()
    assert f"delete element ip kaliko {set_name('s:http')} {{ 198.18.0.9 . 17 . 53 }}" in repair
    assert f"flush chain ip kaliko {tw}" in repair and "delete chain ip kaliko stray" in repair
    assert [x for x in repair if x.startswith(f"add rule ip kaliko {tw}")] == [
        f"add rule ip kaliko {tw} {r}" for r in desired.chains[tw].rules
    ]
    odd = _kernel(desired, text)
    odd.others.append("obj ctr")
    assert kernel_model(odd, desired) is None  # an object kind we never create: rebuild
    policy_drop = _kernel(desired, text)
    policy_drop.chains["forward"].hook = hook_text("filter", 2, 0, 0)
    assert kernel_model(policy_drop, desired) is None  # our base chain's policy changed: rebuild


def test_netlink_hook_text_matches_our_base_chain() -> None:
    assert hook_text("filter", 2, 0, 1) == "type filter hook forward priority filter; policy accept;"
    assert render(NodeState()).model.chains["forward"].hook == hook_text("filter", 2, 0, 1)


def test_parser_reads_nft_text_forms() -> None:
    text = (
        'table ip kaliko {\n\tset n-x {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tcomment "nets"\n'
        "\t\telements = { 10.0.0.0/8, 198.18.0.1,\n\t\t\t     198.18.0.4-198.18.0.7 }\n\t}\n}\n"
        "table ip kaliko {\n\tmap to-wl {\n\t\ttype ifname : verdict\n"
        '\t\telements = { "kal1" : goto kaliko-tw-kal1 }\n\t}\n}\n'
    )
    sets = parse_sets(text)
    assert sets["n-x"].elements == {"10.0.0.0/8", "198.18.0.1/32", "198.18.0.4/30"}
    assert sets["n-x"].type == "ipv4_addr" and sets["n-x"].flags == ("interval",) and not sets["n-x"].extra
    assert sets["to-wl"].is_map and sets["to-wl"].elements == {'"kal1" : goto kaliko-tw-kal1'}


def test_anti_spoofing_allows_only_each_workloads_own_ipv4_addresses() -> None:
    a = EndpointProgram("ns/a", iface_name("ns", "a"), ("198.18.0.2", "198.18.0.20", "fd00::2"))
    b = EndpointProgram("ns/b", iface_name("ns", "b"), ("198.18.0.3",))
    first = render(_state(a, b))
    forward = [r.split(" comment ")[0] for r in first.model.chains["forward"].rules]
    assert forward[0] == 'iifname "kal*" iifname . ip saddr != @wl-sources counter drop'
    assert forward[1].startswith("ct state established,related")  # spoofing is checked before conntrack
    assert first.model.sets[SOURCES_SET].type == "ifname . ipv4_addr"
    assert first.model.sets[SOURCES_SET].elements == {
        f'"{a.iface}" . 198.18.0.2',
        f'"{a.iface}" . 198.18.0.20',
        f'"{b.iface}" . 198.18.0.3',
    }
    moved = EndpointProgram("ns/a", a.iface, ("198.18.0.2", "198.18.0.21"))
    second = render(_state(moved, b), first)
    assert update_script(first.model, second.model) == (
        f'delete element ip kaliko wl-sources {{ "{a.iface}" . 198.18.0.20 }}\n'
        f'add element ip kaliko wl-sources {{ "{a.iface}" . 198.18.0.21 }}\n'
    )
    gone = render(_state(b), second)
    assert gone.model.sets[SOURCES_SET].elements == {f'"{b.iface}" . 198.18.0.3'}
    no_ips = render(_state(EndpointProgram("ns/c", iface_name("ns", "c"), ())))
    assert no_ips.model.sets[SOURCES_SET].elements == frozenset()  # sends nothing at all
    with pytest.raises(RenderError, match=r"endpoints\[ns/d\]\.ips\[1\]: 'nope' is not an IP address"):
        render(_state(EndpointProgram("ns/d", iface_name("ns", "d"), ("198.18.0.4", "nope"))))
