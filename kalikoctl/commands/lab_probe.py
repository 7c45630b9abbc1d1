"""``kalikoctl lab probe [--port N] [--protocol TCP|UDP] [-o json|table]``: real connections, every pair.

Owns the command that asks a running lab with a pod network (``lab up --dataplane nftables``)
which pods really reach which: one connection attempt per ordered pair of distinct pods, each
from inside the source pod's namespace to the target pod's address, all in parallel with a short
timeout (`lab.live_probe`). ``-o json`` prints exactly the document ``kalikoctl reach -o json``
prints (``{"port", "protocol", "pods", "allowed": {src: {dst: bool}}}``), so a live lab and the
offline compiler can be compared with ``diff``; ``-o table`` (the default) prints the same truth
table as ``reach``, then how long the probes took. SCTP is refused with a clear message when the
kernel has no SCTP (this one has none). Exit 0 when the probes ran, 1 when no such lab runs, 2
when the probes could not run.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from kalikoctl.commands.lab import lab_app
from kalikoctl.commands.reach import truth_table
from kalikoctl.options import PortOption, ProtocolOption, check_protocol
from kalikoctl.output import EXIT_ERROR, EXIT_NO, MatrixFormat, console, fail, print_json
from lab.apps.probe_matrix import ProbeRunError
from lab.cluster import RUN_DIR, LabError, LabState
from lab.cni import CniError
from lab.live_probe import PROBE_TIMEOUT, PROBED_PROTOCOLS, probe_all, sctp_available
from lab.nft_launchers import cni_client


def lab_probe(
    port: PortOption = 80,
    protocol: ProtocolOption = "TCP",
    output: Annotated[
        MatrixFormat, typer.Option("-o", "--output", help="table or json")
    ] = MatrixFormat.table,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.05, help="Seconds each connection attempt may take.")
    ] = PROBE_TIMEOUT,
    run_dir: Annotated[str, typer.Option("--run-dir", help="The lab's state directory.")] = str(RUN_DIR),
) -> None:
    """Probe every ordered pair of the lab's pods for real (same JSON as `kalikoctl reach`)."""
    protocol = check_protocol(protocol)
    if protocol not in PROBED_PROTOCOLS:
        reason = "not available in this kernel" if not sctp_available() else "not probed by the lab"
        fail(f"--protocol {protocol}: SCTP is {reason}; the lab probes TCP and UDP", EXIT_ERROR)
    try:
        state = LabState.load(run_dir)
    except LabError as err:
        fail(f"lab probe: {err}", EXIT_NO)
    cni = None if state is None else cni_client(state)
    if cni is None:
        fail("lab probe: no lab with a pod network runs (kalikoctl lab up --dataplane nftables)", EXIT_NO)
    try:
        matrix, seconds = asyncio.run(probe_all(cni.lab(), port, protocol, timeout))
    except (CniError, ProbeRunError) as err:
        fail(f"lab probe: {err}", EXIT_ERROR)
    if output is MatrixFormat.json:
        print_json(matrix)
        return
    out = console()
    out.print(truth_table(f"{protocol}/{port}  (. allowed, X denied; real connections)", matrix["allowed"]))
    pairs = sum(len(row) for row in matrix["allowed"].values())
    out.print(f"{pairs} pair(s) probed in {seconds:.2f}s")


def register(_: typer.Typer) -> None:
    lab_app.command("probe")(lab_probe)
