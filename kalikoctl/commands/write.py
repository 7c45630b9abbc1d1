"""``kalikoctl apply | create | replace | delete``: change resources through the controller's admin API.

Owns the write commands, calicoctl-style: ``-f FILE|DIR|-`` (``-R`` recursive), the whole batch
validated by the server before anything is written, "Successfully applied 3 'NetworkPolicy'
resource(s)" on success, every problem (``source: field.path: reason``) and exit 1 on any
refusal, exit 2 when no controller answers. ``delete`` also takes ``KIND NAME...`` (``-n``) and
``--skip-not-exists``. Shared flags:

* ``--dry-run=server``: the server validates and computes each node's diff, persists nothing; the
  per-node summary is printed (``-o json``: ``{"dry_run": true, "revision", "results", "nodes":
  {node: [op, ...]}}``);
* ``--wait [--timeout S]``: return once every node has applied the write (exit 1 naming the
  lagging nodes on timeout); with ``-o json`` print ``{"revision", "converged", "seconds",
  "nodes": {node: {"revision", "ready"}}, "lagging"}`` (``seconds``: from sending the write to
  the converged answer);
* ``-o json`` without ``--wait``: ``{"revision", "results": [{"kind", "namespace", "name",
  "outcome", "revision"}]}``.

It does not own transport (`kalikoctl.client`) or reading files (`kalikoctl.online`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any

import typer

from kalikoctl import lab_writes
from kalikoctl.client import AdminClient, ServerError
from kalikoctl.online import (
    DEFAULT,
    ServerOption,
    connect,
    documents_json,
    fail_server,
    read_manifests,
    resolve_kind,
    result_sentence,
    timed_out_message,
    wait_converged,
    wait_json,
)
from kalikoctl.options import RecursiveOption
from kalikoctl.output import EXIT_NO, Format, console, error_console, escape, print_json
from wire.gen.kaliko.v1 import admin_pb2 as pb
from wire.gen.kaliko.v1 import node_stream_pb2 as stream_pb

MAX_OPS_SHOWN = 8


class DryRun(StrEnum):
    none = "none"
    server = "server"


FileOption = Annotated[
    list[str],
    typer.Option(
        "-f", "--filename", help="A manifest file, a directory of them, or '-' for stdin (repeatable)."
    ),
]
DryRunOption = Annotated[
    DryRun, typer.Option("--dry-run", help="server: validate and compute per-node diffs, persist nothing.")
]
WaitOption = Annotated[
    bool, typer.Option("--wait", help="Return once every affected node has applied the change.")
]
TimeoutOption = Annotated[float, typer.Option("--timeout", min=0.0, help="Seconds --wait waits at most.")]
OutputOption = Annotated[Format, typer.Option("-o", "--output", help="text or json")]


def describe_op(op: stream_pb.Op) -> str:
    which = op.WhichOneof("op")
    if which == "ipset_replace":
        r = op.ipset_replace
        return f"ip set {r.set_id} = {len(r.members) + len(r.members_ipv4_deltas)} member(s)"
    if which == "ipset_delta":
        d = op.ipset_delta
        added, removed = len(d.added) + len(d.added_ipv4_deltas), len(d.removed) + len(d.removed_ipv4_deltas)
        return f"ip set {d.set_id} +{added} -{removed}"
    if which == "ipset_remove":
        return f"ip set {op.ipset_remove} removed"
    if which == "policy_update":
        return f"policy {op.policy_update.policy_id} updated"
    if which == "policy_remove":
        return f"policy {op.policy_remove} removed"
    if which == "endpoint_update":
        return f"endpoint {op.endpoint_update.key} updated"
    return f"endpoint {op.endpoint_remove} removed"


def _results_json(reply: pb.WriteReply) -> list[dict[str, Any]]:
    return [
        {"kind": r.ref.kind, "namespace": r.ref.namespace, "name": r.ref.name, "outcome": r.outcome,
         "revision": r.revision}
        for r in reply.results
    ]  # fmt: skip


def print_dry_run(reply: pb.WriteReply, output: Format) -> None:
    nodes = {n.node: [describe_op(op) for op in n.ops] for n in reply.dry_run_diffs}
    if output is Format.json:
        print_json(
            {"dry_run": True, "revision": reply.revision, "results": _results_json(reply), "nodes": nodes}
        )
        return
    out = console()
    out.print(f"Server dry run at revision {reply.revision}: nothing was written.")
    for r in reply.results:
        where = f"{r.ref.namespace}/{r.ref.name}" if r.ref.namespace else r.ref.name
        out.print(f"  {r.ref.kind} {escape(where)}: would be {r.outcome}")
    if not nodes:
        out.print("No node's rules would change.")
        return
    out.print(f"{len(nodes)} node(s) would receive changes:")
    for node, ops in nodes.items():
        shown = "; ".join(ops[:MAX_OPS_SHOWN]) + (
            f"; and {len(ops) - MAX_OPS_SHOWN} more" if len(ops) > MAX_OPS_SHOWN else ""
        )
        out.print(f"  {node}: {len(ops)} op(s): {escape(shown)}")


def finish_write(
    client: AdminClient,
    reply: pb.WriteReply,
    verb: str,
    *,
    wait: bool,
    timeout: float,
    output: Format,
    started: float,
) -> None:
    """Print the outcome of a write (and wait for convergence when asked)."""
    kinds = [r.ref.kind for r in reply.results if r.outcome != "absent"]
    if not wait:
        if output is Format.json:
            print_json({"revision": reply.revision, "results": _results_json(reply)})
        else:
            console().print(result_sentence(verb, kinds))
        return
    converged = wait_converged(client, reply.revision, timeout)
    seconds = time.monotonic() - started
    if output is Format.json:
        print_json(wait_json(converged, seconds))
    else:
        console().print(result_sentence(verb, kinds))
        if converged.converged:
            console().print(
                f"Converged at revision {converged.revision} on {len(converged.nodes)} node(s)"
                f" in {seconds:.3f}s"
            )
    if not converged.converged:
        error_console().print(f"[red]error[/red]: {escape(timed_out_message(converged, timeout))}")
        raise typer.Exit(EXIT_NO)


def _write(
    method: str,
    verb: str,
    filename: Sequence[str],
    recursive: bool,
    dry_run: DryRun,
    wait: bool,
    timeout: float,
    output: Format,
    server: str,
) -> None:
    documents = read_manifests(filename, recursive=recursive)
    pods, documents = lab_writes.admit(documents, server, dry_run=dry_run is DryRun.server)
    sources = [d.source for d in documents]
    request = pb.WriteRequest(documents_json=documents_json(documents), dry_run=dry_run is DryRun.server)
    with connect(server) as client:
        started = time.monotonic()
        try:
            reply = client.call(method, request)
        except BaseException as err:
            lab_writes.abort(pods)
            if isinstance(err, ServerError):
                fail_server(err, sources)
            raise
        if dry_run is DryRun.server:
            print_dry_run(reply, output)
            return
        try:
            finish_write(client, reply, verb, wait=wait, timeout=timeout, output=output, started=started)
        finally:  # written: the new pods run, whether or not --wait saw convergence in time
            lab_writes.commit(pods)


def apply(
    filename: FileOption,
    recursive: RecursiveOption = False,
    dry_run: DryRunOption = DryRun.none,
    wait: WaitOption = False,
    timeout: TimeoutOption = 60.0,
    output: OutputOption = Format.text,
    server: ServerOption = DEFAULT,
) -> None:
    """Create or replace the resources in the files (all of them, or none)."""
    _write("Apply", "applied", filename, recursive, dry_run, wait, timeout, output, server)


def create(
    filename: FileOption,
    recursive: RecursiveOption = False,
    dry_run: DryRunOption = DryRun.none,
    wait: WaitOption = False,
    timeout: TimeoutOption = 60.0,
    output: OutputOption = Format.text,
    server: ServerOption = DEFAULT,
) -> None:
    """Create the resources in the files; fails (writing nothing) if any already exists."""
    _write("Create", "created", filename, recursive, dry_run, wait, timeout, output, server)


def replace(
    filename: FileOption,
    recursive: RecursiveOption = False,
    dry_run: DryRunOption = DryRun.none,
    wait: WaitOption = False,
    timeout: TimeoutOption = 60.0,
    output: OutputOption = Format.text,
    server: ServerOption = DEFAULT,
) -> None:
    """Replace existing resources; fails if any is missing or its resourceVersion is stale."""
    _write("Replace", "replaced", filename, recursive, dry_run, wait, timeout, output, server)


def delete(
    args: Annotated[list[str] | None, typer.Argument(help="KIND NAME... (instead of -f)")] = None,
    filename: Annotated[
        list[str] | None, typer.Option("-f", "--filename", help="Manifests to delete.")
    ] = None,
    namespace: Annotated[str, typer.Option("-n", "--namespace", help="Namespace of KIND NAME...")] = "",
    skip_not_exists: Annotated[bool, typer.Option("--skip-not-exists", help="Absent is no error.")] = False,
    recursive: RecursiveOption = False,
    dry_run: DryRunOption = DryRun.none,
    wait: WaitOption = False,
    timeout: TimeoutOption = 60.0,
    output: OutputOption = Format.text,
    server: ServerOption = DEFAULT,
) -> None:
    """Delete the resources named in the files, or KIND NAME..."""
    request = pb.DeleteRequest(dry_run=dry_run is DryRun.server, skip_not_exists=skip_not_exists)
    sources: list[str] = []
    if filename and args:
        raise typer.BadParameter("give -f or KIND NAME..., not both")
    if filename:
        documents = read_manifests(filename, recursive=recursive)
        sources = [d.source for d in documents]
        request.documents_json.extend(documents_json(documents))
    elif args and len(args) >= 2:
        kind = resolve_kind(args[0])
        request.refs.extend(pb.ResourceRef(kind=kind, namespace=namespace, name=name) for name in args[1:])
    else:
        raise typer.BadParameter("give -f FILE or KIND NAME...")
    with connect(server) as client:
        started = time.monotonic()
        try:
            reply = client.call("Delete", request)
        except ServerError as err:
            fail_server(err, sources)
        if dry_run is DryRun.server:
            print_dry_run(reply, output)
            return
        lab_writes.deleted(reply, server)
        finish_write(client, reply, "deleted", wait=wait, timeout=timeout, output=output, started=started)


def register(app: typer.Typer) -> None:
    for command in (apply, create, replace, delete):
        app.command(command.__name__)(command)
