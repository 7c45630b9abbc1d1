"""The agent's gRPC `AgentService`: its status and a dump of what it has programmed.

Owns translating the applier's state into `AgentStatus` / `DumpReply`. Reads only; it never
changes the applier.
"""

from __future__ import annotations

import grpc

from node_agent.applier import Applier
from policycore.ir import canonical_json
from wire.gen.kaliko.v1 import agent_pb2 as pb
from wire.gen.kaliko.v1 import agent_pb2_grpc as pb_grpc


class AgentServicer(pb_grpc.AgentServiceServicer):
    def __init__(self, applier: Applier, dataplane_name: str) -> None:
        self._applier = applier
        self._dataplane_name = dataplane_name

    async def Status(
        self, request: pb.AgentStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.AgentStatus:
        s = self._applier.status()
        programmed = self._applier.dataplane.programmed()
        return pb.AgentStatus(
            node=s.node,
            ready=s.ready,
            epoch=s.epoch,
            seq=s.seq,
            revision=s.revision,
            last_error=s.last_error or "",
            state_hash=programmed.content_hash(),
            dataplane=self._dataplane_name,
        )

    async def Dump(self, request: pb.DumpRequest, context: grpc.aio.ServicerContext) -> pb.DumpReply:
        programmed = self._applier.dataplane.programmed()
        return pb.DumpReply(
            node=self._applier.node,
            state_json=canonical_json(programmed),
            state_hash=programmed.content_hash(),
        )
