"""``kalikoctl node status [-o json]``: every node's agent as the leading controller sees it.

Owns the command and its output. ``-o json`` prints
``{"revision": R, "nodes": [{"name", "online", "ready", "revision", "epoch", "seq", "last_error"}]}``
(``revision``: what the controller has compiled; a node's ``revision``: what it has applied;
``last_error``: null when none); the default is a table that also says whether the node's
programmed state hash equals what the controller compiled for it. Exit 0 when the controller
answered, 2 when none did. It does not own the status itself (the controller's status feed).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from kalikoctl.online import DEFAULT, ServerOption, connect
from kalikoctl.output import Format, console, escape, print_json
from wire.gen.kaliko.v1 import admin_pb2 as pb

node_app = typer.Typer(help="Nodes and their agents.", no_args_is_help=True)


def status_json(reply: pb.NodeStatusReply) -> dict[str, Any]:
    return {
        "revision": reply.revision,
        "nodes": [
            {
                "name": n.name,
                "online": n.online,
                "ready": n.ready,
                "revision": n.revision,
                "epoch": n.epoch,
                "seq": n.seq,
                "last_error": n.last_error or None,
            }
            for n in reply.nodes
        ],
    }


def _state(entry: pb.NodeStatusEntry) -> str:
    if not entry.expected_hash:
        return "not compiled"
    if not entry.state_hash:
        return "unknown"
    return "in sync" if entry.state_hash == entry.expected_hash else "DIFFERS"


@node_app.command("status")
def status(
    output: Annotated[Format, typer.Option("-o", "--output", help="text or json")] = Format.text,
    server: ServerOption = DEFAULT,
) -> None:
    """Show each node's agent: online, ready, applied revision, stream position, last error."""
    with connect(server) as client:
        reply: pb.NodeStatusReply = client.call("NodeStatus", pb.NodeStatusRequest())
    if output is Format.json:
        print_json(status_json(reply))
        return
    out = console()
    out.print(f"Controller compiled revision {reply.revision}; {len(reply.nodes)} node(s)")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("NAME", "ONLINE", "READY", "REVISION", "EPOCH", "SEQ", "RULES", "LAST ERROR"):
        table.add_column(column, overflow="fold")
    for n in reply.nodes:
        table.add_row(
            n.name,
            "yes" if n.online else "no",
            "yes" if n.ready else "no",
            str(n.revision),
            str(n.epoch),
            str(n.seq),
            _state(n),
            escape(n.last_error),
        )
    out.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
