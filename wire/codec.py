"""Codec between the pure core's diff values and the `NodeMessage` protobuf (the Kafka payload).

Owns `encode_diff` / `decode_diff` and the op and program conversions they need (also used by the
admin API's dry run and the snapshot call). It does not own transport (iokit) or meaning
(policycore). `decode_diff` raises `MalformedMessage` for anything that is not a valid message,
so callers can count and skip it.
"""

from __future__ import annotations

from typing import Any, cast

from google.protobuf.message import DecodeError

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


class MalformedMessage(ValueError):
    """Bytes that are not a valid NodeMessage (bad protobuf, unknown op, bad enum value)."""


def _rule_to_pb(rule: Rule) -> pb.Rule:
    msg = pb.Rule(action=rule.action, rule_id=rule.rule_id)
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
        getattr(msg, name).extend(getattr(rule, name))
    for name in _PORT_LISTS:
        getattr(msg, name).extend(pb.PortRange(first=p.first, last=p.last) for p in getattr(rule, name))
    return msg


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
    return pb.PolicyProgram(
        policy_id=program.policy_id,
        ingress=[_rule_to_pb(r) for r in program.ingress],
        egress=[_rule_to_pb(r) for r in program.egress],
    )


def policy_from_pb(msg: pb.PolicyProgram) -> PolicyProgram:
    return PolicyProgram(
        msg.policy_id,
        tuple(_rule_from_pb(r) for r in msg.ingress),
        tuple(_rule_from_pb(r) for r in msg.egress),
    )


def _tiers_to_pb(tiers: tuple[TierProgram, ...]) -> list[pb.TierProgram]:
    return [pb.TierProgram(name=t.name, policies=t.policies, default_action=t.default_action) for t in tiers]


def _tiers_from_pb(tiers: object) -> tuple[TierProgram, ...]:
    out = []
    for t in cast(list[pb.TierProgram], tiers):
        if t.default_action not in ("deny", "pass"):
            raise MalformedMessage(f"tier {t.name!r}: unknown default action {t.default_action!r}")
        out.append(TierProgram(t.name, tuple(t.policies), cast(TierDefault, t.default_action)))
    return tuple(out)


def endpoint_to_pb(program: EndpointProgram) -> pb.EndpointProgram:
    return pb.EndpointProgram(
        key=program.key,
        iface=program.iface,
        ips=program.ips,
        ingress=_tiers_to_pb(program.ingress),
        egress=_tiers_to_pb(program.egress),
    )


def endpoint_from_pb(msg: pb.EndpointProgram) -> EndpointProgram:
    return EndpointProgram(
        msg.key, msg.iface, tuple(msg.ips), _tiers_from_pb(msg.ingress), _tiers_from_pb(msg.egress)
    )


def op_to_pb(op: Op) -> pb.Op:
    if isinstance(op, IpSetReplace):
        s = op.ipset
        return pb.Op(ipset_replace=pb.IpSetReplace(set_id=s.set_id, kind=s.kind, members=sorted(s.members)))
    if isinstance(op, IpSetDelta):
        return pb.Op(
            ipset_delta=pb.IpSetDelta(set_id=op.set_id, added=sorted(op.added), removed=sorted(op.removed))
        )
    if isinstance(op, IpSetRemove):
        return pb.Op(ipset_remove=op.set_id)
    if isinstance(op, PolicyUpdate):
        return pb.Op(policy_update=policy_to_pb(op.program))
    if isinstance(op, PolicyRemove):
        return pb.Op(policy_remove=op.policy_id)
    if isinstance(op, EndpointUpdate):
        return pb.Op(endpoint_update=endpoint_to_pb(op.program))
    return pb.Op(endpoint_remove=op.key)


def op_from_pb(msg: pb.Op) -> Op:
    which = msg.WhichOneof("op")
    if which == "ipset_replace":
        r = msg.ipset_replace
        if r.kind not in _KINDS:
            raise MalformedMessage(f"ip set {r.set_id!r}: unknown kind {r.kind!r}")
        return IpSetReplace(IpSet(r.set_id, cast(IpSetKind, r.kind), frozenset(r.members)))
    if which == "ipset_delta":
        d = msg.ipset_delta
        return IpSetDelta(d.set_id, frozenset(d.added), frozenset(d.removed))
    if which == "ipset_remove":
        return IpSetRemove(msg.ipset_remove)
    if which == "policy_update":
        return PolicyUpdate(policy_from_pb(msg.policy_update))
    if which == "policy_remove":
        return PolicyRemove(msg.policy_remove)
    if which == "endpoint_update":
        return EndpointUpdate(endpoint_from_pb(msg.endpoint_update))
    if which == "endpoint_remove":
        return EndpointRemove(msg.endpoint_remove)
    raise MalformedMessage("op with no known kind set")


def diff_to_pb(diff: NodeDiff) -> pb.NodeMessage:
    p = diff.position
    return pb.NodeMessage(
        node=diff.node,
        epoch=p.epoch,
        seq=p.seq,
        revision=p.revision,
        snapshot=diff.snapshot,
        ops=[op_to_pb(op) for op in diff.ops],
    )


def diff_from_pb(msg: pb.NodeMessage) -> NodeDiff:
    if not msg.node:
        raise MalformedMessage("message has no node")
    return NodeDiff(
        msg.node,
        StreamPosition(msg.epoch, msg.seq, msg.revision),
        tuple(op_from_pb(o) for o in msg.ops),
        msg.snapshot,
    )


def encode_diff(diff: NodeDiff) -> bytes:
    return diff_to_pb(diff).SerializeToString()


def decode_diff(data: bytes) -> NodeDiff:
    msg = pb.NodeMessage()
    try:
        msg.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as err:
        raise MalformedMessage(f"not a NodeMessage: {err}") from None
    return diff_from_pb(msg)
