"""IPv4 ip-set members as ascending deltas: the compact wire form of an ip set's addresses.

Owns `pack_members` and `unpack_members`. A member that is a plain dotted-quad IPv4 address (as
`socket.inet_ntoa` writes it) travels as an unsigned 32-bit number, ascending, each as its
difference from the previous one (the first from 0), in a packed ``repeated uint32`` field: a
pod's address takes one or two bytes instead of its text. Anything else (``ip_port`` members such
as ``198.18.0.5,tcp:80``, CIDRs, IPv6) stays a string. It does not own which message field holds
what (`wire.codec`) or compression (`wire.packing`). Two per-process memos keep the hot paths
cheap: `pack_members` remembers the last sets it packed (a flush sends one set to many nodes) and
the text of each address decoded is kept (a node sees the same pods' addresses again; emptied past
`NAMES_REMEMBERED`). Both hold immutable values only.

Why: an edit that points a rule at another selector sends every affected node that selector's
ip set. At 500 members the set's text was 1.9 KB after zlib, as deltas 0.6 KB (G3's policy-edit
budget is 2 KB per node).

Invariant: ``unpack_members(*pack_members(m)) == m`` for every set of strings ``m``.
"""

from __future__ import annotations

import functools
import itertools
import socket
from collections.abc import Collection, Iterable

from wire.packing import MalformedMessage

NAMES_REMEMBERED = 1 << 17
"""Addresses whose text is kept (about 9 MiB at most): a node sees the same pods' addresses again."""


class _AddressNames(dict[int, str]):
    """Address → dotted quad, computed on a miss; emptied when it grows past `NAMES_REMEMBERED`."""

    def __missing__(self, address: int) -> str:
        if len(self) >= NAMES_REMEMBERED:
            self.clear()
        name = self[address] = socket.inet_ntoa(address.to_bytes(4, "big"))
        return name


_NAMES = _AddressNames()
PACK_MEMO_SIZE = 128
"""Distinct member sets remembered: a flush sends the same set to many nodes."""


def _address(member: str) -> int | None:
    try:
        packed = socket.inet_aton(member)
    except (OSError, ValueError):  # not an address; ValueError: an embedded NUL
        return None
    return int.from_bytes(packed, "big") if socket.inet_ntoa(packed) == member else None


@functools.lru_cache(maxsize=PACK_MEMO_SIZE)
def pack_members(members: frozenset[str]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The IPv4 members as ascending deltas, and the other members sorted."""
    addresses: list[int] = []
    others: list[str] = []
    for member in members:
        address = _address(member)
        if address is None:
            others.append(member)
        else:
            addresses.append(address)
    addresses.sort()
    deltas = tuple(b - a for a, b in zip([0, *addresses], addresses, strict=False))
    return deltas, tuple(sorted(others))


def unpack_members(deltas: Collection[int], others: Iterable[str], what: str = "ip set") -> frozenset[str]:
    """The members again; `MalformedMessage` when the deltas run past 255.255.255.255."""
    if not deltas:  # most deltas of a pod change: one side is empty
        return frozenset(others)
    addresses = list(itertools.accumulate(deltas))
    if addresses[-1] > 0xFFFFFFFF:
        raise MalformedMessage(f"{what}: IPv4 deltas add up past 255.255.255.255")
    unpacked = map(_NAMES.__getitem__, addresses)  # a known address costs a lookup, in C
    return frozenset(others).union(unpacked) if others else frozenset(unpacked)
