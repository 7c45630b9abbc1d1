"""What the online commands share: ``--server``, kind names, reading manifests to send, printing
server refusals, and waiting for convergence.

Owns the ``--server`` option (``KALIKO_SERVER``, comma-separated addresses), the kind names the
commands accept (any case, singular or plural, calicoctl's and kubectl's aliases; ``networkpolicy``
/ ``netpol`` / ``np`` are Kaliko's Calico-style ``NetworkPolicy``, the Kubernetes one is
``kubernetesnetworkpolicy`` / ``k8snetworkpolicy`` / ``knp``), turning files into
the JSON documents a write sends (keeping each document's source, so a problem the server finds
in ``documents[3]`` is printed as ``dir/p.yaml#1: spec.ingress[0].action: ...``), the one way a
`ServerError` is printed and exits (1 when the server refused, 2 when no controller answered),
calicoctl's result sentences and the ``--wait`` JSON. It does not own the commands
(`kalikoctl.commands.*`) or the transport (`kalikoctl.client`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer

from kalikoctl.client import DEFAULT_SERVER, AdminClient, ServerError
from kalikoctl.options import stdin_text
from kalikoctl.output import EXIT_ERROR, EXIT_NO, error_console, escape, print_problems
from policycore.model import KINDS, Problem, SourcedDocument, ValidationFailed, read_documents
from wire.gen.kaliko.v1 import admin_pb2 as pb

ServerOption = Annotated[
    str,
    typer.Option(
        "--server",
        "-s",
        envvar="KALIKO_SERVER",
        help="Controller gRPC address(es), comma-separated; the leader answers.",
    ),
]
DEFAULT = DEFAULT_SERVER
OptionalFilesOption = Annotated[
    list[str] | None,
    typer.Option(
        "-f",
        "--filename",
        help="A manifest file, a directory of them, or '-' (repeatable); none: ask the live controller.",
    ),
]

_ALIASES: dict[str, tuple[str, ...]] = {
    "Namespace": ("ns",),
    "Node": ("no",),
    "Pod": ("po",),
    "Service": ("svc",),
    "KubernetesNetworkPolicy": ("k8snetworkpolicy", "k8snetworkpolicies", "knp", "knps"),
    "NetworkPolicy": ("netpol", "netpols", "np", "nps", "policy", "policies"),
    "GlobalNetworkPolicy": ("gnp", "gnps"),
    "Tier": (),
}


def _plural(name: str) -> str:
    return name[:-1] + "ies" if name.endswith("y") else name + "s"


ALIASES: dict[str, str] = {
    alias: kind for kind, extra in _ALIASES.items() for alias in (kind.lower(), _plural(kind.lower()), *extra)
}


def resolve_kind(name: str) -> str:
    """The canonical kind ``name`` stands for; a usage error (exit 2) listing the kinds otherwise."""
    found = ALIASES.get(name.lower())
    if found is None:
        known = ", ".join(
            f"{kind} ({'/'.join(a for a, k in ALIASES.items() if k == kind)})" for kind in KINDS
        )
        raise typer.BadParameter(f"unknown kind {name!r}; known: {known}", param_hint="KIND")
    return found


@contextmanager
def connect(server: str) -> Iterator[AdminClient]:
    """An `AdminClient`; any `ServerError` escaping the block is printed and exits."""
    client = AdminClient(server)
    try:
        yield client
    except ServerError as err:
        fail_server(err)
    finally:
        client.close()


def fail_server(err: ServerError, sources: Sequence[str] = (), *, exit_code: int | None = None) -> NoReturn:
    """Print what the server said (every problem, named by its source) and exit ``exit_code``
    (default: 1 when the server refused, 2 when no controller answered)."""
    out = error_console()
    lines = err.details.splitlines() or [err.code.name]
    out.print(f"[red]error[/red]: {escape(lines[0])} ({err.code.name})")
    if err.problems:
        problems = []
        for p in err.problems:
            if p.document < 0:
                source = ""
            elif p.collection == "documents" and p.document < len(sources):
                source = sources[p.document]
            else:
                source = f"{p.collection}[{p.document}]"
            problems.append(Problem(p.path, p.reason, source))
        print_problems(problems)
    else:
        for line in lines[1:]:
            out.print(f"  {escape(line)}")
    if exit_code is None:
        exit_code = EXIT_ERROR if err.unreachable else EXIT_NO
    raise typer.Exit(exit_code)


def read_manifests(paths: Sequence[str], *, recursive: bool = False) -> list[SourcedDocument]:
    """Every document in ``paths`` (``-``: stdin); unreadable or unparsable sources exit 1."""
    try:
        documents = read_documents(paths, stdin_text(paths), recursive=recursive)
    except ValidationFailed as err:
        print_problems(err.problems)
        raise typer.Exit(EXIT_NO) from None
    if not documents:
        error_console().print("[red]error[/red]: no resources found in the given files")
        raise typer.Exit(EXIT_NO)
    return documents


def documents_json(documents: Sequence[SourcedDocument]) -> list[str]:
    return [json.dumps(d.doc, default=str) for d in documents]


def result_sentence(verb: str, kinds: Sequence[str]) -> str:
    """calicoctl's "Successfully applied 3 'NetworkPolicy' resource(s)" (no kind when mixed)."""
    counts = Counter(kinds)
    if len(counts) == 1:
        ((kind, count),) = counts.items()
        return f"Successfully {verb} {count} '{kind}' resource(s)"
    return f"Successfully {verb} {len(kinds)} resource(s)"


def wait_json(reply: pb.WaitConvergedReply, seconds: float) -> dict[str, Any]:
    """``{"revision", "converged", "seconds", "nodes": {node: {"revision", "ready"}}, "lagging"}``."""
    return {
        "revision": reply.revision,
        "converged": reply.converged,
        "seconds": round(seconds, 4),
        "nodes": {n.node: {"revision": n.revision, "ready": n.ready} for n in reply.nodes},
        "lagging": list(reply.lagging),
    }


def wait_converged(client: AdminClient, revision: int, timeout: float) -> pb.WaitConvergedReply:
    request = pb.WaitConvergedRequest(revision=revision, timeout_seconds=timeout)
    reply: pb.WaitConvergedReply = client.call("WaitConverged", request, timeout=timeout + 30.0)
    return reply


def timed_out_message(reply: pb.WaitConvergedReply, timeout: float) -> str:
    return (
        f"timed out after {timeout:g}s waiting for revision {reply.revision} to converge; "
        f"lagging node(s): {', '.join(reply.lagging) or 'none reported'}"
    )
