"""Admin reads: resources from the datastore, convergence and node status from the tracker, and
reach / explain answered on the live compiled state.

Owns the read side of the admin API: `get` and `list` (label selectors in Calico syntax over
``metadata.labels``), `wait_converged` (awaits ``Controller.changed``: no polling), `node_status`
(every node the graph compiles for or that reported) and `reach` / `explain` (the graph's node
states judged by `policycore.evaluate`, printed by `policycore.reports`, so the live answer has
exactly the offline CLI's shape). It does not own writes (`admin_writes`) or the gRPC mapping.

Invariants: nothing here writes; `wait_converged` returns when ``tracker.is_converged(revision)``
or at its deadline (then ``converged=False`` with the lagging nodes), never later; an invalid
stored value is never shown as a resource.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import grpc

from controller.admin_input import REQUEST, AdminError, BatchProblem, invalid, kind_problem
from controller.controller import Controller
from controller.engine import Engine
from controller.resource_store import InvalidEntry, ResourceStore
from policycore.convergence import NodeReport
from policycore.evaluate import connection_allowed
from policycore.ir import PROTOCOL_NUMBERS, NodeState
from policycore.model import KINDS, Resource, ResourceKey, is_namespaced, key_of, to_document
from policycore.reports import endpoint_peers, explanation_json, reach_json, reach_matrix
from policycore.selector import Selector

log = logging.getLogger(__name__)
PORT_PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True, slots=True)
class NodeConvergence:
    node: str
    revision: int
    ready: bool
    converged: bool
    online: bool


@dataclass(frozen=True, slots=True)
class Convergence:
    revision: int
    converged: bool
    seconds: float
    nodes: list[NodeConvergence]
    lagging: list[str]


@dataclass(frozen=True, slots=True)
class NodeStatusEntry:
    name: str
    online: bool
    ready: bool
    revision: int
    epoch: int
    seq: int
    last_error: str
    state_hash: str
    expected_hash: str


async def get_resource(resources: ResourceStore, key: ResourceKey) -> tuple[dict[str, Any], int]:
    """The stored document of ``key`` (with its resourceVersion) and its revision."""
    entry = await resources.kv.get(resources.layout.etcd_key(key))
    if entry is None:
        raise AdminError(grpc.StatusCode.NOT_FOUND, f"{key} does not exist")
    decoded = resources.decode(entry)
    if isinstance(decoded, InvalidEntry):
        message = f"{key}: the stored value is not a valid resource ({decoded.reason}); replace it"
        raise AdminError(grpc.StatusCode.FAILED_PRECONDITION, message)
    return to_document(decoded), entry.mod_revision


async def list_resources(
    controller: Controller, kind: str, namespace: str, selector: Selector
) -> tuple[list[dict[str, Any]], int]:
    """Documents of ``kind`` (every kind when empty) in ``namespace`` (all when empty; ignored for
    cluster-scoped kinds) whose labels match ``selector``, sorted by key, and the list revision."""
    if kind:
        wrong = kind_problem(kind)
        if wrong is not None:
            raise invalid([BatchProblem(REQUEST, "kind", wrong)])
    matched: list[Resource] = []
    revision = 0
    for name in [kind] if kind else list(KINDS):
        found, at = await controller.resources.list(name, namespace if is_namespaced(name) else "")
        revision = max(revision, at)
        for item in found:
            if isinstance(item, InvalidEntry):
                log.warning("list: skipping an invalid stored value: %s: %s", item.key, item.reason)
            elif selector.evaluate(item.metadata.labels):
                matched.append(item)
    matched.sort(key=key_of)
    return [to_document(r) for r in matched], revision


def _engine(controller: Controller) -> Engine:
    engine = controller.engine
    if engine is None or not engine.in_sync:
        raise AdminError(grpc.StatusCode.UNAVAILABLE, "the controller lost leadership or sync")
    return engine


def convergence(controller: Controller, engine: Engine, revision: int, seconds: float) -> Convergence:
    """Where every node the graph compiles for stands with respect to ``revision``."""
    tracker = engine.tracker
    lagging = tracker.lagging(revision)
    nodes = []
    for node in sorted(engine.graph.nodes()):
        report = controller.status.latest.get(node)
        nodes.append(
            NodeConvergence(
                node=node,
                revision=tracker.applied_revision(node),
                ready=report is not None and report.ready,
                converged=node not in lagging,
                online=report is not None and report.online,
            )
        )
    converged = tracker.is_converged(revision)
    return Convergence(revision, converged, seconds, nodes, lagging)


async def wait_converged(controller: Controller, revision: int, timeout: float) -> Convergence:
    """Wait until every node affected by changes up to ``revision`` (0: what is compiled now) has
    applied them, or ``timeout`` seconds pass."""
    started = time.monotonic()
    deadline = started + max(timeout, 0.0)
    engine = _engine(controller)
    if revision <= 0:
        revision = engine.revision
    while True:
        controller.changed.clear()  # clear, then check, then wait: a change in between is not lost
        engine = _engine(controller)
        if engine.tracker.is_converged(revision):
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(controller.changed.wait(), remaining)
    return convergence(controller, engine, revision, time.monotonic() - started)


def node_status(controller: Controller) -> tuple[int, list[NodeStatusEntry]]:
    """The compiled revision and every node the graph knows or that reported, by name."""
    engine = _engine(controller)
    compiled = engine.graph.nodes()
    entries = []
    for node in sorted(compiled | set(controller.status.latest)):
        report: NodeReport | None = controller.status.latest.get(node)
        entries.append(
            NodeStatusEntry(
                name=node,
                online=report is not None and report.online,
                ready=report is not None and report.ready,
                revision=engine.tracker.applied_revision(node),
                epoch=report.epoch if report else 0,
                seq=report.seq if report else 0,
                last_error=(report.last_error or "") if report else "",
                state_hash=(report.state_hash or "") if report else "",
                expected_hash=engine.expected_hash(node) if node in compiled else "",
            )
        )
    return engine.revision, entries


def _states(engine: Engine) -> dict[str, NodeState]:
    return {node: engine.graph.node_state(node) for node in sorted(engine.graph.nodes())}


def _protocol(protocol: str, port: int) -> tuple[str, int]:
    problems = []
    upper = (protocol or "TCP").upper()
    if upper not in PORT_PROTOCOLS:
        problems.append(
            BatchProblem(REQUEST, "protocol", f"{protocol!r} is not one of {', '.join(PORT_PROTOCOLS)}")
        )
    if not 1 <= port <= 65535:
        problems.append(BatchProblem(REQUEST, "port", f"{port} is not a port (1-65535)"))
    if problems:
        raise invalid(problems)
    return upper, PROTOCOL_NUMBERS[upper]


def reach(controller: Controller, port: int, protocol: str) -> dict[str, Any]:
    """The ``reach -o json`` document over every programmed pod of the live state."""
    name, number = _protocol(protocol, port)
    states = _states(_engine(controller))
    return reach_json(port, name, reach_matrix(states, endpoint_peers(states), number, port))


def explain(controller: Controller, src: str, dst: str, port: int, protocol: str) -> dict[str, Any]:
    """The ``explain -o json`` document for ``src`` → ``dst`` (``namespace/name``) in the live state."""
    name, number = _protocol(protocol, port)
    states = _states(_engine(controller))
    peers = endpoint_peers(states)
    missing = [
        BatchProblem(
            REQUEST,
            field,
            f"no pod {pod!r} among the programmed endpoints (known: {', '.join(peers) or 'none'})",
        )
        for field, pod in (("from_pod", src), ("to_pod", dst))
        if pod not in peers
    ]
    if missing:
        raise AdminError(grpc.StatusCode.NOT_FOUND, "unknown pod(s)", missing)
    return explanation_json(connection_allowed(states, peers[src], peers[dst], number, port), name)
