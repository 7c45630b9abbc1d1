"""The `NodeSync` gRPC servicer: agents fetch their node's snapshot from the leader here.

Owns the server side of the snapshot call. It asks the engine (the graph's owner) for the
snapshot; it holds no state. A controller that is not (yet) the leader, or not yet in sync,
answers UNAVAILABLE so the agent retries (possibly another controller). Admission is the
engine's: `Engine.snapshot` builds one snapshot per loop turn, so the whole cluster asking at once
(an epoch start) queues there instead of holding the loop; the encoding below runs in the turn
after its snapshot was built, before the next one is.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from controller.engine import Engine
from wire.codec import diff_to_pb
from wire.gen.kaliko.v1 import node_stream_pb2 as pb
from wire.gen.kaliko.v1 import node_stream_pb2_grpc as pb_grpc


class NodeSyncServicer(pb_grpc.NodeSyncServicer):
    def __init__(self, engine: Callable[[], Engine | None]) -> None:
        self._engine = engine

    async def Snapshot(
        self, request: pb.SnapshotRequest, context: grpc.aio.ServicerContext
    ) -> pb.NodeMessage:
        if not request.node:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "node: is required")
        engine = self._engine()
        if engine is None or not engine.in_sync:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "this controller is not the leader or not in sync yet"
            )
        assert engine is not None
        return diff_to_pb(await engine.snapshot(request.node))
