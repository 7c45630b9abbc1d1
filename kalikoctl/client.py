"""The admin API client of the online commands: finds the leading controller, returns replies or
one `ServerError` with everything the server said.

Owns the channels to the ``--server`` addresses (comma-separated; each tried in turn, the one that
answered first next time), the per-call deadline and the decoding of refusals: the status code,
the details and the ``kaliko-problems`` trailing metadata (every problem with its document index
and field path). A controller that answers UNAVAILABLE (a standby, or one still syncing) or
cannot be reached is skipped. It does not own printing (`kalikoctl.online`).

Synchronous on purpose: a command makes a few calls in order, and typer commands are functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from wire.gen.kaliko.v1 import admin_pb2_grpc as pb_grpc

DEFAULT_SERVER = "127.0.0.1:50051"
CALL_TIMEOUT = 30.0
MAX_MESSAGE = 256 * 1024 * 1024
PROBLEMS_METADATA = "kaliko-problems"
Reply = TypeVar("Reply")


@dataclass(frozen=True, slots=True)
class ServerProblem:
    """One problem the server found: ``collection[document]`` (-1: the request), field path, reason."""

    collection: str
    document: int
    path: str
    reason: str


@dataclass
class ServerError(Exception):
    """A refused or failed call: the gRPC code name, the server's message and its problems."""

    code: grpc.StatusCode
    details: str
    problems: list[ServerProblem] = field(default_factory=list)

    def __str__(self) -> str:
        return self.details.splitlines()[0] if self.details else self.code.name

    @property
    def unreachable(self) -> bool:
        return self.code is grpc.StatusCode.UNAVAILABLE


def _problems(err: grpc.RpcError) -> list[ServerProblem]:
    metadata = err.trailing_metadata() or ()
    for key, value in metadata:
        if key == PROBLEMS_METADATA:
            try:
                raw = json.loads(value)
            except json.JSONDecodeError:
                return []
            return [
                ServerProblem(p.get("collection", "documents"), int(p["document"]), p["path"], p["reason"])
                for p in raw
            ]
    return []


class AdminClient:
    """Calls AdminService methods on whichever configured controller leads."""

    def __init__(self, servers: str, *, timeout: float = CALL_TIMEOUT) -> None:
        self.addresses = [a.strip() for a in servers.split(",") if a.strip()] or [DEFAULT_SERVER]
        self.timeout = timeout
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ]
        self._channels = {a: grpc.insecure_channel(a, options=options) for a in self.addresses}

    def call(self, method: str, request: Any, *, timeout: float | None = None) -> Any:
        """``AdminService.<method>(request)`` on the leader; raises `ServerError`."""
        failures: list[str] = []
        for address in list(self.addresses):
            stub_method: Callable[..., Any] = getattr(
                pb_grpc.AdminServiceStub(self._channels[address]), method
            )
            try:
                reply = stub_method(request, timeout=timeout if timeout is not None else self.timeout)
            except grpc.RpcError as err:
                code: grpc.StatusCode = err.code()
                details: str = err.details() or code.name
                if code is grpc.StatusCode.UNAVAILABLE:
                    failures.append(f"{address}: {details.splitlines()[0]}")
                    continue
                raise ServerError(code, details, _problems(err)) from None
            self.addresses.remove(address)
            self.addresses.insert(0, address)
            return reply
        tried = "; ".join(failures)
        raise ServerError(grpc.StatusCode.UNAVAILABLE, f"no leading controller answered ({tried})")

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
