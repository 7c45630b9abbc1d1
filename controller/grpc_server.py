"""The controller's gRPC server: AdminService, NodeSync, gRPC health and reflection on one port.

Owns assembling the `grpc.aio` server (message limits raised for big lists and snapshots), the
health servicer's statuses and the task that keeps them current. Health follows leadership:
``""``, ``kaliko.v1.AdminService`` and ``kaliko.v1.NodeSync`` are SERVING only while this
controller leads and is in sync with the datastore, NOT_SERVING otherwise (a standby, a leader
still listing). It does not own what the services do (`admin`, `node_sync`) or the process
(`controller.app`); tests build the same server over in-memory parts.

::

    ControllerServer(controller) ── start(listen) ──▶ grpc.aio server :port
        ├── AdminServicer(controller)          kaliko.v1.AdminService
        ├── NodeSyncServicer(engine getter)    kaliko.v1.NodeSync
        ├── health.aio.HealthServicer          grpc.health.v1.Health  ◀── follow_readiness()
        └── reflection                         grpc.reflection.v1alpha.ServerReflection
"""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from controller.admin import SERVICE_NAME as ADMIN_SERVICE
from controller.admin import AdminServicer
from controller.controller import Controller
from controller.node_sync import NodeSyncServicer
from wire.gen.kaliko.v1 import admin_pb2_grpc, node_stream_pb2, node_stream_pb2_grpc

log = logging.getLogger(__name__)

MAX_MESSAGE = 256 * 1024 * 1024
NODE_SYNC_SERVICE = node_stream_pb2.DESCRIPTOR.services_by_name["NodeSync"].full_name
HEALTH_SERVICES = ("", ADMIN_SERVICE, NODE_SYNC_SERVICE)
SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
)


class ControllerServer:
    """One gRPC server for a `Controller`; `start` binds, `follow_readiness` keeps health current."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        self.admin = AdminServicer(controller)
        admin_pb2_grpc.add_AdminServiceServicer_to_server(self.admin, self.server)
        node_stream_pb2_grpc.add_NodeSyncServicer_to_server(
            NodeSyncServicer(lambda: controller.engine), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (ADMIN_SERVICE, NODE_SYNC_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = 0
        self.serving: bool | None = None

    async def start(self, listen: str) -> int:
        """Bind ``listen`` (``HOST:PORT``; port 0 picks one) and start serving; returns the port."""
        await self._set_serving(False)
        self.port = self.server.add_insecure_port(listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {listen}")
        await self.server.start()
        log.info("controller gRPC (admin, node sync, health, reflection) on port %d", self.port)
        return self.port

    async def _set_serving(self, serving: bool) -> None:
        if serving == self.serving:
            return
        self.serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in HEALTH_SERVICES:
            await self.health.set(service, status)
        log.info("gRPC health: %s", "SERVING" if serving else "NOT_SERVING")

    async def follow_readiness(self) -> None:
        """Keep the health statuses equal to ``controller.ready`` (forever; a supervised task)."""
        changed = self.controller.changed
        while True:
            changed.clear()
            await self._set_serving(self.controller.ready)
            await changed.wait()

    async def stop(self, grace: float = 1.0) -> None:
        await self._set_serving(False)
        await self.server.stop(grace)
