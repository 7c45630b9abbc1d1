"""An offline cluster: manifests compiled by the real compiler, judged by in-memory data planes.

Owns placing pods the manifests leave unplaced, compiling every node's state, programming one
`MemoryDataPlane` per node and answering "may pod A open a connection to pod B on port P?" from
what those data planes hold (the same `policycore.evaluate` logic the agent's memory data plane
uses). It does not own the semantics (`policycore.calc`, `policycore.evaluate`) or printing.

Placement is deterministic, so the same manifests always give the same answers:

* pods without ``spec.nodeName`` are dealt round-robin, in ``namespace/name`` order, over the
  Node resources (sorted by name) or, with none, over ``node-1`` .. ``node-<nodes>``;
* pods without an IP get the lowest free addresses of 198.18.0.0/16 (from 198.18.0.2), in
  ``namespace/name`` order; addresses the manifests already use are skipped.

Only pods that are endpoints (scheduled, addressed, not finished) take part.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from node_agent.dataplane.memory import MemoryDataPlane
from policycore.calc.endpoints import is_endpoint
from policycore.calc.oracle import compile_all
from policycore.evaluate import Explanation, IpAddress, Peer, connection_allowed
from policycore.ir import PROTOCOL_NUMBERS, NodeState
from policycore.model import Resource, key_of, parse_resource, to_document
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
    """Nodes programmed from `resources`; ask `connection` or `matrix` (see the module docstring)."""

    def __init__(self, resources: Iterable[Resource], *, nodes: int = DEFAULT_NODES) -> None:
        self.resources = place(list(resources), nodes=nodes)
        endpoints = sorted((p for p in _pods(self.resources) if is_endpoint(p)), key=_pod_key)
        self.pods = {
            _pod_key(p): PlacedPod(_pod_key(p), p.spec.node_name or "", p.ips()[0]) for p in endpoints
        }
        self.dataplanes: dict[str, MemoryDataPlane] = {}
        for node, state in sorted(compile_states(self.resources).items()):
            dataplane = MemoryDataPlane()
            dataplane.apply(state)
            self.dataplanes[node] = dataplane

    def programmed(self) -> dict[str, NodeState]:
        """What each node's data plane holds."""
        return {node: dp.programmed() for node, dp in self.dataplanes.items()}

    def peer(self, key: str) -> Peer:
        pod = self.pods.get(key)
        if pod is None:
            known = ", ".join(self.pods) or "none"
            raise KeyError(f"no pod {key!r} among the manifests' endpoints (known: {known})")
        return Peer(pod.ip, pod.key, pod.node)

    def connection(self, src: str, dst: str, port: int, protocol: str = "TCP") -> Explanation:
        """Egress at `src`'s node, then ingress at `dst`'s node, for a new connection to `port`."""
        return connection_allowed(
            self.programmed(), self.peer(src), self.peer(dst), protocol_number(protocol), port
        )

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


def apply_all(current: Iterable[Resource], applied: Iterable[Resource]) -> list[Resource]:
    """``kubectl apply`` over a list: each applied resource creates or replaces the one with its key."""
    by_key = {key_of(r): r for r in current}
    for resource in applied:
        by_key[key_of(resource)] = resource
    return list(by_key.values())


def compile_states(resources: Sequence[Resource]) -> dict[str, NodeState]:
    """Every node's desired state, from the compiler."""
    return compile_all(resources)


def protocol_number(protocol: str) -> int:
    if protocol not in PORT_PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of {', '.join(PORT_PROTOCOLS)}")
    return PROTOCOL_NUMBERS[protocol]


def place(resources: list[Resource], *, nodes: int = DEFAULT_NODES) -> list[Resource]:
    """`resources` with every pod given a node and an IP (see the module docstring)."""
    node_names = sorted(r.metadata.name for r in resources if isinstance(r, Node)) or [
        f"node-{i}" for i in range(1, nodes + 1)
    ]
    pods = sorted(_pods(resources), key=_pod_key)
    used = {ipaddress.ip_address(ip) for p in pods for ip in p.ips()}
    free = _free_addresses(used)
    unplaced = [p for p in pods if not p.spec.node_name]
    nodes_of = {_pod_key(p): node_names[i % len(node_names)] for i, p in enumerate(unplaced)}
    ips_of = {_pod_key(p): str(next(free)) for p in pods if not p.ips()}
    placed: list[Resource] = []
    for resource in resources:
        if isinstance(resource, Pod):
            key = _pod_key(resource)
            if key in nodes_of or key in ips_of:
                resource = _with_placement(resource, nodes_of.get(key), ips_of.get(key))
        placed.append(resource)
    return placed


def _with_placement(pod: Pod, node: str | None, ip: str | None) -> Resource:
    doc = to_document(pod)
    if node is not None:
        doc["spec"]["nodeName"] = node
    if ip is not None:
        doc["status"]["podIP"] = ip
        doc["status"]["podIPs"] = [{"ip": ip}]
    return parse_resource(doc)


def _free_addresses(used: set[IpAddress]) -> Iterator[IpAddress]:
    for offset in range(FIRST_HOST, POD_NETWORK.num_addresses - 1):
        address = POD_NETWORK.network_address + offset
        if address not in used:
            yield address
    raise ValueError(f"no free address left in {POD_NETWORK}")


def _pods(resources: Iterable[Resource]) -> Iterator[Pod]:
    return (r for r in resources if isinstance(r, Pod))


def _pod_key(pod: Pod) -> str:
    return endpoint_key(key_of(pod).namespace, pod.metadata.name)
