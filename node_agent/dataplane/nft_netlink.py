"""Read-only nf_tables netlink queries that libnftables makes expensive: generation, chains, rule comments.

Owns one ``NETLINK_NETFILTER`` socket (opened in the namespace of the thread that builds it) and
the few read-only requests the driver's resync needs: the ruleset generation id, whether our table
exists, its chains (name and base-chain hook), each chain's rule comments, its named sets and
maps, and the names of objects of any other kind. It never writes: every change goes through
libnftables transactions (`nft_driver`).

Why: listing a 50k-rule table through libnftables costs seconds, almost all of it in the kernel's
whole-table rule dump, which restarts its walk over every rule for each batch it sends (quadratic).
Dumping chain by chain keeps each walk to one chain's rules (about 0.3 s for 50k rules), and only
the rule comments are decoded, because comments are what a chain is compared by.

Invariants: replies are matched to their request by sequence number; a netlink error raises
`NetlinkError` with the errno; nothing here holds state besides the socket and the sequence.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

_NETLINK_NETFILTER = 12
_NFPROTO_IPV4 = 2
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_MSG = {
    "gettable": 1,
    "getchain": 4,
    "getrule": 7,
    "getset": 10,
    "getgen": 16,
    "getobj": 19,
    "getflowtable": 23,
}
_SET_ANONYMOUS, _SET_MAP = 0x1, 0x8
_HOOKS = {0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}
_UDATA_RULE_COMMENT = 0

Attrs = dict[int, bytes]


class NetlinkError(OSError):
    """The kernel refused a request (``errno`` is the positive error number)."""


def hook_text(chain_type: str, hooknum: int, priority: int, policy: int) -> str:
    """A base chain's hook as nft prints it (``type filter hook forward priority filter; policy accept;``)."""
    prio = "filter" if chain_type == "filter" and priority == 0 else str(priority)
    verdict = {0: "drop", 1: "accept"}.get(policy, str(policy))
    return f"type {chain_type} hook {_HOOKS.get(hooknum, str(hooknum))} priority {prio}; policy {verdict};"


def _attr(kind: int, value: str) -> bytes:
    data = value.encode() + b"\0"
    return struct.pack("=HH", 4 + len(data), kind) + data + b"\0" * (-len(data) % 4)


def _parse_attrs(data: bytes, offset: int, end: int) -> Attrs:
    found: Attrs = {}
    while offset + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        found.setdefault(kind & 0x3FFF, data[offset + 4 : offset + length])
        offset += (length + 3) & ~3
    return found


def _text(value: bytes | None) -> str:
    return (value or b"").rstrip(b"\0").decode(errors="replace")


def _comment(userdata: bytes | None) -> str | None:
    i = 0
    data = userdata or b""
    while i + 2 <= len(data):
        kind, length = data[i], data[i + 1]
        if kind == _UDATA_RULE_COMMENT:
            return _text(data[i + 2 : i + 2 + length])
        i += 2 + length
    return None


class NftNetlink:
    """Read-only nf_tables queries on one netlink socket; see the module docstring."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self._sock.bind((0, 0))
        self._seq = 0

    def _request(self, msg: str, attrs: bytes = b"", *, dump: bool = True) -> Iterator[Attrs]:
        self._seq += 1
        seq = self._seq
        body = struct.pack("=BBH", _NFPROTO_IPV4, 0, 0) + attrs
        flags = _NLM_F_REQUEST | (_NLM_F_DUMP if dump else 0)
        self._sock.send(struct.pack("=IHHII", 16 + len(body), (10 << 8) | _MSG[msg], flags, seq, 0) + body)
        while True:
            data = self._sock.recv(1 << 20)
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _flags, reply_seq, _pid = struct.unpack_from("=IHHII", data, offset)
                start, offset = offset, offset + ((length + 3) & ~3)
                if reply_seq != seq:
                    continue
                if kind == _NLMSG_DONE:
                    return
                if kind == _NLMSG_ERROR:
                    errno = -struct.unpack_from("=i", data, start + 16)[0]
                    if errno == 0:
                        return
                    raise NetlinkError(errno, f"nf_tables {msg}: errno {errno}")
                yield _parse_attrs(data, start + 20, start + length)
                if not dump:
                    return

    def generation(self) -> int:
        """The namespace's ruleset generation id (bumped by every committed transaction)."""
        for attrs in self._request("getgen", dump=False):
            return int(struct.unpack("!I", attrs[1])[0])
        raise NetlinkError(0, "nf_tables getgen: no reply")

    def table_exists(self, table: str) -> bool:
        try:
            return any(True for _ in self._request("gettable", _attr(1, table), dump=False))
        except NetlinkError as err:
            if err.errno == 2:  # ENOENT
                return False
            raise

    def chains(self, table: str) -> list[tuple[str, str]]:
        """``(name, hook)`` of every chain of ``table``; hook is "" for regular chains."""
        found = []
        for attrs in self._request("getchain", _attr(1, table)):
            if _text(attrs.get(1)) != table:
                continue
            hook = ""
            if 4 in attrs:
                nested = _parse_attrs(attrs[4], 0, len(attrs[4]))
                hooknum = struct.unpack("!I", nested[1])[0]
                priority = struct.unpack("!i", nested[2])[0]
                policy = struct.unpack("!I", attrs[5])[0] if 5 in attrs else 1
                hook = hook_text(_text(attrs.get(7)), hooknum, priority, policy)
            found.append((_text(attrs.get(3)), hook))
        return found

    def rule_comments(self, table: str, chain: str) -> list[str | None]:
        """Each rule's comment, in chain order (None for a rule without one)."""
        return [_comment(a.get(7)) for a in self._request("getrule", _attr(1, table) + _attr(2, chain))]

    def sets(self, table: str) -> list[tuple[str, bool]]:
        """``(name, is_map)`` of the named (non-anonymous) sets and maps of ``table``."""
        found = []
        for attrs in self._request("getset", _attr(1, table)):
            flags = struct.unpack("!I", attrs[3])[0] if 3 in attrs else 0
            if _text(attrs.get(1)) == table and not flags & _SET_ANONYMOUS:
                found.append((_text(attrs.get(2)), bool(flags & _SET_MAP)))
        return found

    def others(self, table: str) -> list[str]:
        """Stateful objects and flowtables of ``table`` (kinds we never create)."""
        names = []
        for kind in ("getobj", "getflowtable"):
            names += [
                f"{kind[3:]} {_text(a.get(2))}"
                for a in self._request(kind, _attr(1, table))
                if _text(a.get(1)) == table
            ]
        return names

    def close(self) -> None:
        self._sock.close()
