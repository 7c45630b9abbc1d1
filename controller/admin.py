"""The `AdminService` gRPC servicer: operators' requests mapped onto the controller's admin logic.

Owns the protobuf ⇄ value mapping of every admin method, the leadership gate (a controller that
is not the leader, or not yet in sync, answers UNAVAILABLE so a client tries the next address),
turning `AdminError` and store outages into gRPC statuses (INVALID_ARGUMENT carries every
problem in its details and as JSON in the ``kaliko-problems`` trailing metadata) and counting
requests by method and code. The logic lives in `admin_input` (checks), `admin_writes` (batches,
dry runs) and `admin_reads` (reads, convergence, node status, reach/explain); nothing is compiled
on the request path.

::

    kalikoctl ──gRPC──▶ AdminServicer ──▶ admin_input.parse_batch / ref_keys ──▶ WriteService ──▶ etcd
                             │                                               └─▶ engine.dry_run
                             └──▶ admin_reads: get/list (etcd), wait_converged (tracker + changed),
                                  node_status (status feed), reach/explain (graph node states)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from controller import admin_reads
from controller.admin_input import (
    AdminError,
    delete_targets,
    not_leader,
    parse_batch,
    parse_label_selector,
    ref_key,
    ref_keys,
)
from controller.admin_writes import BatchResult, Mode, WriteService
from controller.controller import Controller
from controller.engine import Engine
from iokit.store import StoreUnavailable
from policycore.model import ResourceKey
from wire.codec import op_to_pb
from wire.gen.kaliko.v1 import admin_pb2 as pb
from wire.gen.kaliko.v1 import admin_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
Reply = TypeVar("Reply")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AdminService"].full_name


def _ref(key: ResourceKey) -> pb.ResourceRef:
    return pb.ResourceRef(kind=key.kind, namespace=key.namespace, name=key.name)


def _dump(document: object) -> str:
    return json.dumps(document, separators=(",", ":"))


def write_reply(result: BatchResult) -> pb.WriteReply:
    return pb.WriteReply(
        results=[
            pb.WriteResult(
                ref=_ref(w.key),
                revision=w.revision,
                outcome=w.outcome,
                document_json=_dump(w.document) if w.document is not None else "",
            )
            for w in result.results
        ],
        revision=result.revision,
        dry_run_diffs=[
            pb.NodeOps(node=node, ops=[op_to_pb(op) for op in ops])
            for node, ops in sorted(result.dry_run_diffs.items())
        ],
    )


class AdminServicer(pb_grpc.AdminServiceServicer):
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.writes = WriteService(controller.resources)

    def _leader(self) -> Engine:
        engine = self.controller.engine
        if engine is None or not self.controller.ready:
            raise not_leader()
        return engine

    async def _serve(
        self, method: str, context: grpc.aio.ServicerContext, handler: Callable[[], Awaitable[Reply]]
    ) -> Reply:
        code = grpc.StatusCode.OK
        try:
            return await handler()
        except AdminError as err:
            code = err.code
            await context.abort(err.code, err.details(), trailing_metadata=err.trailing_metadata())
        except StoreUnavailable as err:
            code = grpc.StatusCode.UNAVAILABLE
            await context.abort(code, f"the datastore is unavailable: {err}")
        except Exception:
            code = grpc.StatusCode.UNKNOWN
            log.exception("admin %s failed", method)
            raise
        finally:
            self.controller.metrics.admin_requests.labels(method, code.name).inc()
        raise AssertionError("context.abort returned")  # pragma: no cover

    async def _write(self, mode: Mode, request: pb.WriteRequest) -> pb.WriteReply:
        engine = self._leader()
        resources = parse_batch(request.documents_json)
        return write_reply(await self.writes.write(resources, mode, engine, dry_run=request.dry_run))

    async def Apply(self, request: pb.WriteRequest, context: grpc.aio.ServicerContext) -> pb.WriteReply:
        return await self._serve("Apply", context, lambda: self._write("apply", request))

    async def Create(self, request: pb.WriteRequest, context: grpc.aio.ServicerContext) -> pb.WriteReply:
        return await self._serve("Create", context, lambda: self._write("create", request))

    async def Replace(self, request: pb.WriteRequest, context: grpc.aio.ServicerContext) -> pb.WriteReply:
        return await self._serve("Replace", context, lambda: self._write("replace", request))

    async def Delete(self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext) -> pb.WriteReply:
        async def delete() -> pb.WriteReply:
            engine = self._leader()
            targets: list[tuple[ResourceKey, int | None]] = [(k, None) for k in ref_keys(request.refs)]
            collection = "refs"
            if request.documents_json:
                if targets:
                    raise AdminError(
                        grpc.StatusCode.INVALID_ARGUMENT, "give refs or documents_json, not both"
                    )
                collection = "documents"
                targets = delete_targets(request.documents_json)
            if not targets:
                raise AdminError(
                    grpc.StatusCode.INVALID_ARGUMENT, "nothing to delete: give refs or documents_json"
                )
            result = await self.writes.delete(
                targets,
                engine,
                dry_run=request.dry_run,
                skip_not_exists=request.skip_not_exists,
                collection=collection,
            )
            return write_reply(result)

        return await self._serve("Delete", context, delete)

    async def Label(self, request: pb.LabelRequest, context: grpc.aio.ServicerContext) -> pb.WriteReply:
        async def label() -> pb.WriteReply:
            engine = self._leader()
            key = ref_key(request.ref.kind, request.ref.namespace, request.ref.name)
            result = await self.writes.label(
                key, dict(request.set), list(request.remove), request.overwrite, engine
            )
            return write_reply(result)

        return await self._serve("Label", context, label)

    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext) -> pb.ListReply:
        async def get() -> pb.ListReply:
            self._leader()
            key = ref_key(request.ref.kind, request.ref.namespace, request.ref.name)
            document, revision = await admin_reads.get_resource(self.controller.resources, key)
            return pb.ListReply(documents_json=[_dump(document)], revision=revision)

        return await self._serve("Get", context, get)

    async def List(self, request: pb.ListRequest, context: grpc.aio.ServicerContext) -> pb.ListReply:
        async def list_() -> pb.ListReply:
            self._leader()
            selector = parse_label_selector(request.label_selector)
            documents, revision = await admin_reads.list_resources(
                self.controller, request.kind, request.namespace, selector
            )
            return pb.ListReply(documents_json=[_dump(d) for d in documents], revision=revision)

        return await self._serve("List", context, list_)

    async def WaitConverged(
        self, request: pb.WaitConvergedRequest, context: grpc.aio.ServicerContext
    ) -> pb.WaitConvergedReply:
        async def wait() -> pb.WaitConvergedReply:
            self._leader()
            found = await admin_reads.wait_converged(
                self.controller, request.revision, request.timeout_seconds
            )
            return pb.WaitConvergedReply(
                revision=found.revision,
                converged=found.converged,
                seconds=found.seconds,
                nodes=[
                    pb.NodeConvergence(
                        node=n.node,
                        revision=n.revision,
                        ready=n.ready,
                        converged=n.converged,
                        online=n.online,
                    )
                    for n in found.nodes
                ],
                lagging=found.lagging,
            )

        return await self._serve("WaitConverged", context, wait)

    async def NodeStatus(
        self, request: pb.NodeStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.NodeStatusReply:
        async def status() -> pb.NodeStatusReply:
            self._leader()
            revision, entries = admin_reads.node_status(self.controller)
            return pb.NodeStatusReply(
                revision=revision,
                nodes=[
                    pb.NodeStatusEntry(
                        name=e.name,
                        online=e.online,
                        ready=e.ready,
                        revision=e.revision,
                        epoch=e.epoch,
                        seq=e.seq,
                        last_error=e.last_error,
                        state_hash=e.state_hash,
                        expected_hash=e.expected_hash,
                    )
                    for e in entries
                ],
            )

        return await self._serve("NodeStatus", context, status)

    async def Reach(self, request: pb.ReachRequest, context: grpc.aio.ServicerContext) -> pb.ReachReply:
        async def reach() -> pb.ReachReply:
            self._leader()
            return pb.ReachReply(
                json=_dump(admin_reads.reach(self.controller, request.port, request.protocol))
            )

        return await self._serve("Reach", context, reach)

    async def Explain(self, request: pb.ExplainRequest, context: grpc.aio.ServicerContext) -> pb.ExplainReply:
        async def explain() -> pb.ExplainReply:
            self._leader()
            found = admin_reads.explain(
                self.controller, request.from_pod, request.to_pod, request.port, request.protocol
            )
            return pb.ExplainReply(json=_dump(found))

        return await self._serve("Explain", context, explain)
