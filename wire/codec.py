"""Codec between the pure core's diff values and the `NodeMessage` protobuf (the Kafka payload).

Owns `encode_diff` / `decode_diff`, `diff_to_pb` / `diff_from_pb` (the snapshot call) and the op
and program conversions they need (also used by the admin API's dry run). It does not own
transport (iokit), meaning (policycore) or the byte envelope (`wire.packing`: compression and its
guard). `decode_diff` and `diff_from_pb` raise `MalformedMessage` for anything that is not a valid
message, so callers can count and skip it.

Inside a message, each endpoint's ingress and egress tier lists are references into the message's
`tier_lists` table of distinct lists (the endpoints of one namespace mostly share theirs), and
`wire.packing` compresses large bodies; plain IPv4 ip-set members travel as ascending deltas
(`wire.ipv4_members`). Decoding gives endpoints that share a list the same tuple.
`op_to_pb` alone (no message around it, the admin API's dry run) keeps tiers inline and
members as text. Invariant: ``decode_diff(
encode_diff(d)) == d`` and ``diff_from_pb(diff_to_pb(d)) == d`` for every diff.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from policycore.diff import (
    EndpointRemove,
    EndpointUpdate,
    IpSetDelta,
    IpSetRemove,
    IpSetReplace,
    NodeDiff,
    Op,
    PolicyRemove,
    PolicyUpdate,
    StreamPosition,
)
from policycore.ir import (
    Action,
    EndpointProgram,
    IcmpMatch,
    IpSet,
    IpSetKind,
    PolicyProgram,
    PortRange,
    Rule,
    TierDefault,
    TierProgram,
)
from wire.gen.kaliko.v1 import node_stream_pb2 as pb
from wire.ipv4_members import pack_members, unpack_members
from wire.packing import MalformedMessage, deflate, inflate, parse

__all__ = [
    "MalformedMessage",
    "decode_diff",
    "diff_from_pb",
    "diff_to_pb",
    "encode_diff",
    "endpoint_from_pb",
    "endpoint_to_pb",
    "op_from_pb",
    "op_to_pb",
    "policy_from_pb",
    "policy_to_pb",
]

_STR_LISTS = (
    "src_ipsets",
    "not_src_ipsets",
    "src_nets",
    "not_src_nets",
    "src_named_port_ipsets",
    "not_src_named_port_ipsets",
    "dst_ipsets",
    "not_dst_ipsets",
    "dst_nets",
    "not_dst_nets",
    "dst_named_port_ipsets",
    "not_dst_named_port_ipsets",
)
_PORT_LISTS = ("src_ports", "not_src_ports", "dst_ports", "not_dst_ports")
_ACTIONS = ("allow", "deny", "pass", "log")
_KINDS = ("ip", "ip_port", "net")
TierLists = Sequence[tuple[TierProgram, ...]]
TierTable = dict[tuple[TierProgram, ...], int]
"""Encode side: each distinct tier list of a message → its 1-based reference, in first-use order."""


def _rule_into(msg: pb.Rule, rule: Rule) -> None:
    msg.action = rule.action
    msg.rule_id = rule.rule_id
    if rule.protocol is not None:
        msg.protocol = rule.protocol
    if rule.not_protocol is not None:
        msg.not_protocol = rule.not_protocol
    for name in ("icmp", "not_icmp"):
        icmp: IcmpMatch | None = getattr(rule, name)
        if icmp is not None:
            target = getattr(msg, name)
            target.type = icmp.type
            if icmp.code is not None:
                target.code = icmp.code
    for name in _STR_LISTS:
        if values := getattr(rule, name):
            getattr(msg, name).extend(values)
    for name in _PORT_LISTS:
        ranges = getattr(msg, name)
        for p in getattr(rule, name):
            ranges.add(first=p.first, last=p.last)


def _rule_from_pb(msg: pb.Rule) -> Rule:
    if msg.action not in _ACTIONS:
        raise MalformedMessage(f"rule {msg.rule_id!r}: unknown action {msg.action!r}")
    icmp = {
        name: IcmpMatch(
            getattr(msg, name).type, getattr(msg, name).code if getattr(msg, name).HasField("code") else None
        )
        for name in ("icmp", "not_icmp")
        if msg.HasField(name)
    }
    return Rule(
        action=cast(Action, msg.action),
        rule_id=msg.rule_id,
        protocol=msg.protocol if msg.HasField("protocol") else None,
        not_protocol=msg.not_protocol if msg.HasField("not_protocol") else None,
        icmp=icmp.get("icmp"),
        not_icmp=icmp.get("not_icmp"),
        **_lists(msg),
    )


def _lists(msg: pb.Rule) -> dict[str, Any]:
    lists: dict[str, Any] = {name: tuple(getattr(msg, name)) for name in _STR_LISTS}
    lists.update(
        {name: tuple(PortRange(p.first, p.last) for p in getattr(msg, name)) for name in _PORT_LISTS}
    )
    return lists


def policy_to_pb(program: PolicyProgram) -> pb.PolicyProgram:
    msg = pb.PolicyProgram()
    _policy_into(msg, program)
    return msg


def _policy_into(msg: pb.PolicyProgram, program: PolicyProgram) -> None:
    msg.policy_id = program.policy_id
    for rule in program.ingress:
        _rule_into(msg.ingress.add(), rule)
    for rule in program.egress:
        _rule_into(msg.egress.add(), rule)


def policy_from_pb(msg: pb.PolicyProgram) -> PolicyProgram:
    return PolicyProgram(
        msg.policy_id,
        tuple(_rule_from_pb(r) for r in msg.ingress),
        tuple(_rule_from_pb(r) for r in msg.egress),
    )


def _tiers_into(msg: Any, tiers: tuple[TierProgram, ...]) -> None:
    """Append ``tiers`` to a repeated TierProgram field (built in place: nested constructors copy)."""
    for t in tiers:
        msg.add(name=t.name, policies=t.policies, default_action=t.default_action)


def _tiers_from_pb(tiers: object) -> tuple[TierProgram, ...]:
    out = []
    for t in cast(list[pb.TierProgram], tiers):
        if t.default_action not in ("deny", "pass"):
            raise MalformedMessage(f"tier {t.name!r}: unknown default action {t.default_action!r}")
        out.append(TierProgram(t.name, tuple(t.policies), cast(TierDefault, t.default_action)))
    return tuple(out)


def endpoint_to_pb(program: EndpointProgram, table: TierTable | None = None) -> pb.EndpointProgram:
    """Tiers inline, or (with the message's ``table``) as references into it."""
    msg = pb.EndpointProgram()
    _endpoint_into(msg, program, table)
    return msg


def _endpoint_into(msg: pb.EndpointProgram, program: EndpointProgram, table: TierTable | None) -> None:
    msg.key = program.key
    msg.iface = program.iface
    msg.ips.extend(program.ips)
    if table is None:
        _tiers_into(msg.ingress, program.ingress)
        _tiers_into(msg.egress, program.egress)
    else:
        msg.ingress_list = _reference(program.ingress, table)
        msg.egress_list = _reference(program.egress, table)


def _reference(tiers: tuple[TierProgram, ...], table: TierTable) -> int:
    return table.setdefault(tiers, len(table) + 1) if tiers else 0


def endpoint_from_pb(msg: pb.EndpointProgram, tier_lists: TierLists = ()) -> EndpointProgram:
    """``tier_lists``: the message's decoded table, which references index (1-based)."""
    ingress = _direction(msg, "ingress", msg.ingress_list, msg.ingress, tier_lists)
    egress = _direction(msg, "egress", msg.egress_list, msg.egress, tier_lists)
    return EndpointProgram(msg.key, msg.iface, tuple(msg.ips), ingress, egress)


def _direction(
    msg: pb.EndpointProgram, name: str, ref: int, inline: object, tier_lists: TierLists
) -> tuple[TierProgram, ...]:
    if ref == 0:
        return _tiers_from_pb(inline)
    if inline:
        raise MalformedMessage(f"endpoint {msg.key!r}: {name} has inline tiers and {name}_list {ref}")
    if ref > len(tier_lists):
        raise MalformedMessage(
            f"endpoint {msg.key!r}: {name}_list {ref} is out of range (the message has "
            f"{len(tier_lists)} tier lists)"
        )
    return tier_lists[ref - 1]


def op_to_pb(op: Op, table: TierTable | None = None) -> pb.Op:
    """One op; an endpoint's tiers go into ``table`` when one is given (see `endpoint_to_pb`)."""
    msg = pb.Op()
    _op_into(msg, op, table)
    return msg


def _members_into(deltas: Any, strings: Any, members: frozenset[str], table: TierTable | None) -> None:
    """Inside a message (``table`` given), IPv4 members as deltas; an op alone keeps them as text."""
    if table is None:
        strings.extend(sorted(members))
        return
    packed, others = pack_members(members)
    deltas.extend(packed)
    strings.extend(others)


def _op_into(msg: pb.Op, op: Op, table: TierTable | None) -> None:
    if isinstance(op, IpSetReplace):
        s = op.ipset
        msg.ipset_replace.set_id = s.set_id
        msg.ipset_replace.kind = s.kind
        _members_into(msg.ipset_replace.members_ipv4_deltas, msg.ipset_replace.members, s.members, table)
    elif isinstance(op, IpSetDelta):
        d = msg.ipset_delta
        d.set_id = op.set_id
        _members_into(d.added_ipv4_deltas, d.added, op.added, table)
        _members_into(d.removed_ipv4_deltas, d.removed, op.removed, table)
    elif isinstance(op, IpSetRemove):
        msg.ipset_remove = op.set_id
    elif isinstance(op, PolicyUpdate):
        _policy_into(msg.policy_update, op.program)
    elif isinstance(op, PolicyRemove):
        msg.policy_remove = op.policy_id
    elif isinstance(op, EndpointUpdate):
        _endpoint_into(msg.endpoint_update, op.program, table)
    else:
        msg.endpoint_remove = op.key


def op_from_pb(msg: pb.Op, tier_lists: TierLists = ()) -> Op:
    """One op; ``tier_lists`` resolves an endpoint's references (see `endpoint_from_pb`)."""
    which = msg.WhichOneof("op")
    if which == "ipset_replace":
        r = msg.ipset_replace
        if r.kind not in _KINDS:
            raise MalformedMessage(f"ip set {r.set_id!r}: unknown kind {r.kind!r}")
        members = unpack_members(r.members_ipv4_deltas, r.members, f"ip set {r.set_id!r}")
        return IpSetReplace(IpSet(r.set_id, cast(IpSetKind, r.kind), members))
    if which == "ipset_delta":
        d = msg.ipset_delta
        what = f"ip set delta {d.set_id!r}"
        return IpSetDelta(
            d.set_id,
            unpack_members(d.added_ipv4_deltas, d.added, what),
            unpack_members(d.removed_ipv4_deltas, d.removed, what),
        )
    if which == "ipset_remove":
        return IpSetRemove(msg.ipset_remove)
    if which == "policy_update":
        return PolicyUpdate(policy_from_pb(msg.policy_update))
    if which == "policy_remove":
        return PolicyRemove(msg.policy_remove)
    if which == "endpoint_update":
        return EndpointUpdate(endpoint_from_pb(msg.endpoint_update, tier_lists))
    if which == "endpoint_remove":
        return EndpointRemove(msg.endpoint_remove)
    raise MalformedMessage("op with no known kind set")


def _body_pb(ops: tuple[Op, ...]) -> pb.NodeMessage:
    """A message holding only the body: the ops and the table of tier lists they reference."""
    msg = pb.NodeMessage()
    table: TierTable = {}
    for op in ops:
        _op_into(msg.ops.add(), op, table)
    for tiers in table:  # insertion order = reference order
        _tiers_into(msg.tier_lists.add().tiers, tiers)
    return msg


def _header_pb(diff: NodeDiff, zlib_body: bytes | None) -> pb.NodeMessage:
    p = diff.position
    return pb.NodeMessage(
        node=diff.node,
        epoch=p.epoch,
        seq=p.seq,
        revision=p.revision,
        snapshot=diff.snapshot,
        zlib_body=zlib_body or b"",
    )


def diff_to_pb(diff: NodeDiff) -> pb.NodeMessage:
    body = _body_pb(diff.ops)
    packed = deflate(body.SerializeToString())
    if packed is not None:
        return _header_pb(diff, packed)
    body.MergeFrom(_header_pb(diff, None))
    return body


def diff_from_pb(msg: pb.NodeMessage) -> NodeDiff:
    if not msg.node:
        raise MalformedMessage("message has no node")
    body = msg
    if msg.zlib_body:
        if msg.ops or msg.tier_lists:
            raise MalformedMessage("message has both a zlib_body and uncompressed ops or tier_lists")
        body = inflate(msg.zlib_body)
    tier_lists = [_tiers_from_pb(t.tiers) for t in body.tier_lists]
    return NodeDiff(
        msg.node,
        StreamPosition(msg.epoch, msg.seq, msg.revision),
        tuple(op_from_pb(o, tier_lists) for o in body.ops),
        msg.snapshot,
    )


def encode_diff(diff: NodeDiff) -> bytes:
    """The Kafka record value: the header's bytes, then the body's (or the compressed body)."""
    body = _body_pb(diff.ops).SerializeToString()
    packed = deflate(body)
    header = _header_pb(diff, packed).SerializeToString()
    return header if packed is not None else header + body


def decode_diff(data: bytes) -> NodeDiff:
    return diff_from_pb(parse(data))
