"""Mounting the controller's admin API on a lab gRPC server, when the controller provides one.

Owns the one place where the lab's in-process clusters attach `controller.admin`'s servicer to
their own grpc.aio server, bound to "whichever controller currently runs" (a getter, because the
embedded cluster replaces its controller on restart). It does not implement any admin method.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable

import grpc

from controller.controller import Controller

log = logging.getLogger(__name__)

ControllerGetter = Callable[[], Controller | None]


def admin_available() -> bool:
    return importlib.util.find_spec("controller.admin") is not None


def add_admin_api(server: grpc.aio.Server, controller: ControllerGetter) -> bool:
    """Add the AdminService to ``server``; False (logged) when this build has no admin servicer."""
    if not admin_available():
        log.info("controller.admin is not available: serving NodeSync only")
        return False
    raise NotImplementedError("controller.admin appeared; wire it here")
