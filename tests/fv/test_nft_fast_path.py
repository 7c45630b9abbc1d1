"""The netlink fast path writes exactly what libnftables writes, and refuses exactly as it does.

Two private namespaces take the same sequence of node states, one through the fast path
(`nft_batch` + `NftNetlink.transact`) and one through libnftables only. After every step the two
tables must be identical as the kernel holds them: ``nft --debug=netlink list table`` (every
expression of every rule, every element's bytes, handles aside) and ``nft -s list table`` (chain
comments, rule comments, set contents). The steps cover what a pod change does: a local pod
appears (endpoint chains, dispatch-map and anti-spoofing elements, ip-set and named-port members),
its tiers change (chains flushed and refilled), its addresses change, it goes, and a set grows by
more elements than one netlink message holds.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator

import pytest
from pyroute2 import netns

from node_agent.dataplane.nft_driver import NftablesDataPlane
from node_agent.dataplane.nft_rules import set_name
from node_agent.dataplane.protocol import DataPlaneError
from policycore.ir import EndpointProgram, IpSet, NodeState, PolicyProgram, PortRange, Rule, TierProgram
from policycore.naming import iface_name

pytestmark = pytest.mark.netns

PREFIX = f"kb{os.getpid() % 100000}"


@pytest.fixture
def planes() -> Iterator[tuple[NftablesDataPlane, NftablesDataPlane]]:
    names = (f"{PREFIX}-fast", f"{PREFIX}-slow")
    for name in names:
        if name in netns.listnetns():
            netns.remove(name)
        netns.create(name)
    fast, slow = NftablesDataPlane(names[0]), NftablesDataPlane(names[1], fast_path=False)
    try:
        yield fast, slow
    finally:
        fast.close()
        slow.close()
        for name in names:
            netns.remove(name)


def _nft(name: str, *args: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", name, "nft", *args], capture_output=True, text=True, check=True
    ).stdout


def _sorted_elements(found: re.Match[str]) -> str:
    return "elements = { " + ", ".join(sorted(x.strip() for x in found.group(1).split(","))) + " }"


def _kernel_view(name: str) -> tuple[str, list[tuple[str, list[str]]]]:
    """Our table as listed, and as libnftnl decodes the kernel's netlink dump (handles removed).

    Hash sets list their elements in a per-set random order: elements are sorted.
    """
    text = re.sub(
        r"elements = \{(.*?)\}",
        _sorted_elements,
        _nft(name, "-s", "list", "table", "ip", "kaliko"),
        flags=re.S,
    )
    blocks: list[tuple[str, list[str]]] = []
    for raw in _nft(name, "--debug=netlink", "list", "table", "ip", "kaliko").splitlines():
        if raw and not raw[0].isspace():
            blocks.append((re.sub(r"( \d+)+$", "", raw), []))
        elif raw.strip() and blocks:
            blocks[-1][1].append(raw)
    for _, body in blocks:
        if body and all(x.lstrip().startswith("element ") for x in body):
            body.sort()
    return text, blocks


def _endpoint(pod: str, ips: tuple[str, ...], ingress: tuple[TierProgram, ...] = ()) -> EndpointProgram:
    return EndpointProgram(f"ns/{pod}", iface_name("ns", pod), ips, ingress, ingress)


WEB = "default/knp/ns/web"
GUARD = "security/gnp//guard"
POLICIES = {
    WEB: PolicyProgram(
        WEB,
        ingress=(
            Rule(
                "allow",
                f"{WEB}/ingress/0",
                protocol=6,
                src_ipsets=("s:front",),
                dst_ports=(PortRange(80, 80),),
            ),
            Rule("allow", f"{WEB}/ingress/1", dst_named_port_ipsets=("s:http",)),
        ),
        egress=(Rule("allow", f"{WEB}/egress/0", dst_nets=("198.18.0.0/16",)),),
    ),
    GUARD: PolicyProgram(
        GUARD,
        ingress=(Rule("pass", f"{GUARD}/ingress/0", protocol=6),),
        egress=(Rule("deny", f"{GUARD}/egress/0", protocol=17, dst_ports=(PortRange(53, 53),)),),
    ),
}
TIERS = (TierProgram("security", (GUARD,), "pass"), TierProgram("default", (WEB, "default/knp/ns/gone")))


def _state(endpoints: list[EndpointProgram], front: set[str], http: set[str]) -> NodeState:
    sets = [IpSet("s:front", "ip", frozenset(front)), IpSet("s:http", "ip_port", frozenset(http))]
    return NodeState({s.set_id: s for s in sets}, dict(POLICIES), {e.key: e for e in endpoints})


def test_the_fast_path_programs_what_libnftables_programs(
    planes: tuple[NftablesDataPlane, NftablesDataPlane],
) -> None:
    fast, slow = planes
    a = _endpoint("a", ("198.18.0.2",), TIERS)
    b = _endpoint("b", ("198.18.0.3",))
    c = _endpoint("c", ("198.18.0.4", "198.18.0.40"), TIERS)
    many = {f"10.1.{i >> 8}.{i & 255}" for i in range(1300)}
    steps = [
        ("first load", _state([a, b], {"198.18.0.2"}, {"198.18.0.2,tcp:8080"})),
        ("a local pod appears", _state([a, b, c], {"198.18.0.2", "198.18.0.4"}, {"198.18.0.4,udp:53"})),
        ("its tiers change", _state([a, b, _endpoint("c", c.ips, TIERS[1:])], {"198.18.0.4"}, set())),
        ("its addresses change", _state([a, b, _endpoint("c", ("198.18.0.41",), TIERS[1:])], set(), set())),
        ("it goes", _state([a, b], set(), set())),
        ("a set grows by 1300", _state([a, b], many, set())),
        ("and shrinks again", _state([a, b], {"198.18.0.2"}, set())),
    ]
    for step, (label, state) in enumerate(steps):
        fast.apply(state)
        slow.apply(state)
        assert slow.last_path == "libnftables"
        assert fast.last_path == ("libnftables" if step == 0 else "netlink"), label
        assert fast.last_script == slow.last_script, label
        listed, dumped = _kernel_view(fast.netns or ""), _kernel_view(slow.netns or "")
        assert listed[0] == dumped[0], label
        assert listed[1] == dumped[1], label
    assert fast.resync(full=True) == 0 and slow.resync(full=True) == 0


def test_a_refused_batch_applies_nothing_and_the_next_apply_repairs(
    planes: tuple[NftablesDataPlane, NftablesDataPlane],
) -> None:
    fast, _ = planes
    name = fast.netns or ""
    a, b = _endpoint("a", ("198.18.0.2",), TIERS), _endpoint("b", ("198.18.0.3",))
    fast.apply(_state([a], {"198.18.0.2", "198.18.0.5"}, set()))
    before = _kernel_view(name)
    _nft(name, "delete", "element", "ip", "kaliko", set_name("s:front"), "{ 198.18.0.5 }")
    drifted = _kernel_view(name)
    wanted = _state([a, b], {"198.18.0.2"}, set())  # deletes .5 (already gone: refused), adds b
    with pytest.raises(DataPlaneError, match=r"refused 'delete element .* No such file or directory"):
        fast.apply(wanted)
    assert fast.last_path == "netlink"
    assert _kernel_view(name) == drifted  # b's chains and elements did not land
    assert fast.programmed() == _state([a], {"198.18.0.2", "198.18.0.5"}, set())
    fast.apply(wanted)  # resyncs (puts .5 back), then applies the delta
    assert fast.programmed() == wanted
    assert fast.resync(full=True) == 0
    assert _kernel_view(name) != before
