"""A lab demo for real: a live lab, each step written through the pipeline, every edge probed.

Owns `LiveDemo`: it starts a lab on the nftables data plane (`lab.cluster.up`, in its own run
directory and admin port, so a user's lab is never touched), then for each step of a demo's
``steps.yaml`` writes the step's documents as ``kalikoctl apply`` does (Pods through the lab's CNI
daemon, `lab.cni.PodBatch`; the batch through the admin API ``Apply``), waits for the admin API's
``WaitConverged`` on the written revision (``converged_seconds``: from sending the write to the
converged answer), makes sure new pods serve, probes every edge the step lists with real
connections from inside the source pods (`lab.live_probe`) and, for demos with a management UI,
pushes the step's convergence time and the nodes' status to the UI's cluster panel. Leaving the
context stops the lab (every namespace, process and table it made).

::

    steps.yaml ─▶ PodBatch.admit ─▶ admin Apply ─▶ WaitConverged ─▶ PodBatch.commit ─▶ probe_edges
                     (CNI daemon)      (controller ─Kafka/twin─▶ agents ─nft─▶ node netns)   │
                                                                        push_cluster_report ◀┘

It does not own the expectations (`lab.demos.catalog`), the comparison or printing (``kalikoctl
demo``), or the lab's processes (`lab.cluster`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from lab.apps.management_ui.client import ClusterPushError, push_cluster_report
from lab.cluster import REPO, ClusterSpec, LabError, LabState, down, up
from lab.cni import CniClient, PodBatch
from lab.demos.catalog import Demo, Step
from lab.live_probe import PROBE_TIMEOUT, probe_edges
from lab.nft_launchers import cni_client
from lab.processes import free_port
from wire.gen.kaliko.v1 import admin_pb2 as admin_pb
from wire.gen.kaliko.v1 import admin_pb2_grpc as admin_grpc

DEMO_RUN_DIR = REPO / ".run" / "lab-demo"
CONVERGE_TIMEOUT = 30.0


@dataclass(frozen=True)
class LiveEdge:
    source: str
    target: str
    port: int
    protocol: str
    allowed: bool
    expected: bool


@dataclass(frozen=True)
class LiveStep:
    name: str
    description: str
    revision: int
    converged_seconds: float
    probe_seconds: float
    edges: tuple[LiveEdge, ...]


@dataclass(frozen=True)
class LiveOptions:
    backend: str = "embedded"
    nodes: int = 2
    run_dir: Path = DEMO_RUN_DIR
    timeout: float = CONVERGE_TIMEOUT
    probe_timeout: float = PROBE_TIMEOUT


class LiveDemo:
    """One demo on its own live lab; use as a context manager (lab up on enter, down on exit)."""

    def __init__(self, demo: Demo, options: LiveOptions = LiveOptions()) -> None:
        self.demo = demo
        self.options = options
        self.state: LabState | None = None
        self._cni: CniClient | None = None
        self._channel: grpc.Channel | None = None
        self.ui_pushes: list[str] = []
        """Problems pushing reports to the UI (the demo goes on without its panel)."""

    def __enter__(self) -> LiveDemo:
        run_dir = str(self.options.run_dir)
        down(run_dir)  # a demo lab left running by an earlier --serve, or a crashed run's state
        spec = ClusterSpec(
            nodes=self.options.nodes,
            backend=self.options.backend,
            dataplane="nftables",
            listen=f"127.0.0.1:{free_port()}",
            run_dir=run_dir,
        )
        self.state = up(spec)
        try:
            self._cni = cni_client(self.state)
            if self._cni is None:
                raise LabError("the demo lab has no CNI daemon")
            self._channel = grpc.insecure_channel(self.state.admin)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        down(str(self.options.run_dir))
        self.state = None

    @property
    def cni(self) -> CniClient:
        assert self._cni is not None, "enter the LiveDemo first"
        return self._cni

    def _admin(self, method: str, request: Any, timeout: float = 60.0) -> Any:
        assert self._channel is not None, "enter the LiveDemo first"
        return getattr(admin_grpc.AdminServiceStub(self._channel), method)(request, timeout=timeout)

    # -- steps ----------------------------------------------------------------------------------

    def steps(self) -> Iterator[LiveStep]:
        for step in self.demo.steps:
            yield self.run_step(step)

    def run_step(self, step: Step) -> LiveStep:
        batch = PodBatch.admit(self.cni, self.demo.documents(step))
        started = time.monotonic()
        try:
            reply = self._admin(
                "Apply", admin_pb.WriteRequest(documents_json=[json.dumps(d) for d in batch.documents])
            )
        except BaseException:
            batch.abort()
            raise
        converged = self._admin(
            "WaitConverged",
            admin_pb.WaitConvergedRequest(revision=reply.revision, timeout_seconds=self.options.timeout),
            timeout=self.options.timeout + 10,
        )
        seconds = time.monotonic() - started
        if not converged.converged:
            raise LabError(
                f"step {step.name}: revision {reply.revision} not converged within {self.options.timeout}s "
                f"(lagging: {', '.join(converged.lagging) or 'none'})"
            )
        batch.commit()
        probes = self.demo.expected_probes(step)
        wanted = [(p.source_pod, p.target_pod, p.port, p.protocol) for p in probes]
        probe_started = time.monotonic()
        edges = asyncio.run(probe_edges(self.cni.lab(), wanted, self.options.probe_timeout))
        probe_seconds = time.monotonic() - probe_started
        live = tuple(
            LiveEdge(e.source, e.target, e.port, e.protocol, e.allowed, p.allowed)
            for e, p in zip(edges, probes, strict=True)
        )
        self._report(step.name, seconds)
        return LiveStep(step.name, step.description, int(reply.revision), seconds, probe_seconds, live)

    # -- the UI ---------------------------------------------------------------------------------

    def ui_url(self) -> str | None:
        """The host-loopback URL of the demo's management UI (its forward), if it has one running."""
        if self.demo.ui is None:
            return None
        pod = self.demo.endpoints[self.demo.ui].pod
        for entry in self.cni.lab()["pods"]:
            if entry["key"] == pod:
                return str(entry["forward"]) if entry["forward"] else None
        return None

    def node_report(self) -> list[dict[str, Any]]:
        reply = self._admin("NodeStatus", admin_pb.NodeStatusRequest(), timeout=10)
        return [{"name": n.name, "ready": n.ready, "revision": max(int(n.revision), 0)} for n in reply.nodes]

    def _report(self, step: str, seconds: float) -> None:
        url = self.ui_url()
        if url is None:
            return
        try:
            asyncio.run(push_cluster_report(url, step, round(seconds, 3), self.node_report()))
        except ClusterPushError as err:
            self.ui_pushes.append(f"step {step}: {err}")
