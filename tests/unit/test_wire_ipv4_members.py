"""IPv4 ip-set members as ascending deltas on the wire: exact round trips whatever the members'
form, a 500-address set well inside G3's edit budget, text where an op stands alone, and
deltas that overflow refused."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policycore.diff import IpSetDelta, IpSetReplace, NodeDiff, StreamPosition
from policycore.ir import IpSet
from wire import ipv4_members
from wire.codec import MalformedMessage, decode_diff, encode_diff, op_to_pb
from wire.gen.kaliko.v1 import node_stream_pb2 as pb
from wire.ipv4_members import pack_members, unpack_members

POSITION = StreamPosition(2, 10, 300)
ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
odd_forms = st.sampled_from(
    ["010.0.0.1", "1.2.3", "198.18.0.5,tcp:80", "198.18.0.0/24", "fd00::1", " 1.2.3.4", "", "1.2.3.4 "]
)
members = st.frozensets(st.one_of(ipv4, odd_forms, st.text(max_size=12)), max_size=40)


@given(members)
def test_any_member_set_unpacks_to_itself(value: frozenset[str]) -> None:
    assert unpack_members(*pack_members(value)) == value


@given(members, members, members)
def test_ip_set_ops_round_trip_through_a_message(
    replace: frozenset[str], added: frozenset[str], removed: frozenset[str]
) -> None:
    diff = NodeDiff(
        "node-7",
        POSITION,
        (IpSetReplace(IpSet("s:a", "ip", replace)), IpSetDelta("s:b", added, removed)),
    )
    assert decode_diff(encode_diff(diff)) == diff


def test_only_canonical_dotted_quads_are_packed() -> None:
    deltas, others = pack_members(frozenset({"198.18.0.9", "198.18.0.5", "010.0.0.1", "198.18.0.5,tcp:80"}))
    assert deltas == (int(ipaddress.IPv4Address("198.18.0.5")), 4)
    assert others == ("010.0.0.1", "198.18.0.5,tcp:80")


def test_a_500_address_set_of_the_lab_pool_fits_well_inside_the_edit_budget() -> None:
    rng = random.Random(5)
    pool = [str(ipaddress.IPv4Address("198.18.0.0") + i) for i in range(1, 50_001)]
    ipset = IpSet("s:big", "ip", frozenset(rng.sample(pool, 500)))
    diff = NodeDiff("node-1", POSITION, (IpSetReplace(ipset),))
    as_text = pb.NodeMessage(node="node-1", ops=[op_to_pb(IpSetReplace(ipset))])
    assert len(encode_diff(diff)) < 800  # text, compressed: ~1.9 KB
    assert len(as_text.SerializeToString()) > 6000
    assert decode_diff(encode_diff(diff)) == diff


def test_an_op_alone_keeps_its_members_as_text() -> None:
    op = op_to_pb(IpSetDelta("s:c", frozenset({"198.18.0.7"}), frozenset({"198.18.0.8"})))
    assert list(op.ipset_delta.added) == ["198.18.0.7"] and list(op.ipset_delta.removed) == ["198.18.0.8"]
    assert not op.ipset_delta.added_ipv4_deltas


def test_deltas_past_the_last_address_are_refused() -> None:
    msg = pb.NodeMessage(node="node-1", seq=1)
    op = msg.ops.add().ipset_replace
    op.set_id, op.kind = "s:x", "ip"
    op.members_ipv4_deltas.extend([2**32 - 1, 1])
    with pytest.raises(MalformedMessage, match=r"s:x.*past 255\.255\.255\.255"):
        decode_diff(msg.SerializeToString())


def test_the_address_names_stay_right_when_the_memo_fills_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ipv4_members, "NAMES_REMEMBERED", 8)
    for start in range(0, 100, 10):
        value = frozenset(str(ipaddress.IPv4Address("198.18.0.0") + i) for i in range(start, start + 20))
        assert unpack_members(*pack_members(value)) == value
    assert len(ipv4_members._NAMES) <= 8
