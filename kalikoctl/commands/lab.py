"""``kalikoctl lab up|down|status``: a local cluster in the background, and its state file.

Owns the command-line face of `lab.cluster`: ``up --nodes N --backend services|embedded
--dataplane memory [--listen ADDR] [--cluster NAME]`` starts the lab's processes detached and
returns once every node is ready (``--cluster``: the Kaliko cluster name that namespaces the lab's
etcd keys and Kafka and MQTT topics; default ``kaliko`` for the default run directory, a name
derived from ``--run-dir`` otherwise; refused at once if another controller already leads it),
printing the admin address and where the logs are; ``down`` stops everything the lab started;
``status`` lists the processes (alive, ready) and, when the admin API answers, the controller's
view of each node. ``-o json`` prints one document. Exit codes: 0 done, 1 ``status``
found no lab (or a dead process), 2 a lab could not be started or stopped.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from iokit.cluster_name import InvalidClusterName, check_cluster_name
from kalikoctl.output import EXIT_NO, Format, console, fail, print_json
from lab.cluster import RUN_DIR, ClusterSpec, LabError, LabState, down, node_status, status, up
from lab.processes import ProcessFailed

lab_app = typer.Typer(help="Run a local Kaliko cluster in the background.", no_args_is_help=True)


class Backend(StrEnum):
    embedded = "embedded"
    services = "services"


OutputOption = Annotated[Format, typer.Option("-o", "--output", help="text or json.")]
RunDirOption = Annotated[str, typer.Option("--run-dir", help="Where the state file and logs live.")]


def _cluster_name(value: str) -> str:
    if value:
        try:
            check_cluster_name(value)
        except InvalidClusterName as err:
            raise typer.BadParameter(str(err)) from None
    return value


@lab_app.command("up")
def lab_up(
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="Number of nodes (node-1..node-N).")] = 3,
    backend: Annotated[Backend, typer.Option("--backend", help="One process, or real services.")] = (
        Backend.embedded
    ),
    dataplane: Annotated[str, typer.Option("--dataplane", help="The agents' data plane.")] = "memory",
    listen: Annotated[str, typer.Option("--listen", help="The controller's gRPC (admin) address.")] = (
        "127.0.0.1:50051"
    ),
    etcd: Annotated[str, typer.Option("--etcd", help="services: etcd HOST:PORT.")] = "127.0.0.1:2379",
    kafka: Annotated[str, typer.Option("--kafka", help="services: Kafka bootstrap HOST:PORT.")] = (
        "127.0.0.1:9092"
    ),
    mqtt: Annotated[str, typer.Option("--mqtt", help="services: MQTT broker HOST:PORT.")] = "127.0.0.1:1883",
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for readiness.")] = 120.0,
    cluster: Annotated[
        str,
        typer.Option(
            "--cluster",
            callback=_cluster_name,
            help="Cluster name (DNS-1123 label) prefixing its etcd keys, Kafka and MQTT topics; "
            "default: kaliko for the default --run-dir, k<hash> for others.",
        ),
    ] = "",
    run_dir: RunDirOption = str(RUN_DIR),
    output: OutputOption = Format.text,
) -> None:
    """Start a cluster in the background; returns when every node is ready."""
    try:
        spec = ClusterSpec(
            nodes=nodes,
            backend=backend.value,
            dataplane=dataplane,
            listen=listen,
            etcd=etcd,
            kafka=kafka,
            mqtt=mqtt,
            timeout=timeout,
            run_dir=run_dir,
            cluster=cluster,
        )
        state = up(spec)
    except (LabError, ProcessFailed, ValueError) as err:
        fail(f"lab up: {err}")
    if output is Format.json:
        print_json(state.to_json())
        return
    out = console()
    out.print(
        f"lab up: {len(spec.node_names)} node(s) ready in {state.ready_seconds:.2f}s "
        f"(backend {backend.value}, data plane {dataplane}, cluster {spec.cluster})"
    )
    out.print(f"admin API: {state.admin}   e.g. kalikoctl node status --server {state.admin}")
    out.print(f"logs:      {spec.log_dir}/")
    out.print(f"state:     {spec.state_file}   stop with: kalikoctl lab down")


@lab_app.command("down")
def lab_down(run_dir: RunDirOption = str(RUN_DIR), output: OutputOption = Format.text) -> None:
    """Stop every process the lab started and remove its state file."""
    try:
        stopped = down(run_dir)
    except LabError as err:
        fail(f"lab down: {err}")
    if output is Format.json:
        print_json({"stopped": stopped})
    elif stopped:
        console().print(f"lab down: stopped {', '.join(stopped)}")
    else:
        console().print("lab down: no lab was running")


@lab_app.command("status")
def lab_status(run_dir: RunDirOption = str(RUN_DIR), output: OutputOption = Format.text) -> None:
    """The lab's processes and, when the admin API answers, each node's status."""
    try:
        state = status(run_dir)
    except LabError as err:
        fail(f"lab status: {err}")
    if state is None:
        if output is Format.json:
            print_json({"running": False})
        else:
            console().print("lab status: no lab (kalikoctl lab up starts one)")
        raise typer.Exit(EXIT_NO)
    document = state.to_json()
    reply = node_status(state.admin)
    document["nodes_status"] = (
        None
        if reply is None
        else [
            {
                "name": n.name,
                "online": n.online,
                "ready": n.ready,
                "revision": n.revision,
                "in_sync": bool(n.state_hash) and n.state_hash == n.expected_hash,
            }
            for n in reply.nodes
        ]
    )
    healthy = all(p["alive"] for p in document["processes"])
    if output is Format.json:
        print_json(document)
    else:
        _print_status(state, document)
    if not healthy:
        raise typer.Exit(EXIT_NO)


def _print_status(state: LabState, document: dict[str, object]) -> None:
    out = console()
    out.print(
        f"backend {state.spec.backend}, data plane {state.spec.dataplane}, cluster {state.spec.cluster}, "
        f"admin API {state.admin}"
    )
    table = Table("process", "pid", "alive", "ready", "log", box=box.SIMPLE)
    for p in state.processes.processes:
        table.add_row(p.name, str(p.pid), _yes(p.alive()), _yes(p.ready()), p.log)
    out.print(table)
    nodes = document.get("nodes_status")
    if not isinstance(nodes, list):
        out.print("admin API not answering: no node status")
        return
    table = Table("node", "online", "ready", "revision", "programmed = compiled", box=box.SIMPLE)
    for n in nodes:
        table.add_row(n["name"], _yes(n["online"]), _yes(n["ready"]), str(n["revision"]), _yes(n["in_sync"]))
    out.print(table)


def _yes(value: object) -> str:
    return "yes" if value else "no"


def register(app: typer.Typer) -> None:
    app.add_typer(lab_app, name="lab")
