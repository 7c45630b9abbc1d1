"""``kalikoctl explain --from NS/POD --to NS/POD --port N -f PATH...``: why a connection is (not) allowed.

Owns turning an `Explanation` (the evaluator's trace over the compiled, programmed rules) into
the egress side and the ingress side: every tier and policy consulted, and what decided — a rule
(policy name, kind, tier, rule index), a tier's default, the profile (no policy applies) or a
fail-closed condition. ``-o json`` prints::

    {"from", "to", "port", "protocol", "allowed", "reason",
     "egress": SIDE | null, "ingress": SIDE | null}      # null: a pod to itself
    SIDE = {"endpoint", "node", "allowed",
            "decision": {"by": "rule" | "tier-default" | "profile" | "fail-closed", "tier", "policy",
                         "policy_kind", "direction", "rule_index", "rule_id", "action", "why"},
            "tiers": [{"tier", "default": null | "deny" | "pass",
                       "policies": [{"policy", "policy_kind", "outcome", "rule_index", "logged"}]}]}

Exit 0 whenever the question could be answered (allowed or not), 1 for invalid manifests, 2 for
an unknown pod. It does not own evaluation (`policycore.evaluate`) or compilation.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kalikoctl.offline import DEFAULT_NODES
from kalikoctl.options import (
    FilesOption,
    NodesOption,
    PortOption,
    ProtocolOption,
    RecursiveOption,
    check_protocol,
    load_cluster,
)
from kalikoctl.output import EXIT_ERROR, Format, console, escape, fail, print_json
from policycore.calc.normalize import parse_rule_id
from policycore.evaluate import Explanation, Verdict


def policy_parts(policy_id: str) -> dict[str, str]:
    """``<tier>/<kind>/<namespace>/<name>`` → tier, kind and display name (``ns/name`` or ``name``)."""
    tier, kind, namespace, name = policy_id.split("/", 3)
    return {"tier": tier, "policy_kind": kind, "policy": f"{namespace}/{name}" if namespace else name}


def rule_index(rule_id: str) -> str:
    ref = parse_rule_id(rule_id)
    return str(ref.index) if ref.sub is None else f"{ref.index}.{ref.sub}"


def decision(verdict: Verdict) -> dict[str, Any]:
    by = verdict.decided_by
    if by == "profile":
        return {"by": "profile"}
    if by.startswith("tier-default:"):
        return {"by": "tier-default", "tier": by.removeprefix("tier-default:")}
    if by.startswith("fail-closed:"):
        return {"by": "fail-closed", "why": by.removeprefix("fail-closed:")}
    ref = parse_rule_id(by)
    action = "allow" if verdict.allowed else "deny"
    return {
        "by": "rule",
        **policy_parts(ref.policy_id),
        "direction": ref.direction,
        "rule_index": rule_index(by),
        "rule_id": by,
        "action": action,
    }


def tiers(verdict: Verdict) -> list[dict[str, Any]]:
    """The trace grouped by tier, then policy, in evaluation order."""
    out: list[dict[str, Any]] = []
    policies: dict[str, dict[str, Any]] = {}
    for step in verdict.trace:
        if not step.tier:
            continue
        if not out or out[-1]["tier"] != step.tier:
            out.append({"tier": step.tier, "default": None, "policies": []})
            policies = {}
        if step.policy is None:
            out[-1]["default"] = step.outcome.removeprefix("tier-default:")
            continue
        entry = policies.get(step.policy)
        if entry is None:
            parts = policy_parts(step.policy)
            entry = {"policy": parts["policy"], "policy_kind": parts["policy_kind"], "outcome": None}
            entry |= {"rule_index": None, "logged": []}
            policies[step.policy] = entry
            out[-1]["policies"].append(entry)
        if step.outcome == "log" and step.rule_id:
            entry["logged"].append(rule_index(step.rule_id))
        else:
            entry["outcome"] = step.outcome
            entry["rule_index"] = rule_index(step.rule_id) if step.rule_id else None
    return out


def side(verdict: Verdict | None, node: str | None) -> dict[str, Any] | None:
    if verdict is None:
        return None
    return {
        "endpoint": verdict.endpoint,
        "node": node,
        "allowed": verdict.allowed,
        "decision": decision(verdict),
        "tiers": tiers(verdict),
    }


def explanation_json(explanation: Explanation, protocol: str) -> dict[str, Any]:
    return {
        "from": explanation.src.key,
        "to": explanation.dst.key,
        "port": explanation.dst_port,
        "protocol": protocol,
        "allowed": explanation.allowed,
        "reason": explanation.reason,
        "egress": side(explanation.egress, explanation.src.node),
        "ingress": side(explanation.ingress, explanation.dst.node),
    }


def describe_decision(found: dict[str, Any]) -> str:
    by = found["by"]
    if by == "profile":
        return "the profile (no policy applies in this direction)"
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
    filename: FilesOption,
    from_: Annotated[str, typer.Option("--from", help="The client pod, NAMESPACE/NAME.")],
    to: Annotated[str, typer.Option("--to", help="The server pod, NAMESPACE/NAME.")],
    port: PortOption,
    protocol: ProtocolOption = "TCP",
    output: Annotated[Format, typer.Option("-o", "--output", help="text or json")] = Format.text,
    recursive: RecursiveOption = False,
    nodes: NodesOption = DEFAULT_NODES,
) -> None:
    """Explain one connection: the egress side, the ingress side, and the rule that decided each."""
    protocol = check_protocol(protocol)
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
