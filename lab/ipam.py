"""The lab's IP address management: pod IPs from 198.18.0.0/16, in /26 blocks affine to nodes.

Owns `Ipam`, Calico's host-local IPAM in miniature: a node claims the lowest free /26 block of the
pool the first time it needs an address and hands out the lowest free address of its blocks; when
every block is claimed it borrows a free address from another node's block. A pod may ask for a
fixed address with the annotation ``cni.projectcalico.org/ipAddrs: '["198.18.1.1"]'`` (Calico's
spelling); any pool address not held by another pod (nor reserved, like the lab's fabric) works on
any node. It also answers which node a block belongs to (`affine_node`).

It does not own interfaces or routes (`lab.topology`), where pods go or who holds it (`lab.pods`,
in the lab's CNI daemon; `to_json` is for reports).

Invariants: one address per pod key and one pod per address; `assign` for a pod that already
holds an address returns that address (a re-apply keeps the IP); the pool's network and broadcast
addresses are never handed out; a refused request changes nothing.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

POOL = ipaddress.IPv4Network("198.18.0.0/16")
BLOCK_PREFIX = 26
IP_ADDRS_ANNOTATION = "cni.projectcalico.org/ipAddrs"
ANNOTATION_FIELD = f"metadata.annotations[{IP_ADDRS_ANNOTATION}]"


class IpamError(ValueError):
    """A request IPAM cannot satisfy; the message names the field path and the reason."""


def requested_address(annotations: Mapping[str, str] | None) -> str | None:
    """The address a pod's ``cni.projectcalico.org/ipAddrs`` annotation asks for (None: any).

    The value is a JSON list holding one IPv4 address of the pool (the lab is IPv4 only).
    """
    raw = (annotations or {}).get(IP_ADDRS_ANNOTATION)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise IpamError(f"{ANNOTATION_FIELD}: {raw!r} is not a JSON list like '[\"198.18.1.1\"]'") from None
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], str):
        raise IpamError(f"{ANNOTATION_FIELD}: expected a JSON list of exactly one IPv4 address, got {raw!r}")
    try:
        address = ipaddress.IPv4Address(value[0])
    except ValueError:
        raise IpamError(f"{ANNOTATION_FIELD}[0]: {value[0]!r} is not an IPv4 address") from None
    if address not in POOL or address in (POOL.network_address, POOL.broadcast_address):
        raise IpamError(f"{ANNOTATION_FIELD}[0]: {address} is not a usable address of the pool {POOL}")
    return str(address)


def block_of(ip: str) -> str:
    """The /26 block of the pool that holds ``ip``."""
    return str(ipaddress.IPv4Network(f"{ip}/{BLOCK_PREFIX}", strict=False))


@dataclass
class Ipam:
    """Blocks claimed by nodes and addresses held by pods (``namespace/name`` keys)."""

    blocks: dict[str, str] = field(default_factory=dict)
    """block CIDR → the node it is affine to"""
    allocations: dict[str, str] = field(default_factory=dict)
    """address → the pod key holding it"""
    reserved: tuple[str, ...] = ()
    """CIDRs of the pool that are never handed out (the lab's fabric)"""

    def check_request(self, address: str) -> str | None:
        """Why ``address`` cannot be given to a new pod (None: it can)."""
        ip = ipaddress.IPv4Address(address)
        for cidr in self.reserved:
            if ip in ipaddress.IPv4Network(cidr):
                return f"{ANNOTATION_FIELD}[0]: {address} is reserved ({cidr})"
        holder = self.allocations.get(address)
        if holder is not None:
            return f"{ANNOTATION_FIELD}[0]: {address} is already held by pod {holder}"
        return None

    def address_of(self, pod: str) -> str | None:
        for address, holder in self.allocations.items():
            if holder == pod:
                return address
        return None

    def affine_node(self, ip: str) -> str | None:
        """The node whose block holds ``ip`` (None: the block is not claimed)."""
        return self.blocks.get(block_of(ip))

    def node_blocks(self, node: str) -> list[str]:
        return sorted((b for b, n in self.blocks.items() if n == node), key=_block_order)

    def assign(self, pod: str, node: str, requested: str | None = None) -> str:
        """An address for ``pod`` on ``node``: the one it holds, the one requested, or the next free."""
        held = self.address_of(pod)
        if held is not None:
            if requested is not None and requested != held:
                raise IpamError(
                    f"{ANNOTATION_FIELD}: pod {pod} already holds {held}; delete it to change its address"
                )
            return held
        if requested is not None:
            problem = self.check_request(requested)
            if problem is not None:
                raise IpamError(problem)
            self.allocations[requested] = pod
            return requested
        address = self._next_free(node)
        self.allocations[address] = pod
        return address

    def release(self, pod: str) -> str | None:
        """Free ``pod``'s address (its block stays claimed); returns it, or None if it held none."""
        address = self.address_of(pod)
        if address is not None:
            del self.allocations[address]
        return address

    def _next_free(self, node: str) -> str:
        for block in self.node_blocks(node):
            found = self._free_in(block)
            if found is not None:
                return found
        for block in self._unclaimed_blocks():
            found = self._free_in(block)
            if found is not None:
                self.blocks[block] = node
                return found
        for block in sorted(self.blocks, key=_block_order):  # borrow, as Calico does when the pool is full
            found = self._free_in(block)
            if found is not None:
                return found
        raise IpamError(f"spec: no free address left in the pool {POOL}")

    def _free_in(self, block: str) -> str | None:
        for address in ipaddress.IPv4Network(block):
            if address in (POOL.network_address, POOL.broadcast_address):
                continue
            if str(address) not in self.allocations:
                return str(address)
        return None

    def _unclaimed_blocks(self) -> Iterator[str]:
        reserved = [ipaddress.IPv4Network(cidr) for cidr in self.reserved]
        for block in POOL.subnets(new_prefix=BLOCK_PREFIX):
            if str(block) not in self.blocks and not any(block.overlaps(r) for r in reserved):
                yield str(block)

    def to_json(self) -> dict[str, Any]:
        return {
            "blocks": dict(sorted(self.blocks.items())),
            "allocations": dict(self.allocations),
            "reserved": list(self.reserved),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Ipam:
        return cls(
            dict(data.get("blocks", {})), dict(data.get("allocations", {})), tuple(data.get("reserved", ()))
        )


def _block_order(block: str) -> int:
    return int(ipaddress.IPv4Network(block).network_address)
