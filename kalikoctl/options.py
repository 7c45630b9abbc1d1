"""Options several commands share, and what they load: ``-f PATH...``, ``--port``, ``--protocol``.

Owns the ``-f`` convention (files, directories, ``-R`` recursive, ``-`` for stdin, read once),
the port/protocol/nodes options of the evaluating commands, and loading an `OfflineCluster`
(every problem printed, exit 1, when the manifests are invalid). It does not own parsing or
validation rules (the one validator in `policycore.model`) or evaluation (`kalikoctl.offline`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from kalikoctl.offline import DEFAULT_NODES, PORT_PROTOCOLS, OfflineCluster
from kalikoctl.output import EXIT_NO, print_problems
from policycore.model import Resource, ValidationFailed, load_resources

FilesOption = Annotated[
    list[str],
    typer.Option(
        "-f", "--filename", help="A manifest file, a directory of them, or '-' for stdin (repeatable)."
    ),
]
RecursiveOption = Annotated[bool, typer.Option("-R", "--recursive", help="Read directories recursively.")]
PortOption = Annotated[int, typer.Option("--port", min=1, max=65535, help="Destination port.")]
ProtocolOption = Annotated[str, typer.Option("--protocol", help="TCP, UDP or SCTP.")]
NodesOption = Annotated[
    int,
    typer.Option("--nodes", min=1, help="Nodes to spread unscheduled pods over (when no Node resources)."),
]


def stdin_text(paths: Sequence[str]) -> str | None:
    """The whole of stdin when ``-`` is among ``paths`` (read once), else None."""
    return sys.stdin.read() if "-" in paths else None


def load(paths: Sequence[str], *, recursive: bool = False) -> list[Resource]:
    """Every resource in ``paths``; raises `ValidationFailed` with every problem found."""
    return load_resources(paths, stdin_text=stdin_text(paths), recursive=recursive)


def check_protocol(value: str) -> str:
    """``--protocol`` in upper case, or a usage error (exit 2)."""
    upper = value.upper()
    if upper not in PORT_PROTOCOLS:
        raise typer.BadParameter(
            f"{value!r} is not one of {', '.join(PORT_PROTOCOLS)}", param_hint="--protocol"
        )
    return upper


def load_cluster(
    paths: Sequence[str], *, recursive: bool = False, nodes: int = DEFAULT_NODES
) -> OfflineCluster:
    """The offline cluster of the manifests, or print every problem and exit 1."""
    try:
        return OfflineCluster(load(paths, recursive=recursive), nodes=nodes)
    except ValidationFailed as err:
        print_problems(err.problems)
        raise typer.Exit(EXIT_NO) from None
