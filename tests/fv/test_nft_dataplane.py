"""The nftables data plane on real namespaces: real TCP/UDP connections obey the programmed states.

A 2-node lab with 3 pods (a and c on node-1, b on node-2) runs TCP and UDP servers; each test
programs hand-built `NodeState`s through one `NftablesDataPlane` per node and checks every
connection both against an explicit expectation and against `policycore.evaluate` (the in-memory
data plane's verdict), so the kernel and the model agree on allow/deny/pass/log, tier defaults,
named ports, nets and notNets. Further tests cover incremental transactions, refused
transactions, drift repair, a foreign table in the same namespace, and anti-spoofing (a pod sending
from an address that is not its own is dropped, even when the route back to it exists).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from netns_sockets import PodSockets

from lab.topology import Lab, PodInfo
from node_agent.dataplane.netns_thread import NetnsThread
from node_agent.dataplane.nft_driver import NftablesDataPlane
from node_agent.dataplane.nft_rules import endpoint_chain, policy_chain, set_name
from node_agent.dataplane.protocol import DataPlaneError
from policycore.evaluate import Peer, connection_allowed
from policycore.ir import (
    EndpointProgram,
    IpSet,
    NodeState,
    PolicyProgram,
    PortRange,
    Rule,
    TierProgram,
)

pytestmark = pytest.mark.netns

PREFIX = f"kn{os.getpid() % 100000}"
TCP, UDP = 6, 17
PORTS = {"tcp": (80, 81, 8080), "udp": (53,)}


class Cluster:
    def __init__(self, lab: Lab, sockets: PodSockets) -> None:
        self.lab, self.sockets = lab, sockets
        self.a = lab.create_pod("node-1", "front", "a", "198.18.0.2")
        self.b = lab.create_pod("node-2", "back", "b", "198.18.0.66")
        self.c = lab.create_pod("node-1", "back", "c", "198.18.0.3")
        self.pods = (self.a, self.b, self.c)
        for pod in self.pods:
            sockets.serve(pod.netns, pod.ip, tcp=PORTS["tcp"], udp=PORTS["udp"])
        self.planes = {n: NftablesDataPlane(lab.nodes[n].netns) for n in lab.nodes}
        self.states: dict[str, NodeState] = {}

    def program(
        self, ipsets: list[IpSet], policies: list[PolicyProgram], endpoints: list[EndpointProgram]
    ) -> None:
        """Apply one cluster-wide state: each node gets its own endpoints and everything else."""
        node_of = {p.key: p.node for p in self.pods}
        for node, plane in self.planes.items():
            state = NodeState(
                {s.set_id: s for s in ipsets},
                {p.policy_id: p for p in policies},
                {e.key: e for e in endpoints if node_of[e.key] == node},
            )
            plane.apply(state)
            self.states[node] = state

    def observe(self) -> dict[tuple[str, str, str, int], bool]:
        checks = [
            (proto, s, d, port)
            for s in self.pods
            for d in self.pods
            if s is not d
            for proto, ports in PORTS.items()
            for port in ports
        ]
        answers = self.sockets.matrix([(proto, s.netns, d.ip, port) for proto, s, d, port in checks])
        return {
            (proto, s.name, d.name, port): ok for (proto, s, d, port), ok in zip(checks, answers, strict=True)
        }

    def model(self, proto: str, src: PodInfo, dst: PodInfo, port: int) -> bool:
        peer = {p.name: Peer(p.ip, p.key, p.node) for p in self.pods}
        number = TCP if proto == "tcp" else UDP
        return connection_allowed(self.states, peer[src.name], peer[dst.name], number, port).allowed

    def check(self, expected: dict[tuple[str, str, str, int], bool]) -> dict[tuple[str, str, str, int], bool]:
        """Observe all traffic; it must equal the model everywhere and ``expected`` where given."""
        seen = self.observe()
        byname = {p.name: p for p in self.pods}
        modelled = {k: self.model(k[0], byname[k[1]], byname[k[2]], k[3]) for k in seen}
        assert seen == modelled, {k: (seen[k], modelled[k]) for k in seen if seen[k] != modelled[k]}
        assert {k: seen[k] for k in expected} == expected
        return seen


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    lab = Lab(prefix=PREFIX)
    lab.cleanup_leftovers()
    sockets = PodSockets()
    try:
        lab.create_node("node-1")
        lab.create_node("node-2")
        cluster = Cluster(lab, sockets)
        yield cluster
        for plane in cluster.planes.values():
            plane.close()
    finally:
        sockets.close()
        lab.teardown()


def nft(cluster: Cluster, node: str, *args: str) -> str:
    cmd = ["ip", "netns", "exec", cluster.lab.nodes[node].netns, "nft", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def endpoint(
    pod: PodInfo, ingress: tuple[TierProgram, ...] = (), egress: tuple[TierProgram, ...] = ()
) -> EndpointProgram:
    return EndpointProgram(pod.key, pod.iface, (pod.ip,), ingress, egress)


def rule(action: str, rid: str, **criteria: object) -> Rule:
    return Rule(action, rid, **criteria)  # type: ignore[arg-type]


def all_endpoints(cluster: Cluster, **tiers: dict[str, tuple[TierProgram, ...]]) -> list[EndpointProgram]:
    return [endpoint(p, **tiers.get(p.name, {})) for p in cluster.pods]


def test_unprogrammed_workloads_are_dropped_and_no_tiers_allows(cluster: Cluster) -> None:
    cluster.program([], [], [])
    seen = cluster.observe()
    assert not any(seen.values())  # kal* interfaces not in the maps: fail closed
    cluster.program([], [], all_endpoints(cluster))
    assert all(cluster.check({}).values())


def test_ingress_allow_from_a_set_on_one_port_tier_default_denies_the_rest(cluster: Cluster) -> None:
    pid = "default/knp/back/web"
    frontends = IpSet("s:front", "ip", frozenset({cluster.a.ip}))
    web = PolicyProgram(
        pid,
        ingress=(
            rule(
                "allow",
                f"{pid}/ingress/0",
                protocol=TCP,
                src_ipsets=("s:front",),
                dst_ports=(PortRange(80, 80),),
            ),
        ),
    )
    tiers = {"b": {"ingress": (TierProgram("default", (pid,)),)}}
    cluster.program([frontends], [web], all_endpoints(cluster, **tiers))
    cluster.check(
        {
            ("tcp", "a", "b", 80): True,
            ("tcp", "a", "b", 81): False,
            ("tcp", "c", "b", 80): False,
            ("udp", "a", "b", 53): False,
            ("tcp", "b", "a", 80): True,
            ("tcp", "a", "c", 81): True,
        }
    )


def test_egress_deny_log_and_pass_through_tiers(cluster: Cluster) -> None:
    sec, app = "security/gnp//guard", "default/knp/front/out"
    guard = PolicyProgram(
        sec,
        egress=(
            rule("log", f"{sec}/egress/0", protocol=UDP),
            rule(
                "deny",
                f"{sec}/egress/1",
                protocol=UDP,
                dst_ports=(PortRange(53, 53),),
                dst_nets=("198.18.0.64/26",),
            ),
            rule("pass", f"{sec}/egress/2", protocol=TCP, dst_ports=(PortRange(80, 81),)),
        ),
    )
    out = PolicyProgram(
        app, egress=(rule("allow", f"{app}/egress/0", protocol=TCP, dst_ports=(PortRange(80, 80),)),)
    )
    tiers = {"a": {"egress": (TierProgram("security", (sec,), "deny"), TierProgram("default", (app,)))}}
    cluster.program([], [guard, out], all_endpoints(cluster, **tiers))
    cluster.check(
        {
            ("udp", "a", "b", 53): False,  # denied by the security tier (dst in node-2's block)
            ("udp", "a", "c", 53): False,  # not decided in security: its default denies
            ("tcp", "a", "b", 80): True,  # passed to default, allowed there
            ("tcp", "a", "b", 81): False,  # passed to default, default tier denies
            ("tcp", "a", "b", 8080): False,  # security tier default
            ("tcp", "b", "a", 8080): True,
        }
    )
    pass_tier = {"a": {"egress": (TierProgram("security", (sec,), "pass"),)}}
    cluster.program([], [guard, out], all_endpoints(cluster, **pass_tier))
    cluster.check({("udp", "a", "c", 53): True, ("udp", "a", "b", 53): False, ("tcp", "a", "b", 8080): True})


def test_named_ports_nets_and_not_nets(cluster: Cluster) -> None:
    pid = "default/knp/back/named"
    named = IpSet("s:named", "ip_port", frozenset({f"{cluster.b.ip},tcp:8080", f"{cluster.c.ip},udp:53"}))
    policy = PolicyProgram(
        pid,
        ingress=(
            rule(
                "allow",
                f"{pid}/ingress/0",
                dst_named_port_ipsets=("s:named",),
                not_src_nets=(f"{cluster.c.ip}/32",),
            ),
            rule(
                "allow",
                f"{pid}/ingress/1",
                protocol=TCP,
                src_nets=("198.18.0.0/30", "10.0.0.0/8"),
                dst_ports=(PortRange(81, 81),),
            ),
        ),
    )
    tiers = {p: {"ingress": (TierProgram("default", (pid,)),)} for p in ("b", "c")}
    cluster.program([named], [policy], all_endpoints(cluster, **tiers))
    cluster.check(
        {
            ("tcp", "a", "b", 8080): True,
            ("tcp", "c", "b", 8080): False,  # notNets excludes c
            ("tcp", "a", "b", 80): False,
            ("udp", "a", "c", 53): True,
            ("udp", "a", "b", 53): False,
            ("tcp", "a", "c", 81): True,  # a = .2 is in 198.18.0.0/30
            ("tcp", "b", "c", 81): False,
        }
    )


def test_incremental_apply_sends_only_what_changed(cluster: Cluster) -> None:
    pid = "default/knp/back/web"
    web = PolicyProgram(pid, ingress=(rule("allow", f"{pid}/ingress/0", src_ipsets=("s:front",)),))
    tiers = {"b": {"ingress": (TierProgram("default", (pid,)),)}}
    endpoints = all_endpoints(cluster, **tiers)
    cluster.program([IpSet("s:front", "ip", frozenset({cluster.a.ip}))], [web], endpoints)
    cluster.check({("tcp", "c", "b", 80): False, ("tcp", "a", "b", 80): True})
    cluster.program([IpSet("s:front", "ip", frozenset({cluster.a.ip, cluster.c.ip}))], [web], endpoints)
    script = cluster.planes["node-2"].last_script
    assert script == f"add element ip kaliko {set_name('s:front')} {{ {cluster.c.ip} }}\n"
    cluster.check({("tcp", "c", "b", 80): True})
    node1_before = cluster.planes["node-1"].last_script
    cluster.program([IpSet("s:front", "ip", frozenset({cluster.a.ip, cluster.c.ip}))], [web], endpoints)
    assert cluster.planes["node-1"].last_script == node1_before  # nothing changed: no transaction
    web2 = PolicyProgram(
        pid, ingress=(rule("allow", f"{pid}/ingress/0", src_ipsets=("s:front",), protocol=UDP),)
    )
    cluster.program([IpSet("s:front", "ip", frozenset({cluster.a.ip, cluster.c.ip}))], [web2], endpoints)
    lines = cluster.planes["node-2"].last_script.splitlines()
    chain = policy_chain(pid, "ingress")
    assert lines[0] == f"flush chain ip kaliko {chain}" and all(chain in x for x in lines)
    assert len(lines) == 2
    cluster.check({("tcp", "a", "b", 80): False, ("udp", "a", "b", 53): True})


def test_a_refused_transaction_changes_nothing_and_the_next_apply_repairs(cluster: Cluster) -> None:
    pid = "default/knp/back/web"
    web = PolicyProgram(pid, ingress=(rule("allow", f"{pid}/ingress/0", src_ipsets=("s:front",)),))
    tiers = {"b": {"ingress": (TierProgram("default", (pid,)),)}}
    front = IpSet("s:front", "ip", frozenset({cluster.a.ip, cluster.c.ip}))
    cluster.program([front], [web], all_endpoints(cluster, **tiers))
    plane = cluster.planes["node-2"]
    before = plane.programmed()
    nft(cluster, "node-2", "delete", "element", "ip", "kaliko", set_name("s:front"), f"{{ {cluster.c.ip} }}")
    wider = PolicyProgram(
        pid,
        ingress=(
            rule("allow", f"{pid}/ingress/0", src_ipsets=("s:front",)),
            rule("allow", f"{pid}/ingress/1"),
        ),
    )
    shrunk = IpSet("s:front", "ip", frozenset({cluster.a.ip}))
    state = NodeState({"s:front": shrunk}, {pid: wider}, {cluster.b.key: endpoint(cluster.b, **tiers["b"])})
    with pytest.raises(DataPlaneError, match="refused"):
        plane.apply(state)  # deleting c's element fails: it is already gone
    assert plane.programmed() == before
    assert not cluster.sockets.tcp(cluster.c.netns, cluster.b.ip, 80)  # the wider rule did not land
    plane.apply(state)  # resyncs first, then applies
    assert plane.programmed() == state
    cluster.states["node-2"] = state
    cluster.check({("tcp", "c", "b", 80): True})


def test_drift_is_repaired_and_foreign_tables_are_untouched(cluster: Cluster) -> None:
    pid = "default/knp/back/web"
    web = PolicyProgram(
        pid, ingress=(rule("allow", f"{pid}/ingress/0", src_ipsets=("s:front",), protocol=TCP),)
    )
    tiers = {"b": {"ingress": (TierProgram("default", (pid,)),)}}
    cluster.program(
        [IpSet("s:front", "ip", frozenset({cluster.a.ip}))], [web], all_endpoints(cluster, **tiers)
    )
    plane = cluster.planes["node-2"]
    expected = {("tcp", "c", "b", 80): False, ("tcp", "a", "b", 80): True, ("udp", "a", "b", 53): False}
    cluster.check(expected)
    assert plane.resync() == 0
    nft(cluster, "node-2", "add", "table", "ip", "foreign")
    nft(
        cluster,
        "node-2",
        "add",
        "chain",
        "ip",
        "foreign",
        "guard",
        "{ type filter hook forward priority 10; }",
    )
    nft(cluster, "node-2", "add", "rule", "ip", "foreign", "guard", "counter")
    foreign = nft(cluster, "node-2", "-s", "list", "table", "ip", "foreign")
    assert plane.resync() == 0  # the generation moved, but our table is intact
    tw = endpoint_chain(cluster.b.iface, "ingress")
    nft(cluster, "node-2", "flush", "chain", "ip", "kaliko", tw)
    assert cluster.sockets.tcp(cluster.c.netns, cluster.b.ip, 80)  # the hole drift opened
    assert plane.resync() == 1
    cluster.check(expected)
    listing = nft(cluster, "node-2", "-a", "list", "chain", "ip", "kaliko", policy_chain(pid, "ingress"))
    handle = next(x.rsplit("# handle ", 1)[1] for x in listing.splitlines() if "counter" in x)
    nft(cluster, "node-2", "delete", "rule", "ip", "kaliko", policy_chain(pid, "ingress"), "handle", handle)
    nft(cluster, "node-2", "insert", "rule", "ip", "kaliko", "forward", "ip", "daddr", cluster.b.ip, "accept")
    nft(cluster, "node-2", "add", "chain", "ip", "kaliko", "stray")
    nft(cluster, "node-2", "add", "set", "ip", "kaliko", "stray-set", "{ type ipv4_addr; }")
    assert cluster.sockets.tcp(cluster.c.netns, cluster.b.ip, 80)
    assert plane.resync() == 4  # policy chain, forward chain, stray chain, stray set
    cluster.check(expected)
    nft(cluster, "node-2", "delete", "table", "ip", "kaliko")
    assert cluster.sockets.tcp(cluster.c.netns, cluster.b.ip, 80)
    assert plane.resync() > 4  # the whole table is recreated
    cluster.check(expected)
    assert nft(cluster, "node-2", "-s", "list", "table", "ip", "foreign") == foreign
    nft(cluster, "node-2", "delete", "table", "ip", "foreign")


def test_without_a_netns_argument_the_driver_programs_the_namespace_it_runs_in(cluster: Cluster) -> None:
    node = cluster.lab.nodes["node-1"].netns
    program = (
        "from node_agent.dataplane.nft_driver import NftablesDataPlane\n"
        "from policycore.ir import NodeState\n"
        "plane = NftablesDataPlane(None)\n"
        "plane.apply(NodeState())\n"
        "print(plane.resync(full=True), plane.last_script.splitlines()[0])\n"
    )
    tables = ["nft", "list", "tables"]
    root_before = subprocess.run(tables, capture_output=True, text=True, check=True).stdout
    run = subprocess.run(
        ["ip", "netns", "exec", node, sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.split() == ["0", "add", "table", "ip", "kaliko"]
    assert "forward" in nft(cluster, "node-1", "list", "chain", "ip", "kaliko", "forward")
    assert subprocess.run(tables, capture_output=True, text=True, check=True).stdout == root_before
    assert cluster.planes["node-1"].resync(full=True) > 0  # the module's plane takes its table back


def _connect_from(netns: str, source: str, dst: str, port: int, proto: str) -> bool:
    """One connection (or datagram) from ``netns`` bound to ``source``; true when the server answered."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    thread = NetnsThread(netns)
    try:
        client = thread.call(socket.socket, socket.AF_INET, kind)
    finally:
        thread.close()
    with client:
        client.settimeout(0.6)
        client.bind((source, 0))
        try:
            if proto == "tcp":
                client.connect((dst, port))
            else:
                client.sendto(b"hi", (dst, port))
            return client.recv(2) == b"ok"
        except OSError:
            return False


def test_a_workload_may_only_send_from_its_own_addresses(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    spoofed = "198.18.0.9"  # in node-1's block, owned by no pod
    node1 = cluster.lab.nodes["node-1"].netns
    ip = ["ip", "netns", "exec"]
    setup = [
        [*ip, a.netns, "ip", "addr", "add", f"{spoofed}/32", "dev", "eth0"],
        [*ip, node1, "ip", "route", "replace", f"{spoofed}/32", "dev", a.iface],  # replies find a
    ]
    for cmd in setup:
        subprocess.run(cmd, check=True)
    try:
        legit = [endpoint(p) for p in cluster.pods if p is not a]
        widened = EndpointProgram(a.key, a.iface, (a.ip, spoofed))
        cluster.program([], [], [widened, *legit])
        assert _connect_from(a.netns, spoofed, b.ip, 80, "tcp")  # the path works when the address is a's
        assert _connect_from(a.netns, spoofed, b.ip, 53, "udp")
        cluster.program([], [], all_endpoints(cluster))
        assert cluster.planes["node-1"].last_script == (
            f'delete element ip kaliko wl-sources {{ "{a.iface}" . {spoofed} }}\n'
        )
        assert cluster.planes["node-1"].last_path == "netlink"  # an address change is an element change
        assert not _connect_from(a.netns, spoofed, b.ip, 80, "tcp")
        assert not _connect_from(a.netns, spoofed, b.ip, 53, "udp")
        assert not _connect_from(a.netns, spoofed, cluster.c.ip, 80, "tcp")  # same node, too
        assert _connect_from(a.netns, a.ip, b.ip, 80, "tcp")
        forward = nft(cluster, "node-1", "list", "chain", "ip", "kaliko", "forward")
        spoof_rule = next(x for x in forward.splitlines() if "anti-spoofing" in x)
        assert "packets 0 " not in spoof_rule  # the drops are this rule's
        cluster.check({("tcp", "a", "b", 80): True, ("udp", "a", "b", 53): True})  # legit traffic = model
    finally:
        subprocess.run([*ip, node1, "ip", "route", "del", f"{spoofed}/32"], check=False)
        subprocess.run([*ip, a.netns, "ip", "addr", "del", f"{spoofed}/32", "dev", "eth0"], check=False)
