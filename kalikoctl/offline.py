"""An offline cluster: manifests compiled by the real compiler, judged by in-memory data planes.

Owns placing pods the manifests leave unplaced, feeding every resource to the incremental
compiler (`CalcGraph`, as the controller's engine does), applying each node's flushed ops to that
node's `MemoryDataPlane`, and answering "may pod A open a connection to pod B on port P?" from
what those data planes hold (`policycore.evaluate`, the logic the agent's memory data plane
uses). It does not own the semantics (`policycore.calc`, `policycore.evaluate`) or printing.

::

    apply(resources) ─▶ place ─▶ CalcGraph.on_update ... flush() ─▶ {node: ops}
                                                                      │ apply_ops
    connection(a, b, port) ◀─ connection_allowed ◀─ programmed() ◀── MemoryDataPlane per node

Placement is deterministic, so the same manifests (applied in the same order) always give the
same answers, and a pod keeps its node and IP when it is applied again:

* pods without ``spec.nodeName`` are dealt round-robin, in ``namespace/name`` order within each
  `apply`, over the Node resources seen (sorted by name) or, with none, ``node-1`` .. ``node-<nodes>``;
* pods without an IP get the lowest free address of 198.18.0.0/16 from 198.18.0.2 on, in the same
  order; addresses the manifests already use are skipped.

Only pods that are endpoints (scheduled, addressed, not finished) take part.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from node_agent.dataplane.memory import MemoryDataPlane
from policycore.calc.endpoints import is_endpoint
from policycore.calc.graph import CalcGraph
from policycore.diff import apply_ops
from policycore.evaluate import Explanation, IpAddress, Peer, connection_allowed
from policycore.ir import PROTOCOL_NUMBERS, NodeState
from policycore.model import Resource, ResourceKey, key_of, parse_resource, to_document
from policycore.model.kube import Node, Pod
from policycore.naming import endpoint_key

POD_NETWORK = ipaddress.ip_network("198.18.0.0/16")
FIRST_HOST = 2
DEFAULT_NODES = 2
PORT_PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True, slots=True)
class PlacedPod:
    key: str
    node: str
    ip: str


class OfflineCluster:
    """Nodes programmed from the applied resources; ask `connection` or `matrix`."""

    def __init__(self, resources: Iterable[Resource] = (), *, nodes: int = DEFAULT_NODES) -> None:
        self.default_nodes = [f"node-{i}" for i in range(1, nodes + 1)]
        self.resources: dict[ResourceKey, Resource] = {}
        self.pods: dict[str, PlacedPod] = {}
        self.dataplanes: dict[str, MemoryDataPlane] = {}
        self._graph = CalcGraph()
        self._placements: dict[str, tuple[str | None, str | None]] = {}
        self._dealt = 0
        self.apply(resources)

    def apply(self, resources: Iterable[Resource]) -> None:
        """``kubectl apply``: each resource creates or replaces the one with its key; then flush."""
        for resource in self._place(list(resources)):
            self.resources[key_of(resource)] = resource
            self._graph.on_update(key_of(resource), resource)
        for node, ops in self._graph.flush().items():
            dataplane = self.dataplanes.setdefault(node, MemoryDataPlane())
            dataplane.apply(apply_ops(dataplane.programmed(), ops))
        endpoints = sorted(
            (r for r in self.resources.values() if isinstance(r, Pod) and is_endpoint(r)), key=_key
        )
        self.pods = {_key(p): PlacedPod(_key(p), p.spec.node_name or "", p.ips()[0]) for p in endpoints}

    def programmed(self) -> dict[str, NodeState]:
        """What each node's data plane holds."""
        return {node: dp.programmed() for node, dp in sorted(self.dataplanes.items())}

    def peer(self, key: str) -> Peer:
        pod = self.pods.get(key)
        if pod is None:
            known = ", ".join(self.pods) or "none"
            raise KeyError(f"no pod {key!r} among the manifests' endpoints (known: {known})")
        return Peer(pod.ip, pod.key, pod.node)

    def connection(self, src: str, dst: str, port: int, protocol: str = "TCP") -> Explanation:
        """Egress at `src`'s node, then ingress at `dst`'s node, for a new connection to `port`."""
        number = protocol_number(protocol)
        return connection_allowed(self.programmed(), self.peer(src), self.peer(dst), number, port)

    def matrix(self, port: int, protocol: str = "TCP") -> dict[str, dict[str, bool]]:
        """``{src: {dst: allowed}}`` over every ordered pair of distinct pods."""
        states = self.programmed()
        number = protocol_number(protocol)
        return {
            src: {
                dst: connection_allowed(states, self.peer(src), self.peer(dst), number, port).allowed
                for dst in self.pods
                if dst != src
            }
            for src in self.pods
        }

    def _place(self, resources: list[Resource]) -> list[Resource]:
        """`resources` with every pod given a node and an IP (see the module docstring)."""
        known = [r for r in (*self.resources.values(), *resources) if isinstance(r, Node)]
        node_names = sorted({r.metadata.name for r in known}) or self.default_nodes
        incoming = {_key(r): r for r in resources if isinstance(r, Pod)}
        used = {
            ipaddress.ip_address(ip)
            for pod in (*(r for r in self.resources.values() if isinstance(r, Pod)), *incoming.values())
            for ip in pod.ips()
        }
        used |= {ipaddress.ip_address(ip) for _, ip in self._placements.values() if ip is not None}
        free = _free_addresses(used)
        for key, pod in sorted(incoming.items()):
            if key in self._placements:
                continue
            node = None
            if not pod.spec.node_name:
                node = node_names[self._dealt % len(node_names)]
                self._dealt += 1
            self._placements[key] = (node, None if pod.ips() else str(next(free)))
        return [
            _with_placement(r, *self._placements[_key(r)]) if isinstance(r, Pod) else r for r in resources
        ]


def protocol_number(protocol: str) -> int:
    if protocol not in PORT_PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of {', '.join(PORT_PROTOCOLS)}")
    return PROTOCOL_NUMBERS[protocol]


def _with_placement(pod: Pod, node: str | None, ip: str | None) -> Resource:
    if (node is None or pod.spec.node_name) and (ip is None or pod.ips()):
        return pod
    doc = to_document(pod)
    if node is not None and not pod.spec.node_name:
        doc["spec"]["nodeName"] = node
    if ip is not None and not pod.ips():
        doc["status"]["podIP"] = ip
        doc["status"]["podIPs"] = [{"ip": ip}]
    return parse_resource(doc)


def _free_addresses(used: set[IpAddress]) -> Iterator[IpAddress]:
    for offset in range(FIRST_HOST, POD_NETWORK.num_addresses - 1):
        address = POD_NETWORK.network_address + offset
        if address not in used:
            yield address
    raise ValueError(f"no free address left in {POD_NETWORK}")


def _key(pod: Pod) -> str:
    return endpoint_key(key_of(pod).namespace, pod.metadata.name)
