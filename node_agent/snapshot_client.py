"""Fetching a node's snapshot from the controller leader over gRPC (`NodeSync.Snapshot`).

Owns the client side of the snapshot call: trying each configured controller address until the
leader answers, with backoff while none does; a malformed answer is logged, counted and retried
(never applied). It does not apply the snapshot (`applier`).
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from iokit.backoff import Backoff
from policycore.diff import NodeDiff
from wire.codec import MalformedMessage, diff_from_pb
from wire.gen.kaliko.v1 import node_stream_pb2 as pb
from wire.gen.kaliko.v1 import node_stream_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
MAX_MESSAGE = 256 * 1024 * 1024


class SnapshotClient:
    def __init__(
        self, addresses: list[str], *, timeout: float = 30.0, backoff: Backoff | None = None
    ) -> None:
        if not addresses:
            raise ValueError("controller: at least one controller address is required")
        self._addresses = addresses
        self._timeout = timeout
        self._backoff = backoff or Backoff(initial=0.1, maximum=3.0)
        options = [("grpc.max_receive_message_length", MAX_MESSAGE)]
        self._channels = {a: grpc.aio.insecure_channel(a, options=options) for a in addresses}
        self.fetches = 0
        self.malformed = 0

    async def fetch(self, node: str) -> NodeDiff:
        """The node's snapshot from whichever controller leads; retries until one answers."""
        while True:
            for address, channel in self._channels.items():
                try:
                    reply = await pb_grpc.NodeSyncStub(channel).Snapshot(
                        pb.SnapshotRequest(node=node), timeout=self._timeout
                    )
                except grpc.aio.AioRpcError as err:
                    log.debug("snapshot from %s failed: %s %s", address, err.code(), err.details())
                    continue
                try:
                    snapshot = diff_from_pb(reply)
                except MalformedMessage as err:  # a bad answer is retried, never applied
                    self.malformed += 1
                    log.warning("snapshot from %s for %s is malformed: %s", address, node, err)
                    continue
                self._backoff.reset()
                self.fetches += 1
                return snapshot
            await asyncio.sleep(self._backoff.next_delay())

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
