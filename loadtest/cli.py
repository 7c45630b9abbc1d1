"""``python -m loadtest SCENARIO [options]``: the harness's command line (typer).

Owns parsing the options into `RunParams` and backend settings, building the backend, running
under the live view, writing the outputs and the exit code: 0 when the run is correct (nothing
lost, no mismatched node, no component failure), 1 otherwise — missed performance targets are
reported, not failed. It does not own any phase of the run (`loadtest.runner`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from loadtest.html_report import write_html
from loadtest.live import LiveView
from loadtest.outputs import write_csv, write_json
from loadtest.report import build_report
from loadtest.runner import Run, RunParams
from loadtest.scenarios import SCENARIOS

app = typer.Typer(add_completion=False, help=__doc__)
Opt = typer.Option


def _backend_factory(backend: str, settings: dict[str, Any]) -> Any:
    if backend == "embedded":
        from loadtest.embedded import EmbeddedBackend

        return lambda sink: EmbeddedBackend(sink, partitions=settings["partitions"])
    if backend == "services":
        from loadtest.services import ServicesBackend, ServicesSettings

        return lambda sink: ServicesBackend(sink, ServicesSettings(**settings))
    raise typer.BadParameter(f"backend: expected services or embedded, got {backend!r}")


async def execute(run: Run, live: bool, console: Console) -> dict[str, Any]:
    view = LiveView(run, console)
    if live:
        run.on_tick = view.refresh
        with view:
            await run.execute()
    else:
        await run.execute()
    return build_report(run)


def summarize(report: dict[str, Any], console: Console) -> None:
    conv, pooled = report["convergence_ms"], report["pooled_ms"]
    console.print(
        f"{report['scenario']}: {report['changes']} changes, convergence ms p50 {conv['p50']} "
        f"p90 {conv['p90']} p99 {conv['p99']} max {conv['max']} (pooled p99 {pooled['p99']}), "
        f"bytes/affected node p99 "
        f"{report['bytes_per_affected_node']['p99']}, to unaffected {report['bytes_to_unaffected_nodes']} B, "
        f"kafka hop p99 {report['kafka_hop_ms']['p99']} ms, controller {report['controller']}, agents "
        f"{report['agents']}, warm-up {report['warmup']['ms']} ms, lost {report['lost']}, mismatched "
        f"{report['mismatched_nodes']}",
        highlight=False,
    )
    for target in report["targets"]:
        mark = "ok " if target["ok"] else "MISS"
        scale = "" if target["at_scale"] else " (not at the goal's scale)"
        console.print(
            f"  {mark} {target['id']} {target['metric']} = {target['value']} (limit {target['limit']}){scale}"
        )
    for problem in report["problems"]:
        console.print(f"  problem: {problem}", style="red")


@app.command()
def main(
    scenario: Annotated[str, typer.Argument(help=f"one of: {', '.join(SCENARIOS)}")],
    nodes: Annotated[int, Opt(help="simulated nodes (agents)")] = 100,
    pods: Annotated[int, Opt(help="pods loaded before the run")] = 5000,
    policies: Annotated[
        int, Opt(help="policies loaded before the run (a few are GlobalNetworkPolicies)")
    ] = 200,
    namespaces: Annotated[int, Opt(help="namespaces")] = 10,
    rate: Annotated[float | None, Opt(help="changes per second (default: the scenario's)")] = None,
    duration: Annotated[float, Opt(help="seconds of churn (cold-start: ignored)")] = 60.0,
    spawn_rate: Annotated[float, Opt(help="agents started per second (0: all at once)")] = 100.0,
    backend: Annotated[str, Opt(help="services (real etcd, Kafka, MQTT, gRPC) or embedded")] = "embedded",
    seed: Annotated[int, Opt(help="seed of the workload and the task draws")] = 1,
    report: Annotated[str | None, Opt(help="write the JSON report here")] = None,
    html: Annotated[str | None, Opt(help="write the HTML report here")] = None,
    csv: Annotated[
        str | None, Opt(help="write PREFIX_stats.csv, PREFIX_stats_history.csv, PREFIX_failures.csv")
    ] = None,
    drain_timeout: Annotated[float, Opt(help="seconds to wait for in-flight changes after the churn")] = 60.0,
    warmup_timeout: Annotated[float, Opt(help="seconds allowed for the first convergence")] = 600.0,
    slow_interval: Annotated[
        float | None, Opt(help="slow-agent: seconds the slow agent is busy per message")
    ] = None,
    partitions: Annotated[int, Opt(help="embedded: bus partitions")] = 16,
    agent_workers: Annotated[int, Opt(help="services: agent worker processes")] = 2,
    kafka: Annotated[str, Opt(help="services: Kafka bootstrap")] = "127.0.0.1:9092",
    topic: Annotated[str, Opt(help="services: diff topic (created if absent)")] = "kaliko.bench-diffs",
    mqtt_mode: Annotated[
        str, Opt(help="services: per-node MQTT clients, or one shared per worker")
    ] = "per-node",
    profile_dir: Annotated[
        str | None, Opt(help="services: py-spy profiles (collapsed stacks) of each worker here")
    ] = None,
    lease_ttl: Annotated[
        int, Opt(help="services: the controller's etcd lease TTL in s (see docs/bench/README.md)")
    ] = 30,
    agents_first: Annotated[
        bool | None,
        Opt(
            "--cold/--live-load",
            help="cold start (agents, then controller) or a live load; default: by scenario",
        ),
    ] = None,
    load_rate: Annotated[
        float, Opt(help="services: preload documents per second (0: as fast as etcd takes)")
    ] = 0.0,
    live: Annotated[bool, Opt(help="live table (on a terminal) or a status line every 10 s")] = True,
) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console = Console(stderr=True)
    try:
        params = RunParams(
            scenario, nodes, pods, policies, namespaces, rate, duration, spawn_rate, backend, seed,
            drain_timeout, warmup_timeout, slow_interval, agents_first,
        )  # fmt: skip
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    settings: dict[str, Any] = {"partitions": partitions}
    if backend == "services":
        settings = {
            "kafka": kafka,
            "topic": topic,
            "agent_workers": agent_workers,
            "mqtt_mode": mqtt_mode,
            "partitions": max(partitions, 16),
            "profile_dir": profile_dir,
            "lease_ttl": lease_ttl,
            "load_rate": load_rate,
        }
    run = Run(params, _backend_factory(backend, settings))
    signal.signal(signal.SIGTERM, _interrupted)  # stop like Ctrl-C: the run's cleanup ends its processes
    result = asyncio.run(execute(run, live, console))
    if report:
        write_json(result, report)
    if html:
        write_html(run, result, html)
    if csv:
        write_csv(run, csv)
    summarize(result, console)
    correct = result["lost"] == 0 and result["mismatched_nodes"] == 0 and not result["problems"]
    sys.exit(0 if correct else 1)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def entry() -> None:
    app()
