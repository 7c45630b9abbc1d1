"""The NodeMessage envelope: the tier-list table, compressed bodies, their size budgets (G3) and
every way a table reference or a compressed body can be wrong."""

from __future__ import annotations

import os
import zlib

import pytest

from policycore.diff import EndpointUpdate, IpSetDelta, NodeDiff, StreamPosition
from policycore.ir import EndpointProgram, TierProgram
from wire import packing
from wire.codec import MalformedMessage, decode_diff, diff_from_pb, diff_to_pb, encode_diff, op_to_pb
from wire.gen.kaliko.v1 import node_stream_pb2 as pb

POSITION = StreamPosition(3, 123456, 7654321)
NS = "ns-0042"
GNPS = tuple(f"default/GlobalNetworkPolicy//gnp-{i:03d}-{s}" for i, s in enumerate(("dns", "metadata")))


def endpoint(i: int, *, deny_egress: bool) -> EndpointUpdate:
    """An endpoint of one of four apps of ``NS``, with the ids `policycore.calc.normalize` makes:
    three ingress tiers and ~10 policy ids; the endpoints of one app share their tier lists."""
    app = i % 4
    own = tuple(f"default/KubernetesNetworkPolicy/{NS}/np-{app * 7 + k:05x}" for k in range(6))
    deny = f"default/KubernetesNetworkPolicy/{NS}/default-deny"
    ingress = (
        TierProgram("security", GNPS, "pass"),
        TierProgram("platform", (f"platform/NetworkPolicy/{NS}/allow-dns",), "pass"),
        TierProgram("default", (*own, deny)),
    )
    egress = (TierProgram("security", GNPS, "pass"),) + (
        (TierProgram("default", (deny,)),) if deny_egress else ()
    )
    key = f"{NS}/{('web', 'api', 'worker', 'db')[app]}-{app:02d}-{i:05x}"
    return EndpointUpdate(
        EndpointProgram(key, f"kal{i:012x}", (f"10.0.{i // 256}.{i % 256}",), ingress, egress)
    )


def toggle(endpoints: int) -> NodeDiff:
    """A namespace's default deny gaining Egress: every local endpoint of it is re-sent."""
    return NodeDiff("node-0421", POSITION, tuple(endpoint(i, deny_egress=True) for i in range(endpoints)))


def test_small_bodies_are_sent_as_they_are() -> None:
    pod_add = NodeDiff(
        "node-0421",
        POSITION,
        (IpSetDelta("s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug", frozenset({"10.0.3.7"}), frozenset()),),
    )
    data = encode_diff(pod_add)
    assert not packing.parse(data).zlib_body
    assert data == diff_to_pb(pod_add).SerializeToString()
    assert len(data) < 96


@pytest.mark.parametrize(("endpoints", "budget"), [(1, 256), (10, 1024), (25, 2048), (60, 2048)])
def test_a_policy_edit_fits_the_g3_budget(endpoints: int, budget: int) -> None:
    diff = toggle(endpoints)
    data = encode_diff(diff)
    assert len(data) <= budget
    assert decode_diff(data) == diff


def test_large_bodies_travel_compressed_with_a_deduplicated_table() -> None:
    diff = toggle(25)
    msg = diff_to_pb(diff)
    assert msg.node == "node-0421" and msg.seq == 123456 and not msg.ops and msg.zlib_body
    body = packing.inflate(msg.zlib_body)
    assert len(body.ops) == 25
    assert len(body.tier_lists) == 5  # four apps' ingress lists + one shared egress list
    assert encode_diff(diff) == msg.SerializeToString()
    assert diff_from_pb(msg) == diff


def test_decoded_endpoints_share_their_tier_lists() -> None:
    decoded = decode_diff(encode_diff(toggle(8)))
    first, fifth = (op.program for op in (decoded.ops[0], decoded.ops[4]) if isinstance(op, EndpointUpdate))
    assert first.ingress is fifth.ingress and first.egress is fifth.egress


def test_an_op_outside_a_message_keeps_its_tiers_inline() -> None:
    msg = op_to_pb(endpoint(0, deny_egress=False)).endpoint_update
    assert msg.ingress_list == 0 and [t.name for t in msg.ingress] == ["security", "platform", "default"]


def test_inline_tiers_without_a_table_still_decode() -> None:
    msg = pb.NodeMessage(node="n", ops=[op_to_pb(endpoint(3, deny_egress=True))])
    assert decode_diff(msg.SerializeToString()).ops == (endpoint(3, deny_egress=True),)


def test_only_bodies_that_are_large_and_shrink_are_compressed() -> None:
    assert packing.deflate(b"a" * (packing.COMPRESS_FROM - 1)) is None
    assert packing.deflate(os.urandom(4096)) is None  # incompressible: sent as it is
    packed = packing.deflate(b"a" * packing.COMPRESS_FROM)
    assert packed is not None and zlib.decompress(packed) == b"a" * packing.COMPRESS_FROM


def with_body(body: bytes, **header: object) -> bytes:
    return pb.NodeMessage(node="n", seq=1, zlib_body=body, **header).SerializeToString()  # type: ignore[arg-type]


def body_of(diff: NodeDiff) -> bytes:
    return packing.parse(encode_diff(diff)).zlib_body


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (with_body(b"\x78\x01garbage"), "zlib_body: corrupt compressed data"),
        (with_body(body_of(toggle(25))[:-9]), "zlib_body: compressed data is truncated"),
        (with_body(body_of(toggle(25)) + b"xx"), "zlib_body: 2 bytes after the compressed data"),
        (with_body(zlib.compress(b"\xff\xff\xff")), "zlib_body: not a NodeMessage"),
        (
            with_body(zlib.compress(pb.NodeMessage(node="m").SerializeToString())),
            "may hold only ops and tier_lists, not node",
        ),
        (
            with_body(zlib.compress(pb.NodeMessage(zlib_body=b"x").SerializeToString())),
            "may hold only ops and tier_lists, not zlib_body",
        ),
        (
            with_body(body_of(toggle(25)), ops=[pb.Op(endpoint_remove="k")]),
            "both a zlib_body and uncompressed ops",
        ),
    ],
)
def test_bad_compressed_bodies_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        decode_diff(data)


def test_a_body_inflating_past_the_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packing, "MAX_BODY", 4096)
    bomb = zlib.compress(bytes(1024 * 1024))  # ~1 KiB that would inflate to 1 MiB
    with pytest.raises(MalformedMessage, match="inflates to more than 4096 bytes"):
        decode_diff(with_body(bomb))


def table_message(ingress_list: int, *, inline: bool = False, action: str = "deny") -> bytes:
    ep = pb.EndpointProgram(key="ns/pod", iface="kal1", ingress_list=ingress_list)
    if inline:
        ep.ingress.append(pb.TierProgram(name="default", policies=["p"], default_action="deny"))
    tiers = [pb.TierProgram(name="default", policies=["p"], default_action=action)]
    msg = pb.NodeMessage(node="n", ops=[pb.Op(endpoint_update=ep)], tier_lists=[pb.TierList(tiers=tiers)])
    return msg.SerializeToString()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (
            table_message(2),
            r"endpoint 'ns/pod': ingress_list 2 is out of range \(the message has 1 tier lists\)",
        ),
        (table_message(1, inline=True), "endpoint 'ns/pod': ingress has inline tiers and ingress_list 1"),
        (table_message(1, action="allow"), "tier 'default': unknown default action 'allow'"),
    ],
)
def test_bad_table_references_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        decode_diff(data)


def test_a_valid_reference_resolves() -> None:
    (op,) = decode_diff(table_message(1)).ops
    assert isinstance(op, EndpointUpdate) and op.program.ingress == (TierProgram("default", ("p",)),)
