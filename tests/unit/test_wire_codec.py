"""The wire codec round-trips every op and rule field (tier tables and compressed bodies included);
garbage is refused; stubs are current."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
from policycore.ir import EndpointProgram, IcmpMatch, IpSet, PolicyProgram, PortRange, Rule, TierProgram
from wire.codec import MalformedMessage, decode_diff, diff_from_pb, diff_to_pb, encode_diff
from wire.gen.kaliko.v1 import node_stream_pb2 as pb

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789:/-.", min_size=1, max_size=12)
ports = st.builds(lambda a, b: PortRange(min(a, b), max(a, b)), st.integers(0, 65535), st.integers(0, 65535))
icmps = st.none() | st.builds(IcmpMatch, st.integers(0, 254), st.none() | st.integers(0, 255))
str_lists = st.lists(names, max_size=3).map(tuple)
port_lists = st.lists(ports, max_size=3).map(tuple)
rules = st.builds(
    Rule,
    action=st.sampled_from(["allow", "deny", "pass", "log"]),
    rule_id=names,
    protocol=st.none() | st.integers(1, 255),
    not_protocol=st.none() | st.integers(1, 255),
    icmp=icmps,
    not_icmp=icmps,
    src_ipsets=str_lists,
    not_dst_nets=str_lists,
    dst_ports=port_lists,
    not_src_ports=port_lists,
    dst_named_port_ipsets=str_lists,
)
tiers = st.builds(TierProgram, names, str_lists, st.sampled_from(["deny", "pass"]))
ops = st.one_of(
    st.builds(
        lambda i, k, m: IpSetReplace(IpSet(i, k, frozenset(m))),
        names,
        st.sampled_from(["ip", "ip_port", "net"]),
        st.lists(names, max_size=4),
    ),
    st.builds(
        lambda i, a, r: IpSetDelta(i, frozenset(a), frozenset(r)), names, st.lists(names), st.lists(names)
    ),
    st.builds(IpSetRemove, names),
    st.builds(
        lambda i, a, b: PolicyUpdate(PolicyProgram(i, tuple(a), tuple(b))),
        names,
        st.lists(rules, max_size=3),
        st.lists(rules, max_size=2),
    ),
    st.builds(PolicyRemove, names),
    st.builds(
        lambda k, i, ips, a, b: EndpointUpdate(EndpointProgram(k, i, ips, tuple(a), tuple(b))),
        names,
        names,
        str_lists,
        st.lists(tiers, max_size=2),
        st.lists(tiers, max_size=2),
    ),
    st.builds(EndpointRemove, names),
)


@given(
    node=names,
    epoch=st.integers(0, 2**40),
    seq=st.integers(0, 2**40),
    revision=st.integers(0, 2**40),
    snapshot=st.booleans(),
    body=st.lists(ops, max_size=6),
)
def test_every_diff_round_trips(
    node: str, epoch: int, seq: int, revision: int, snapshot: bool, body: list[Op]
) -> None:
    diff = NodeDiff(node, StreamPosition(epoch, seq, revision), tuple(body), snapshot)
    assert decode_diff(encode_diff(diff)) == diff
    assert diff_from_pb(diff_to_pb(diff)) == diff


tier_lists = st.lists(tiers, min_size=1, max_size=3).map(tuple)


@st.composite
def namespace_updates(draw: st.DrawFn) -> NodeDiff:
    """Many endpoints drawing their tier lists from a small pool (so the table dedupes), often
    large enough that the body travels compressed; some other ops mixed in."""
    pool = [*draw(st.lists(tier_lists, min_size=1, max_size=4)), ()]
    endpoints = draw(
        st.lists(
            st.builds(
                lambda k, ips, a, b: EndpointUpdate(EndpointProgram(k, "kal" + k, ips, a, b)),
                names,
                str_lists,
                st.sampled_from(pool),
                st.sampled_from(pool),
            ),
            max_size=40,
        )
    )
    others = draw(st.lists(ops, max_size=3))
    return NodeDiff(draw(names), StreamPosition(1, 2, 3), tuple(others + endpoints), draw(st.booleans()))


@given(namespace_updates())
def test_shared_tier_lists_and_large_bodies_round_trip(diff: NodeDiff) -> None:
    assert decode_diff(encode_diff(diff)) == diff
    assert diff_from_pb(diff_to_pb(diff)) == diff


@pytest.mark.parametrize(
    "op",
    [
        IpSetReplace(IpSet("", "ip")),
        IpSetDelta("", frozenset(), frozenset()),
        IpSetRemove(""),
        PolicyUpdate(PolicyProgram("")),
        PolicyRemove(""),
        EndpointUpdate(EndpointProgram("", "", ())),
        EndpointRemove(""),
    ],
)
def test_ops_of_only_default_values_keep_their_kind(op: Op) -> None:
    diff = NodeDiff("n", StreamPosition(0, 0, 0), (op,))
    assert decode_diff(encode_diff(diff)) == diff


@pytest.mark.parametrize("data", [b"\xff\xff\xff", b'{"json": true}', b"\x0a\x05ab"])
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_diff(data)


def test_unknown_action_and_missing_node_are_refused() -> None:
    msg = pb.NodeMessage(
        node="n",
        ops=[pb.Op(policy_update=pb.PolicyProgram(policy_id="p", ingress=[pb.Rule(action="accept")]))],
    )
    with pytest.raises(MalformedMessage, match="unknown action"):
        decode_diff(msg.SerializeToString())
    with pytest.raises(MalformedMessage, match="no node"):
        decode_diff(pb.NodeMessage(seq=1).SerializeToString())


def test_a_one_member_ipset_delta_is_small() -> None:
    set_id = "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"
    diff = NodeDiff(
        "node-123",
        StreamPosition(7, 123456, 987654),
        (IpSetDelta(set_id, frozenset({"198.18.3.7"}), frozenset()),),
    )
    assert len(encode_diff(diff)) < 96


def test_generated_stubs_are_current() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wire.generate", "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
