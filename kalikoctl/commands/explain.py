"""``kalikoctl explain --from NS/POD --to NS/POD --port N -f PATH...``: why a connection is (not) allowed.

Owns turning an `Explanation` (the evaluator's trace over the compiled, programmed rules) into
the egress side and the ingress side: every tier and policy consulted, and what decided — a rule
(policy name, kind, tier, rule index), a tier's default, the profile (no policy applies), a
missing profile (the pod's Namespace does not exist: deny) or a fail-closed condition. ``-o json``
prints::

    {"from", "to", "port", "protocol", "allowed", "reason",
     "egress": SIDE | null, "ingress": SIDE | null}      # null: a pod to itself
    SIDE = {"endpoint", "node", "allowed",
            "decision": {"by": "rule" | "tier-default" | "profile" | "missing-profile" | "fail-closed",
                         "tier", "policy", "profile", "policy_kind", "direction", "rule_index",
                         "rule_id", "action", "why"},
            "tiers": [{"tier", "default": null | "deny" | "pass",
                       "policies": [{"policy", "policy_kind", "outcome", "rule_index", "logged"}]}]}

Without ``-f`` the question goes to the leading controller (``--server``), which answers on its
live compiled state with the same document (`kalikoctl.live`; both are built by
`policycore.reports`). Exit 0 whenever the question could be answered (allowed or not), 1 for
invalid manifests, 2 for an unknown pod. It does not own evaluation (`policycore.evaluate`),
compilation or the JSON builders (`policycore.reports`).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kalikoctl.live import live_explain
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
from kalikoctl.output import EXIT_ERROR, Format, console, escape, fail, print_json
from policycore.reports import explanation_json


def describe_decision(found: dict[str, Any]) -> str:
    by = found["by"]
    if by == "profile":
        return "the profile (no policy applies in this direction)"
    if by == "missing-profile":
        return f"the missing profile {found['profile']} (the pod's Namespace does not exist: deny)"
    if by == "tier-default":
        return f"the end of tier {found['tier']} (no policy in it decided)"
    if by == "fail-closed":
        return f"failing closed ({found['why']})"
    return (
        f"rule {found['direction']}[{found['rule_index']}] of {found['policy_kind']} {found['policy']} "
        f"(tier {found['tier']})"
    )


def print_side(direction: str, found: dict[str, Any] | None) -> None:
    out = console()
    if found is None:
        out.print(f"{direction}: not checked (a pod can always reach itself)")
        return
    verdict = "[green]allowed[/green]" if found["allowed"] else "[red]denied[/red]"
    where = f"{direction} at {found['endpoint']} (node {found['node']})"
    out.print(f"{where}: {verdict} by {escape(describe_decision(found['decision']))}")
    for tier in found["tiers"]:
        out.print(f"  tier {tier['tier']}")
        for policy in tier["policies"]:
            outcome = policy["outcome"]
            if policy["rule_index"] is not None:
                outcome = f"rule {policy['rule_index']} matched: {outcome}"
            elif outcome == "no-match":
                outcome = "no rule matched"
            logged = f" (logged by rules {', '.join(policy['logged'])})" if policy["logged"] else ""
            out.print(f"    {policy['policy_kind']} {policy['policy']}: {escape(outcome)}{logged}")
        if tier["default"] is not None:
            out.print(f"    end of tier: {tier['default']}")


def explain(
    from_: Annotated[str, typer.Option("--from", help="The client pod, NAMESPACE/NAME.")],
    to: Annotated[str, typer.Option("--to", help="The server pod, NAMESPACE/NAME.")],
    port: PortOption,
    filename: OptionalFilesOption = None,
    protocol: ProtocolOption = "TCP",
    output: Annotated[Format, typer.Option("-o", "--output", help="text or json")] = Format.text,
    recursive: RecursiveOption = False,
    nodes: NodesOption = DEFAULT_NODES,
    server: ServerOption = DEFAULT,
) -> None:
    """Explain one connection: the egress side, the ingress side, and the rule that decided each."""
    protocol = check_protocol(protocol)
    if not filename:
        live_explain(server, from_, to, port, protocol, as_json=output is Format.json)
        return
    cluster = load_cluster(filename, recursive=recursive, nodes=nodes)
    try:
        explanation = cluster.connection(from_, to, port, protocol)
    except KeyError as err:
        fail(str(err.args[0]), EXIT_ERROR)
    found = explanation_json(explanation, protocol)
    if output is Format.json:
        print_json(found)
        return
    verdict = "[green]ALLOWED[/green]" if found["allowed"] else "[red]DENIED[/red]"
    console().print(f"{from_} -> {to} {protocol}/{port}: {verdict} ({found['reason']})")
    print_side("egress", found["egress"])
    print_side("ingress", found["ingress"])


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)
