"""Delta scripts compiled straight to one nf_tables netlink batch: the pod-change fast path.

Owns the translation of the part of nft's language that pod changes use into the netlink messages
of one transaction: element adds and deletes in plain (non-interval) sets and verdict maps,
regular chains added, flushed and deleted, and rules made of mark tests, mark clears, counters and
verdicts (every endpoint-chain rule `nft_rules.endpoint_chain_rules` writes). It does not decide
what changes (`nft_model.update_script` writes the script, the single source of truth) or send
anything (`nft_netlink.NftNetlink.transact`). Pure: no I/O.

Why: libnftables fetches its cache (every chain and set of the namespace) before each transaction,
so on a 10k-rule table a one-element change costs ~1 ms and a new endpoint ~4 ms of userspace
work, while the kernel commits the same batch in ~0.1 ms. The batch is exactly what ``nft -f``
would send (the fv test compares the kernel's dumps of both byte for byte), so listings, counters
and drift detection cannot tell which path wrote a rule.

Invariants: `compile_script` returns None (the caller uses libnftables) for any line it does not
fully understand, so it never sends half a script; every returned batch is one transaction; keys
are encoded from the set's declared type, and an element that does not fit the type is refused
(None), never truncated.
"""

from __future__ import annotations

import functools
import re
import socket
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from node_agent.dataplane.nft_model import SetSpec
from node_agent.dataplane.nft_rules import FAMILY, TABLE

NEWCHAIN, DELCHAIN, NEWRULE, DELRULE, NEWSETELEM, DELSETELEM = 3, 5, 6, 8, 12, 14
NLM_F_CREATE, NLM_F_APPEND = 0x400, 0x800
BATCH_MAX_BYTES = 1 << 16
"""Bigger scripts go through libnftables (a whole-table load is not a fast-path change)."""

_NESTED = 0x8000
_IFNAMSIZ = 16
_ELEMENTS_PER_MESSAGE = 512  # an attribute's length is 16 bits: keep element lists well below
_META_MARK, _REG1 = 3, 1
_VERDICTS = {"drop": 0, "accept": 1, "jump": -3, "goto": -4, "return": -5}
_PREFIX = f"{FAMILY} {TABLE} "
_ELEMENT = re.compile(rf"^(add|delete) element {_PREFIX}(\S+) \{{ (.+) \}}$")
_CHAIN = re.compile(rf'^add chain {_PREFIX}(\S+)(?: \{{ comment "([^"]*)"; \}})?$')
_RULE = re.compile(rf'^add rule {_PREFIX}(\S+) (.+?)(?: comment "([^"]*)")?$')
_FLUSH = re.compile(rf"^flush chain {_PREFIX}([A-Za-z0-9_.-]+)$")
_DELETE_CHAIN = re.compile(rf"^delete chain {_PREFIX}([A-Za-z0-9_.-]+)$")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_CLEAR = re.compile(r"meta mark set meta mark & (0x[0-9a-f]+)")
_TEST = re.compile(r"meta mark & (0x[0-9a-f]+) == (0x[0-9a-f]+|0)")
_COUNTER = re.compile(r"counter")
_VERDICT = re.compile(r"(accept|drop|return)|(jump|goto) ([A-Za-z0-9_.-]+)")


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a batch: the nf_tables message type, its extra flags, its attributes, and
    the script line it does (for error messages)."""

    kind: int
    flags: int
    attrs: bytes
    source: str = ""


class _Unsupported(Exception):
    """A line outside the fast path's vocabulary: the whole script goes through libnftables."""


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute (padded to 4 bytes)."""
    return struct.pack("=HH", 4 + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def nest(kind: int, *parts: bytes) -> bytes:
    return attr(kind | _NESTED, b"".join(parts))


def _str(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def _be32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("!i" if value < 0 else "!I", value))


def _data(kind: int, value: bytes) -> bytes:
    return nest(kind, attr(1, value))  # NFTA_DATA_VALUE


def _verdict_data(kind: int, verdict: str, chain: str = "") -> bytes:
    inner = _be32(1, _VERDICTS[verdict]) + (_str(2, chain) if chain else b"")
    return nest(kind, nest(2, inner))  # NFTA_DATA_VERDICT { CODE, CHAIN }


def _udata_comment(text: str) -> bytes:
    value = text.encode() + b"\0"
    if len(value) > 255:
        raise _Unsupported(text)
    return bytes((0, len(value))) + value  # NFTNL_UDATA_{RULE,CHAIN}_COMMENT = 0


def _expr(name: str, *parts: bytes) -> bytes:
    return nest(1, _str(1, name), nest(2, *parts))  # NFTA_LIST_ELEM { NAME, DATA }


def _mark_load() -> bytes:
    return _expr("meta", _be32(2, _META_MARK), _be32(1, _REG1))  # KEY mark, DREG 1


def _mark_value(text: str) -> bytes:
    """A mark constant as the kernel compares it: a host-order 32-bit integer."""
    value = int(text, 16)
    if value > 0xFFFFFFFF:
        raise _Unsupported(text)
    return struct.pack("=I", value)


def _bitwise_and(mask: str) -> bytes:
    # SREG 1, DREG 1, LEN 4, MASK, XOR 0: "reg 1 = (reg 1 & mask) ^ 0"
    return _expr(
        "bitwise",
        _be32(1, _REG1),
        _be32(2, _REG1),
        _be32(3, 4),
        _data(4, _mark_value(mask)),
        _data(5, bytes(4)),
    )


def _statements(body: str) -> Iterator[bytes]:
    """The expressions of one rule body; raises `_Unsupported` on anything else."""
    rest = body
    while rest:
        found = _CLEAR.match(rest)
        if found:
            yield _mark_load()
            yield _bitwise_and(found.group(1))
            yield _expr("meta", _be32(2, _META_MARK), _be32(3, _REG1))  # KEY mark, SREG 1
        elif found := _TEST.match(rest):
            yield _mark_load()
            yield _bitwise_and(found.group(1))
            yield _expr("cmp", _be32(1, _REG1), _be32(2, 0), _data(3, _mark_value(found.group(2))))  # OP eq
        elif found := _COUNTER.match(rest):
            yield _expr("counter", attr(1, bytes(8)), attr(2, bytes(8)))
        elif found := _VERDICT.fullmatch(rest):
            verdict = found.group(1) or found.group(2)
            yield _expr("immediate", _be32(1, 0), _verdict_data(2, verdict, found.group(3) or ""))
            return
        else:
            raise _Unsupported(rest)
        rest = rest[found.end() :]
        if rest and not rest.startswith(" "):
            raise _Unsupported(rest)
        rest = rest[1:]


@functools.lru_cache(maxsize=8192)
def _rule_payload(body: str, comment: str | None) -> bytes:
    """A rule's expressions and comment (cached: endpoint chains repeat the same few rules)."""
    udata = attr(7, _udata_comment(comment)) if comment is not None else b""  # NFTA_RULE_USERDATA
    return nest(4, *_statements(body)) + udata  # NFTA_RULE_EXPRESSIONS


def _ifname(text: str) -> bytes:
    if not (text.startswith('"') and text.endswith('"')) or not _IFNAME.fullmatch(text[1:-1]):
        raise _Unsupported(text)  # also a wildcard ("kal*"): nft encodes those as prefixes
    return text[1:-1].encode().ljust(_IFNAMSIZ, b"\0")


def _ipv4(text: str) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET, text)
    except OSError:
        raise _Unsupported(text) from None


def _number(text: str, limit: int) -> int:
    if not text.isdigit() or int(text) > limit:
        raise _Unsupported(text)
    return int(text)


def _key(set_type: str, text: str) -> bytes:
    parts = text.split(" . ")
    if set_type == "ipv4_addr" and len(parts) == 1:
        return _ipv4(parts[0])
    if set_type == "ifname . ipv4_addr" and len(parts) == 2:
        return _ifname(parts[0]) + _ipv4(parts[1])
    if set_type == "ipv4_addr . inet_proto . inet_service" and len(parts) == 3:
        proto, port = _number(parts[1], 255), _number(parts[2], 0xFFFF)
        return _ipv4(parts[0]) + struct.pack("=I", proto) + struct.pack("!H", port) + b"\0\0"
    if set_type == "ifname : verdict" and len(parts) == 1:
        return _ifname(parts[0])
    raise _Unsupported(text)


def _element(spec: SetSpec, text: str, adding: bool) -> bytes:
    if not spec.is_map:
        return nest(1, nest(1, attr(1, _key(spec.type, text))))
    key, sep, verdict = text.partition(" : ")
    if not adding and not sep:
        return nest(1, nest(1, attr(1, _key(spec.type, key))))
    found = _VERDICT.fullmatch(verdict)
    if not found or not found.group(2):
        raise _Unsupported(text)
    return nest(1, nest(1, attr(1, _key(spec.type, key))), _verdict_data(2, found.group(2), found.group(3)))


def _elements(text: str, found: re.Match[str], sets: Mapping[str, SetSpec]) -> Iterator[Message]:
    verb, name, items = found.groups()
    spec = sets.get(name)
    if spec is None or spec.interval:
        raise _Unsupported(name)  # interval sets need nft's range encoding: libnftables does them
    adding = verb == "add"
    kind, flags = (NEWSETELEM, NLM_F_CREATE) if adding else (DELSETELEM, 0)
    encoded = [_element(spec, item, adding) for item in items.split(", ")]
    head = _str(1, TABLE) + _str(2, name)
    for start in range(0, len(encoded), _ELEMENTS_PER_MESSAGE):
        chunk = encoded[start : start + _ELEMENTS_PER_MESSAGE]
        yield Message(kind, flags, head + nest(3, *chunk), text)


def _line(text: str, sets: Mapping[str, SetSpec]) -> Iterator[Message]:
    table = _str(1, TABLE)
    if found := _ELEMENT.match(text):
        yield from _elements(text, found, sets)
    elif found := _CHAIN.match(text):
        comment = found.group(2)
        udata = attr(12, _udata_comment(comment)) if comment else b""  # NFTA_CHAIN_USERDATA
        yield Message(NEWCHAIN, NLM_F_CREATE, table + _str(3, found.group(1)) + udata, text)
    elif found := _RULE.match(text):
        payload = _rule_payload(found.group(2), found.group(3))
        yield Message(NEWRULE, NLM_F_CREATE | NLM_F_APPEND, table + _str(2, found.group(1)) + payload, text)
    elif found := _FLUSH.match(text):
        yield Message(DELRULE, 0, table + _str(2, found.group(1)), text)  # no handle: every rule
    elif found := _DELETE_CHAIN.match(text):
        yield Message(DELCHAIN, 0, table + _str(3, found.group(1)), text)
    else:
        raise _Unsupported(text)


def compile_script(script: str, sets: Mapping[str, SetSpec]) -> list[Message] | None:
    """The batch that does exactly what ``script`` does, or None when it is not all fast-path.

    ``sets`` are the table's sets and maps (their types say how to encode keys); the script must
    not create or delete sets (such a line is outside the vocabulary anyway).
    """
    if len(script) > BATCH_MAX_BYTES:
        return None
    try:
        messages = [m for text in script.splitlines() if text for m in _line(text, sets)]
    except _Unsupported:
        return None
    if sum(len(m.attrs) + 20 for m in messages) > BATCH_MAX_BYTES:
        return None
    return messages
