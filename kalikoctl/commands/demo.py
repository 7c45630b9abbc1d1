"""``kalikoctl demo NAME [--dataplane memory|nftables] [-o json] [--serve]``: a demo's steps, their verdicts.

Owns running a demo from `lab.demos.catalog` (``stars``, ...) step by step: apply the step's
manifests (create or replace, as ``kubectl apply``), then judge every probe edge the demo lists
(for Stars: frontend, backend and client among themselves, and the management UI to each). The
``memory`` data plane feeds every step to one incremental compiler and evaluates through
in-memory data planes (`kalikoctl.offline`). The ``nftables`` data plane runs the demo for real
(`lab.live_demo`): a lab of network namespaces (``--backend embedded|services``), every step
written through the admin API, ``converged_seconds`` from ``WaitConverged``, every edge a real
connection between pods; the management UI is on the host's loopback at its Service's nodePort
(http://127.0.0.1:30002/ for Stars; ``--ui-port`` picks another, 0 any free one). ``--serve``
then keeps the lab and its UI up until Ctrl-C (or SIGTERM, SIGHUP), printing on stderr the UI's
URL and how to change the lab meanwhile (its admin address and run directory). On the memory data
plane there is no lab to keep: ``--serve`` is refused. Other data planes register a `Runner` in
`DATAPLANES`.

``-o json`` prints ``{"steps": [{"name", "converged_seconds", "edges": [{"from", "to", "port",
"allowed"}]}]}``, edges in ``steps.yaml`` order (``converged_seconds`` is null offline); the
default prints each step's matrix.
Exit 0 when every verdict is what the demo's ``steps.yaml`` expects, 1 otherwise (mismatches on
stderr), 2 for an unknown demo or data plane.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from rich import box
from rich.table import Table

from kalikoctl.lab_writes import RUN_DIR_ENV
from kalikoctl.offline import OfflineCluster
from kalikoctl.output import EXIT_ERROR, EXIT_NO, Format, console, error_console, escape, fail, print_json
from lab.cluster import LabError
from lab.cni import CniError
from lab.demos.catalog import Demo, DemoError, demo_names, load_demo
from lab.processes import ProcessFailed
from policycore.model import SourcedDocument, ValidationFailed, parse_documents


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    port: int
    protocol: str
    allowed: bool
    expected: bool


@dataclass(frozen=True, slots=True)
class StepResult:
    name: str
    description: str
    converged_seconds: float | None
    edges: tuple[Edge, ...]


@dataclass(frozen=True, slots=True)
class DemoOptions:
    backend: str = "embedded"
    serve: bool = False
    run_dir: str | None = None
    ui_port: int | None = None


Runner = Callable[[Demo], Iterator[StepResult]]
LiveRunner = Callable[[Demo, DemoOptions], Iterator[StepResult]]


def run_memory(demo: Demo) -> Iterator[StepResult]:
    """Each step applied to one offline cluster (incrementally, as the controller would), then judged."""
    cluster = OfflineCluster()
    for step in demo.steps:
        sourced = [SourcedDocument(f"{demo.demo}/{step.name}", doc) for doc in demo.documents(step)]
        cluster.apply(parse_documents(sourced))
        edges = tuple(
            Edge(
                probe.source_pod,
                probe.target_pod,
                probe.port,
                probe.protocol,
                cluster.connection(probe.source_pod, probe.target_pod, probe.port, probe.protocol).allowed,
                probe.allowed,
            )
            for probe in demo.expected_probes(step)
        )
        yield StepResult(step.name, step.description, None, edges)


def run_nftables(demo: Demo, options: DemoOptions) -> Iterator[StepResult]:
    """Each step on a live lab (nftables in node namespaces), probed with real connections."""
    from lab.live_demo import DEMO_RUN_DIR, LiveDemo, LiveOptions

    run_dir = Path(options.run_dir) if options.run_dir else DEMO_RUN_DIR
    live_options = LiveOptions(backend=options.backend, run_dir=run_dir, ui_port=options.ui_port)
    with LiveDemo(demo, live_options) as live:
        for step in live.steps():
            edges = tuple(
                Edge(e.source, e.target, e.port, e.protocol, e.allowed, e.expected) for e in step.edges
            )
            yield StepResult(step.name, step.description, round(step.converged_seconds, 3), edges)
        for problem in live.ui_pushes:
            error_console().print(f"warning: the management UI did not take a report: {escape(problem)}")
        if options.serve:
            assert live.lab.state is not None
            serve_until_interrupted(live.ui_url(), live.lab.state.admin, live.lab.run_dir)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def serve_until_interrupted(url: str | None, admin: str, run_dir: str) -> None:
    """Keep the lab up until Ctrl-C, SIGTERM or SIGHUP (even where the shell ignores SIGINT)."""
    out = error_console()
    where = f"the management UI at {url}" if url else "the lab (this demo has no UI)"
    out.print(f"serving {where}; Ctrl-C stops the demo lab")
    out.print(f"change it meanwhile: {RUN_DIR_ENV}={run_dir} kalikoctl apply -f FILE --server {admin}")
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in STOP_SIGNALS}
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


DATAPLANES: dict[str, Runner] = {"memory": run_memory}
LIVE_DATAPLANES: dict[str, LiveRunner] = {"nftables": run_nftables}
"""Data planes that run a live lab, and so take the lab's options."""


def step_json(result: StepResult) -> dict[str, Any]:
    edges = [{"from": e.source, "to": e.target, "port": e.port, "allowed": e.allowed} for e in result.edges]
    return {"name": result.name, "converged_seconds": result.converged_seconds, "edges": edges}


def step_table(index: int, result: StepResult) -> Table:
    """Rows from, columns to: ``.`` allowed, ``X`` denied, ``!`` after a verdict the demo does not
    expect, blank where the demo does not probe."""
    sources = list(dict.fromkeys(e.source for e in result.edges))
    targets = list(dict.fromkeys(e.target for e in result.edges))
    cells = {
        (e.source, e.target): ("." if e.allowed else "X") + ("" if e.allowed == e.expected else "!")
        for e in result.edges
    }
    title = f"step {index}: {result.name}" + (f" - {result.description}" if result.description else "")
    if result.converged_seconds is not None:
        title += f" (converged in {result.converged_seconds:.3f}s)"
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("from \\ to")
    for pod in targets:
        table.add_column(pod, justify="center")
    for src in sources:
        table.add_row(src, *("-" if src == dst else cells.get((src, dst), "") for dst in targets))
    return table


def demo(
    name: Annotated[str, typer.Argument(help="A demo under lab/demos (stars, ...).")],
    dataplane: Annotated[
        str, typer.Option("--dataplane", help="memory (offline) or nftables (a live lab, as root).")
    ] = "memory",
    backend: Annotated[
        str, typer.Option("--backend", help="nftables: the lab's backend, embedded or services.")
    ] = "embedded",
    serve: Annotated[
        bool, typer.Option("--serve", help="nftables: keep the lab and its UI up after the last step.")
    ] = False,
    output: Annotated[Format, typer.Option("-o", "--output", help="text or json")] = Format.text,
    run_dir: Annotated[
        str | None, typer.Option("--run-dir", help="nftables: the demo lab's state directory.")
    ] = None,
    ui_port: Annotated[
        int | None,
        typer.Option(
            "--ui-port",
            min=0,
            max=65535,
            help="nftables: the UI's port on 127.0.0.1 (default: its Service's nodePort, 30002; 0: any).",
        ),
    ] = None,
) -> None:
    """Run a lab demo's policy steps and print what each step allows."""
    known = [*DATAPLANES, *LIVE_DATAPLANES]
    if dataplane not in known:
        fail(f"--dataplane: {dataplane!r} is not one of {', '.join(known)}", EXIT_ERROR)
    if backend not in ("embedded", "services"):
        fail(f"--backend: {backend!r} is not one of embedded, services", EXIT_ERROR)
    if name not in demo_names():
        fail(f"no demo {name!r} (known: {', '.join(demo_names())})", EXIT_ERROR)
    if serve and dataplane not in LIVE_DATAPLANES:
        fail(f"--serve: the {dataplane} data plane runs no lab to keep up (use nftables)", EXIT_ERROR)
    mismatches: int | None = None
    try:
        loaded = load_demo(name)
        if dataplane in LIVE_DATAPLANES:
            options = DemoOptions(backend=backend, serve=serve, run_dir=run_dir, ui_port=ui_port)
            steps = LIVE_DATAPLANES[dataplane](loaded, options)
        else:
            steps = DATAPLANES[dataplane](loaded)
        results: list[StepResult] = []
        for result in steps:
            results.append(result)
            if len(results) == len(loaded.steps):  # before a runner that serves goes on serving
                mismatches = report(results, output)
        if mismatches is None:
            mismatches = report(results, output)
    except (DemoError, ValidationFailed, LabError, ProcessFailed, CniError, grpc.RpcError) as err:
        fail(str(err), EXIT_ERROR)
    if mismatches:
        raise typer.Exit(EXIT_NO)


def report(results: list[StepResult], output: Format) -> int:
    """Print every step (and each verdict the demo does not expect, on stderr); the mismatch count."""
    if output is Format.json:
        print_json({"steps": [step_json(r) for r in results]})
    else:
        out = console()
        for index, result in enumerate(results, 1):
            out.print(step_table(index, result))
        out.print(". allowed   X denied   ! not what the demo expects")
    mismatches = [(r.name, e) for r in results for e in r.edges if e.allowed != e.expected]
    for step, edge in mismatches:
        verdict = "allowed" if edge.allowed else "denied"
        error_console().print(
            f"step {step}: {edge.source} -> {edge.target} {edge.protocol}/{edge.port} is {verdict}, "
            f"the demo expects the opposite"
        )
    return len(mismatches)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
