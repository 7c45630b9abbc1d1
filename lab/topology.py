"""A pure layer-3 cluster on one Linux box: nodes and pods as network namespaces, wired by pyroute2.

Owns the namespaces, veths, addresses, routes and neighbour entries of one lab, all named with
the lab's prefix so that several labs (a test's and the demo's) can run side by side, and the
records of what it created (`NodeInfo`, `PodInfo`). It does not own policy (the agents program
``table ip kaliko`` in each node's namespace), processes inside pods, or IP allocation.

Shape (nothing in the root namespace is touched, so the host's routing never changes)::

    <prefix>-fabric   bridge kfab, one port fab<i> per node          (198.18.255.0/24)
    <prefix>-<node>   fab0 = 198.18.255.<i+1>/24 on kfab; ip_forward=1
                      <block of node j>/26 via 198.18.255.<j+1> for every other node j
                      <pod ip>/32 dev kal<hash> (proxy_arp, static neighbour) for each local pod
                      <pod ip>/32 via the owner's fabric ip for pods borrowed from our block
                      or living on another node outside that node's block
    <prefix>-pod-<ns>-<name>
                      eth0 = <pod ip>/32, 169.254.1.1 dev eth0 scope link, default via 169.254.1.1,
                      static neighbour 169.254.1.1 -> the host veth's MAC (as Calico does)

Each node gets one /26 block of 198.18.0.0/16 by its index; any pool address works on any node:
a pod whose IP is outside its node's block is reached through a /32 route on every other node.

Invariants: `teardown` removes every namespace the lab created (and with them every veth, route
and neighbour, which all live inside); `cleanup_leftovers` removes every namespace with our
prefix, for a crashed run. A failure half-way through `create_pod` removes what it created.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns

from node_agent.dataplane.netns_thread import NetnsThread
from policycore.naming import endpoint_key, iface_name

__all__ = ["Lab", "LabError", "NodeInfo", "PodInfo", "iface_name"]

POOL = ipaddress.IPv4Network("198.18.0.0/16")
FABRIC = ipaddress.IPv4Network("198.18.255.0/24")
BLOCK_PREFIX = 26
GATEWAY = "169.254.1.1"
BRIDGE = "kfab"
_SCOPE_LINK = 253
_NUD_PERMANENT = 0x80
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_NETNS_MAX = 48


class LabError(RuntimeError):
    """A lab operation that cannot be done (bad name, address in use, missing node)."""


@dataclass(frozen=True)
class NodeInfo:
    name: str
    index: int
    netns: str
    fabric_ip: str
    block: str


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    node: str
    netns: str
    ip: str
    iface: str

    @property
    def key(self) -> str:
        return endpoint_key(self.namespace, self.name)


def _label(value: str, field: str) -> str:
    if not _LABEL.fullmatch(value) or len(value) > 63:
        raise LabError(f"{field}: {value!r} is not a DNS label ([a-z0-9-], at most 63)")
    return value


def _netns_name(prefix: str, *parts: str) -> str:
    name = "-".join((prefix, *parts))
    if len(name) <= _NETNS_MAX:
        return name
    return f"{prefix}-{parts[0]}-{hashlib.sha1(name.encode()).hexdigest()[:16]}"


class _Netns:
    """A namespace's worker thread and its rtnetlink socket."""

    def __init__(self, name: str) -> None:
        self.thread = NetnsThread(name)
        self.ipr: IPRoute = self.thread.call(IPRoute)

    def do(self, method: str, *args: object, **kwargs: object) -> object:
        return self.thread.call(lambda: getattr(self.ipr, method)(*args, **kwargs))

    def index(self, ifname: str) -> int:
        found = self.thread.call(lambda: self.ipr.link_lookup(ifname=ifname))
        if not found:
            raise LabError(f"{self.thread.name}: no interface {ifname}")
        return int(found[0])

    def mac(self, ifname: str) -> str:
        index = self.index(ifname)
        links = self.thread.call(lambda: self.ipr.get_links(index))
        return str(links[0].get_attr("IFLA_ADDRESS"))

    def sysctl(self, path: str, value: str) -> None:
        def write() -> None:
            with open(f"/proc/sys/net/{path}", "w") as f:
                f.write(value)

        self.thread.call(write)

    def up(self, ifname: str) -> None:
        self.do("link", "set", index=self.index(ifname), state="up")

    def close(self) -> None:
        self.thread.call(self.ipr.close)
        self.thread.close()


class Lab:
    """One lab: see the module docstring. Not thread-safe: one owner drives it."""

    def __init__(self, prefix: str = "kaliko") -> None:
        self.prefix = _label(prefix, "prefix")
        self.fabric_netns = f"{prefix}-fabric"
        self.nodes: dict[str, NodeInfo] = {}
        self.pods: dict[str, PodInfo] = {}
        self._ns: dict[str, _Netns] = {}

    # -- namespaces ---------------------------------------------------------------------------

    def _create_netns(self, name: str) -> _Netns:
        if name in pyroute2_netns.listnetns():
            raise LabError(f"netns {name} already exists (run cleanup_leftovers?)")
        pyroute2_netns.create(name)
        handle = _Netns(name)
        handle.up("lo")
        return handle

    def _remove_netns(self, name: str) -> None:
        handle = self._ns.pop(name, None)
        if handle is not None:
            handle.close()
        if name in pyroute2_netns.listnetns():
            pyroute2_netns.remove(name)

    def _fabric(self) -> _Netns:
        if self.fabric_netns not in self._ns:
            handle = self._create_netns(self.fabric_netns)
            self._ns[self.fabric_netns] = handle
            handle.do("link", "add", ifname=BRIDGE, kind="bridge")
            handle.up(BRIDGE)
        return self._ns[self.fabric_netns]

    # -- nodes --------------------------------------------------------------------------------

    def create_node(self, name: str) -> NodeInfo:
        """A node namespace on the fabric, with routes to every other node's block."""
        _label(name, "node")
        if name in self.nodes or name == "fabric" or name.startswith("pod-"):
            raise LabError(f"node {name!r}: already exists or reserved")
        index = max((n.index for n in self.nodes.values()), default=-1) + 1
        if index >= FABRIC.num_addresses - 2:
            raise LabError("the fabric is full")
        block = ipaddress.IPv4Network(
            (int(POOL.network_address) + (index << (32 - BLOCK_PREFIX)), BLOCK_PREFIX)
        )
        if block.overlaps(FABRIC):
            raise LabError("the pool has no block left for another node")
        info = NodeInfo(name, index, _netns_name(self.prefix, name), str(FABRIC[index + 1]), str(block))
        fabric = self._fabric()
        node = self._create_netns(info.netns)
        self._ns[info.netns] = node
        try:
            port = f"fab{index}"
            node.do(
                "link",
                "add",
                ifname="fab0",
                kind="veth",
                peer={"ifname": port, "net_ns_fd": self.fabric_netns},
            )
            fabric.do("link", "set", index=fabric.index(port), master=fabric.index(BRIDGE), state="up")
            node.do(
                "addr", "add", index=node.index("fab0"), address=info.fabric_ip, prefixlen=FABRIC.prefixlen
            )
            node.up("fab0")
            node.sysctl("ipv4/ip_forward", "1")
            for other in self.nodes.values():
                self._route(info, other.block, other.fabric_ip)
                self._route(other, info.block, info.fabric_ip)
            for pod in self.pods.values():
                if self._needs_host_route(pod):
                    self._route(info, f"{pod.ip}/32", self.nodes[pod.node].fabric_ip)
        except BaseException:
            self._remove_netns(info.netns)
            raise
        self.nodes[name] = info
        return info

    def _route(self, node: NodeInfo, dst: str, via: str) -> None:
        self._ns[node.netns].do("route", "replace", dst=dst, gateway=via)

    def _needs_host_route(self, pod: PodInfo) -> bool:
        """A pod outside its node's block is reached by a /32 route on every other node."""
        return ipaddress.IPv4Address(pod.ip) not in ipaddress.IPv4Network(self.nodes[pod.node].block)

    def node_of_block(self, ip: str) -> NodeInfo | None:
        address = ipaddress.IPv4Address(ip)
        return next((n for n in self.nodes.values() if address in ipaddress.IPv4Network(n.block)), None)

    # -- pods ---------------------------------------------------------------------------------

    def create_pod(self, node: str, namespace: str, name: str, ip: str) -> PodInfo:
        """A pod namespace on ``node`` with ``ip``/32 behind a veth (any pool address works)."""
        if node not in self.nodes:
            raise LabError(f"pod {namespace}/{name}: node {node!r} does not exist")
        _label(namespace, "namespace")
        _label(name, "pod")
        try:
            address = ipaddress.IPv4Address(ip)
        except ValueError as err:
            raise LabError(f"pod {namespace}/{name}: ip {ip!r}: {err}") from None
        if address not in POOL or address in FABRIC:
            raise LabError(f"pod {namespace}/{name}: ip {ip} is not in the pod pool {POOL} (minus {FABRIC})")
        key = endpoint_key(namespace, name)
        if key in self.pods or any(p.ip == str(address) for p in self.pods.values()):
            raise LabError(f"pod {key}: the pod or ip {ip} already exists")
        info = PodInfo(
            namespace,
            name,
            node,
            _netns_name(self.prefix, "pod", namespace, name),
            str(address),
            iface_name(namespace, name),
        )
        host = self._ns[self.nodes[node].netns]
        pod = self._create_netns(info.netns)
        try:
            host.do(
                "link",
                "add",
                ifname=info.iface,
                kind="veth",
                peer={"ifname": "eth0", "net_ns_fd": info.netns},
            )
            host_index = host.index(info.iface)
            host.up(info.iface)
            host.sysctl(f"ipv4/conf/{info.iface}/proxy_arp", "1")
            eth0 = pod.index("eth0")
            pod.up("eth0")
            pod.do("addr", "add", index=eth0, address=info.ip, prefixlen=32)
            pod.do("route", "add", dst=f"{GATEWAY}/32", oif=eth0, scope=_SCOPE_LINK)
            pod.do("route", "add", dst="0.0.0.0/0", gateway=GATEWAY, oif=eth0)
            pod.do(
                "neigh", "add", dst=GATEWAY, lladdr=host.mac(info.iface), ifindex=eth0, state=_NUD_PERMANENT
            )
            host.do("route", "add", dst=f"{info.ip}/32", oif=host_index, scope=_SCOPE_LINK)
            host.do(
                "neigh", "add", dst=info.ip, lladdr=pod.mac("eth0"), ifindex=host_index, state=_NUD_PERMANENT
            )
        except BaseException:
            self._delete_host_veth(info)
            pod.close()
            pyroute2_netns.remove(info.netns)
            raise
        pod.close()
        self.pods[key] = info
        if self._needs_host_route(info):
            for other in self.nodes.values():
                if other.name != node:
                    self._route(other, f"{info.ip}/32", self.nodes[node].fabric_ip)
        return info

    def _delete_host_veth(self, pod: PodInfo) -> None:
        host = self._ns[self.nodes[pod.node].netns]
        found = host.thread.call(lambda: host.ipr.link_lookup(ifname=pod.iface))
        if found:
            host.do("link", "del", index=found[0])

    def delete_pod(self, namespace: str, name: str) -> None:
        """Remove a pod: its /32 routes elsewhere, its veth (at once), its namespace."""
        key = endpoint_key(namespace, name)
        pod = self.pods.pop(key, None)
        if pod is None:
            raise LabError(f"pod {key} does not exist")
        if self._needs_host_route(pod):
            for other in self.nodes.values():
                if other.name != pod.node:
                    self._ns[other.netns].do("route", "del", dst=f"{pod.ip}/32")
        self._delete_host_veth(pod)
        self._remove_netns(pod.netns)

    # -- teardown -----------------------------------------------------------------------------

    def teardown(self) -> None:
        """Remove every namespace this lab created (pods, nodes, fabric)."""
        for pod in list(self.pods.values()):
            self._remove_netns(pod.netns)
        self.pods.clear()
        for node in list(self.nodes.values()):
            self._remove_netns(node.netns)
        self.nodes.clear()
        self._remove_netns(self.fabric_netns)

    def cleanup_leftovers(self) -> list[str]:
        """Remove every namespace named with our prefix (a crashed run's); return their names."""
        ours = sorted(n for n in pyroute2_netns.listnetns() if n.startswith(f"{self.prefix}-"))
        for name in ours:
            self._remove_netns(name)
        return ours
