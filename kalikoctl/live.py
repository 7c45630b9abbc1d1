"""``reach`` and ``explain`` against the live cluster: the controller's compiled state, not manifests.

Owns the online half of those two commands (used when they are given no ``-f``): one admin call
(`Reach` / `Explain`), whose JSON has exactly the offline shape (both are built by
`policycore.reports`), printed as JSON or rendered by the offline commands' own renderers
(`commands.reach.truth_table`, `commands.explain.print_side`), so online and offline output
cannot drift apart. It does not own evaluation (the server's) or the command definitions.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from kalikoctl.client import ServerError
from kalikoctl.online import connect, fail_server
from kalikoctl.output import EXIT_ERROR, console, print_json
from wire.gen.kaliko.v1 import admin_pb2 as pb


def live_reach(server: str, port: int, protocol: str, *, as_json: bool) -> None:
    """The connectivity matrix of every programmed pod, from the leading controller."""
    from kalikoctl.commands.reach import truth_table  # at call time: that module imports this one

    with connect(server) as client:
        reply = client.call("Reach", pb.ReachRequest(port=port, protocol=protocol))
    found: dict[str, Any] = json.loads(reply.json)
    if as_json:
        print_json(found)
        return
    console().print(truth_table(f"{protocol}/{port}  (. allowed, X denied; live)", found["allowed"]))


def live_explain(server: str, src: str, dst: str, port: int, protocol: str, *, as_json: bool) -> None:
    """Why ``src`` may (not) open a connection to ``dst``, judged on the live compiled rules."""
    from kalikoctl.commands.explain import print_side  # at call time: that module imports this one

    request = pb.ExplainRequest(from_pod=src, to_pod=dst, port=port, protocol=protocol)
    with connect(server) as client:
        try:
            reply = client.call("Explain", request)
        except ServerError as err:
            if err.code is grpc.StatusCode.NOT_FOUND:
                fail_server(err, exit_code=EXIT_ERROR)  # an unknown pod, as offline: exit 2
            raise
    found: dict[str, Any] = json.loads(reply.json)
    if as_json:
        print_json(found)
        return
    verdict = "[green]ALLOWED[/green]" if found["allowed"] else "[red]DENIED[/red]"
    console().print(f"{src} -> {dst} {protocol}/{port}: {verdict} ({found['reason']}; live)")
    print_side("egress", found["egress"])
    print_side("ingress", found["ingress"])
