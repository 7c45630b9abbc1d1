"""Mounting the controller's admin API on a lab gRPC server that outlives its controllers.

Owns `FollowingAdminServicer`: an `AdminService` whose every method is forwarded to a
`controller.admin.AdminServicer` built for whichever controller currently runs (a getter, because
the embedded cluster replaces its controller on restart); with no controller it answers
UNAVAILABLE, as a standby would. It does not implement any admin method itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from controller.admin import AdminServicer
from controller.controller import Controller
from wire.gen.kaliko.v1 import admin_pb2 as pb
from wire.gen.kaliko.v1 import admin_pb2_grpc as pb_grpc

ControllerGetter = Callable[[], Controller | None]
METHODS = tuple(pb.DESCRIPTOR.services_by_name["AdminService"].methods_by_name)


class FollowingAdminServicer(pb_grpc.AdminServiceServicer):
    """Forwards each call to the admin servicer of the controller running at that moment."""

    def __init__(self, controller: ControllerGetter) -> None:
        self._controller = controller
        self._servicer: AdminServicer | None = None

    def current(self) -> AdminServicer | None:
        controller = self._controller()
        if controller is None:
            return None
        if self._servicer is None or self._servicer.controller is not controller:
            self._servicer = AdminServicer(controller)
        return self._servicer


def _forward(name: str) -> Callable[..., Awaitable[Any]]:
    async def method(self: FollowingAdminServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
        servicer = self.current()
        if servicer is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no controller is running (restarting?)")
        return await getattr(servicer, name)(request, context)

    method.__name__ = name
    return method


for _name in METHODS:
    setattr(FollowingAdminServicer, _name, _forward(_name))


def add_admin_api(server: grpc.aio.Server, controller: ControllerGetter) -> FollowingAdminServicer:
    servicer = FollowingAdminServicer(controller)  # type: ignore[abstract]  # methods set above
    pb_grpc.add_AdminServiceServicer_to_server(servicer, server)
    return servicer
