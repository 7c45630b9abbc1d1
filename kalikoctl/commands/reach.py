"""``kalikoctl reach -f PATH... [--port N] [--protocol P] [-o json|table]``: the connectivity matrix.

Owns the command and the matrix rendering shared with ``demo``. ``-o json`` prints
``{"port", "protocol", "pods": ["ns/name", ...], "allowed": {src: {dst: bool}}}`` with self pairs
omitted (as upstream's truth tables; built by `policycore.reports`); ``-o table`` (the default)
prints the truth table with ``.`` for allowed and ``X`` for denied, rows = from, columns = to.
Exit 0 when the manifests are valid (whatever the verdicts), 1 when they are not. Without ``-f``
the leading controller (``--server``) answers for every programmed pod of the live cluster
(`kalikoctl.live`). It does not own evaluation (`offline`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from kalikoctl.live import live_reach
from kalikoctl.offline import DEFAULT_NODES
from kalikoctl.online import DEFAULT, OptionalFilesOption, ServerOption
from kalikoctl.options import (
    NodesOption,
    PortOption,
    ProtocolOption,
    RecursiveOption,
    check_protocol,
    load_cluster,
)
from kalikoctl.output import MatrixFormat, console, print_json
from policycore.reports import reach_json


def truth_table(title: str, allowed: Mapping[str, Mapping[str, bool]]) -> Table:
    """Rows are sources, columns destinations; ``.`` allowed, ``X`` denied, ``-`` self."""
    pods = list(allowed)
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("from \\ to")
    for pod in pods:
        table.add_column(pod, justify="center")
    for src in pods:
        table.add_row(src, *("-" if dst == src else "." if allowed[src][dst] else "X" for dst in pods))
    return table


def reach(
    filename: OptionalFilesOption = None,
    port: PortOption = 80,
    protocol: ProtocolOption = "TCP",
    output: Annotated[
        MatrixFormat, typer.Option("-o", "--output", help="table or json")
    ] = MatrixFormat.table,
    recursive: RecursiveOption = False,
    nodes: NodesOption = DEFAULT_NODES,
    server: ServerOption = DEFAULT,
) -> None:
    """Which pods may open a connection to which: from manifests (-f, offline) or the live cluster."""
    protocol = check_protocol(protocol)
    if not filename:
        live_reach(server, port, protocol, as_json=output is MatrixFormat.json)
        return
    cluster = load_cluster(filename, recursive=recursive, nodes=nodes)
    allowed = cluster.matrix(port, protocol)
    if output is MatrixFormat.json:
        print_json(reach_json(port, protocol, allowed))
        return
    out = console()
    out.print(truth_table(f"{protocol}/{port}  (. allowed, X denied)", allowed))


def register(app: typer.Typer) -> None:
    app.command("reach")(reach)
