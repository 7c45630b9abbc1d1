"""nf_tables netlink on one socket: the queries libnftables makes expensive, and fast-path batches.

Owns one ``NETLINK_NETFILTER`` socket (opened in the namespace of the thread that builds it), the
few read-only requests the driver's resync needs (the ruleset generation id, whether our table
exists, its chains with their base-chain hook, each chain's rule comments, its named sets and
maps, the names of objects of any other kind) and `transact`, which sends one batch that
`nft_batch.compile_script` built (one kernel transaction) and waits for the kernel's verdict on
every message. It does not decide what to write: scripts come from `nft_model`, and anything
`nft_batch` cannot compile goes through libnftables (`nft_driver`).

Why: listing a 50k-rule table through libnftables costs seconds, almost all of it in the kernel's
whole-table rule dump, which restarts its walk over every rule for each batch it sends (quadratic).
Dumping chain by chain keeps each walk to one chain's rules (about 0.3 s for 50k rules), and only
the rule comments are decoded, because comments are what a chain is compared by. Writing a pod
change directly skips libnftables' per-transaction cache fetch (see `nft_batch`).

Invariants: replies are matched to their request by sequence number; a netlink error raises
`NetlinkError` with the errno; a batch either commits whole or raises (the kernel aborts the
transaction when any message fails, and `transact` returns only after every message was
acknowledged); nothing here holds state besides the socket and the sequence.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator, Sequence

from node_agent.dataplane.nft_batch import Message

_NETLINK_NETFILTER = 12
_NFPROTO_IPV4 = 2
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_DUMP = 0x1, 0x4, 0x300
_NLM_F_ACK_TLVS = 0x200
_BATCH_BEGIN, _BATCH_END, _NFNL_SUBSYS_NFTABLES = 0x10, 0x11, 10
_SOL_NETLINK, _NETLINK_CAP_ACK, _NETLINK_EXT_ACK = 270, 10, 11
_NLMSGERR_ATTR_MSG = 1
_BATCH_TIMEOUT_S = 10.0
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
        self._sock.setsockopt(_SOL_NETLINK, _NETLINK_CAP_ACK, 1)  # acks carry headers, not whole messages
        self._sock.setsockopt(_SOL_NETLINK, _NETLINK_EXT_ACK, 1)  # errors carry the kernel's reason
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

    def transact(self, messages: Sequence[Message]) -> None:
        """Send ``messages`` as one batch (one transaction); raise `NetlinkError` if it did not commit."""
        self._seq += 1
        begin = self._seq
        batch = struct.pack("!BBH", 0, 0, _NFNL_SUBSYS_NFTABLES)  # nfgenmsg: AF_UNSPEC, v0, res_id
        out = [_message(_BATCH_BEGIN, 0, begin, batch)]
        for message in messages:
            self._seq += 1
            body = struct.pack("=BBH", _NFPROTO_IPV4, 0, 0) + message.attrs
            out.append(_message((10 << 8) | message.kind, _NLM_F_ACK | message.flags, self._seq, body))
        self._seq += 1
        out.append(_message(_BATCH_END, 0, self._seq, batch))
        pending = set(range(begin + 1, begin + 1 + len(messages)))
        failure: NetlinkError | None = None
        self._sock.settimeout(_BATCH_TIMEOUT_S)
        try:
            self._sock.sendall(b"".join(out))
            while pending:
                for seq, errno, reason in _acks(self._sock.recv(1 << 20)):
                    if seq == begin and errno:  # the commit itself failed (or the batch was refused)
                        pending.clear()
                        failure = failure or _refused(errno, "the batch", reason)
                    elif seq in pending:
                        pending.discard(seq)
                        if errno and failure is None:
                            failure = _refused(errno, repr(messages[seq - begin - 1].source), reason)
        except OSError as err:  # includes the timeout: the outcome is unknown, the caller resyncs
            raise NetlinkError(err.errno or 0, f"nf_tables batch: {err}") from err
        finally:
            self._sock.settimeout(None)
        if failure is not None:
            raise failure

    def close(self) -> None:
        self._sock.close()


def _refused(errno: int, what: str, reason: str) -> NetlinkError:
    detail = f" ({reason})" if reason else ""
    return NetlinkError(errno, f"nf_tables refused {what}: {os.strerror(errno)}{detail}")


def _message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, _NLM_F_REQUEST | flags, seq, 0) + body


def _acks(data: bytes) -> Iterator[tuple[int, int, str]]:
    """``(seq, errno, reason)`` of every NLMSG_ERROR (an ack when errno is 0) in one receive."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", data, offset)
        if length < 16:
            return
        if kind == _NLMSG_ERROR and length >= 36:
            errno = -struct.unpack_from("=i", data, offset + 16)[0]
            reason = ""
            if errno and flags & _NLM_F_ACK_TLVS:  # extended ack: TLVs after the echoed header
                tlvs = _parse_attrs(data, offset + 36, offset + length)
                reason = _text(tlvs.get(_NLMSGERR_ATTR_MSG))
            yield seq, errno, reason
        offset += (length + 3) & ~3
