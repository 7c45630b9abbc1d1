"""A lab demo for real: a live lab, each step written through the pipeline, every edge probed.

Owns `LiveDemo`: on a `LiveLab` of its own (``.run/lab-demo``), each step of a demo's
``steps.yaml`` is applied as ``kalikoctl apply --wait`` applies it (``converged_seconds``: from
sending the write to the admin API's converged answer), then every edge the step lists is probed
with a real connection from inside the source pod (`lab.live_probe`), and, for a demo with a
management UI, the step's convergence time and the nodes' status are pushed to the UI's cluster
panel (`push_cluster_report`). The UI is on the host's loopback at its Service's ``nodePort``
(30002 in Calico's manifest; `lab.node_ports`); ``LiveOptions.ui_port`` sets another (0: a free
one). Leaving the context stops the lab.

::

    steps.yaml ─▶ LiveLab.apply (CNI, admin Apply, WaitConverged) ─▶ LiveLab.probe_edges
                                                                   └▶ push_cluster_report (UI)

It does not own the expectations (`lab.demos.catalog`), the comparison or printing (``kalikoctl
demo``), or the lab itself (`lab.live_lab`).
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.apps.management_ui.client import ClusterPushError, push_cluster_report
from lab.cluster import REPO
from lab.demos.catalog import Demo, Step
from lab.live_lab import LiveLab, Written
from lab.live_probe import PROBE_TIMEOUT

DEMO_RUN_DIR = REPO / ".run" / "lab-demo"


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
    probe_timeout: float = PROBE_TIMEOUT
    ui_port: int | None = None
    """The UI's host port instead of its Service's nodePort (0: any free port; None: the manifest's)."""


class LiveDemo:
    """One demo on its own live lab; use as a context manager (lab up on enter, down on exit)."""

    def __init__(self, demo: Demo, options: LiveOptions = LiveOptions()) -> None:
        self.demo = demo
        self.options = options
        self.lab = LiveLab(options.run_dir, nodes=options.nodes, backend=options.backend)
        self.ui_pushes: list[str] = []
        """Problems pushing reports to the UI (the demo goes on without its panel)."""

    def __enter__(self) -> LiveDemo:
        self.lab.__enter__()
        return self

    def __exit__(self, *_: object) -> None:
        self.lab.close()

    def steps(self) -> Iterator[LiveStep]:
        for step in self.demo.steps:
            yield self.run_step(step)

    def documents(self, step: Step) -> list[dict[str, Any]]:
        """The step's documents, the UI's NodePort Service set to ``ui_port`` if one is given."""
        documents = self.demo.documents(step)
        if self.options.ui_port is None or self.demo.ui is None:
            return documents
        namespace = self.demo.endpoints[self.demo.ui].pod.split("/")[0]
        return [_with_node_port(d, namespace, self.options.ui_port) for d in documents]

    def run_step(self, step: Step) -> LiveStep:
        """`apply_step`, then `probe_step`."""
        return self.probe_step(step, self.apply_step(step))

    def apply_step(self, step: Step) -> Written:
        """Write the step's documents and wait until every node programmed them."""
        return self.lab.apply(self.documents(step))

    def probe_step(self, step: Step, written: Written) -> LiveStep:
        """Probe every edge the step lists, then report the step to the UI's cluster panel."""
        probes = self.demo.expected_probes(step)
        wanted = [(p.source_pod, p.target_pod, p.port, p.protocol) for p in probes]
        started = time.monotonic()
        edges = self.lab.probe_edges(wanted, self.options.probe_timeout)
        probe_seconds = time.monotonic() - started
        live = tuple(
            LiveEdge(e.source, e.target, e.port, e.protocol, e.allowed, p.allowed)
            for e, p in zip(edges, probes, strict=True)
        )
        self._report(step.name, written.converged_seconds)
        return LiveStep(
            step.name, step.description, written.revision, written.converged_seconds, probe_seconds, live
        )

    def ui_url(self) -> str | None:
        """The host-loopback URL of the demo's management UI (its NodePort), if it runs one."""
        if self.demo.ui is None:
            return None
        pod = self.lab.pods().get(self.demo.endpoints[self.demo.ui].pod)
        return str(pod["forward"]) if pod is not None and pod["forward"] else None

    def _report(self, step: str, seconds: float) -> None:
        url = self.ui_url()
        if url is None:
            return
        try:
            asyncio.run(push_cluster_report(url, step, round(seconds, 3), self.lab.node_report()))
        except ClusterPushError as err:
            self.ui_pushes.append(f"step {step}: {err}")


def _with_node_port(document: dict[str, Any], namespace: str, port: int) -> dict[str, Any]:
    """A NodePort Service of ``namespace`` with its first port's nodePort set to ``port`` (0: unset)."""
    spec = document.get("spec") or {}
    metadata = document.get("metadata") or {}
    if document.get("kind") != "Service" or spec.get("type") != "NodePort" or not spec.get("ports"):
        return document
    if metadata.get("namespace") != namespace:
        return document
    changed = copy.deepcopy(document)
    first = changed["spec"]["ports"][0]
    first.pop("nodePort", None)
    if port:
        first["nodePort"] = port
    return changed
