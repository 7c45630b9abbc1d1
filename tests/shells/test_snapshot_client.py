"""`SnapshotClient` against a real grpc.aio NodeSync server on loopback: a malformed answer is
counted and retried, never returned; a good one after it is."""

from __future__ import annotations

import grpc
import pytest

from iokit.backoff import Backoff
from node_agent.snapshot_client import SnapshotClient
from policycore.diff import IpSetReplace, NodeDiff, StreamPosition
from policycore.ir import IpSet
from wire.codec import diff_to_pb
from wire.gen.kaliko.v1 import node_stream_pb2 as pb
from wire.gen.kaliko.v1 import node_stream_pb2_grpc as pb_grpc

GOOD = NodeDiff(
    "node-1",
    StreamPosition(2, 7, 40),
    (IpSetReplace(IpSet("s:abc", "ip", frozenset({"198.18.0.5"}))),),
    snapshot=True,
)


class FlakyNodeSync(pb_grpc.NodeSyncServicer):
    """Answers a corrupt compressed body ``bad`` times, then the good snapshot."""

    def __init__(self, bad: int) -> None:
        self.bad = bad
        self.calls = 0

    async def Snapshot(
        self, request: pb.SnapshotRequest, context: grpc.aio.ServicerContext
    ) -> pb.NodeMessage:
        self.calls += 1
        if self.calls <= self.bad:
            return pb.NodeMessage(node=request.node, zlib_body=b"not zlib at all")
        return diff_to_pb(GOOD)


@pytest.fixture
async def server():
    servicer = FlakyNodeSync(bad=2)
    srv = grpc.aio.server()
    pb_grpc.add_NodeSyncServicer_to_server(servicer, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    yield servicer, f"127.0.0.1:{port}"
    await srv.stop(None)


async def test_malformed_snapshot_is_retried_not_applied(server) -> None:
    servicer, address = server
    client = SnapshotClient([address], backoff=Backoff(initial=0.001, maximum=0.01))
    try:
        snapshot = await client.fetch("node-1")
    finally:
        await client.close()
    assert snapshot == GOOD
    assert servicer.calls == 3
    assert (client.malformed, client.fetches) == (2, 1)
