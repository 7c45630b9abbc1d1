"""Reports on compiled state: the JSON documents ``reach`` and ``explain`` print, offline or live.

Owns the shapes of those two documents and the pure functions that build them from programmed
`NodeState`\\ s (`policycore.evaluate`'s verdicts and traces), so the offline CLI (manifests compiled
in memory) and the controller's admin API (the live graph) print byte-identical answers. It does
not own evaluation (`policycore.evaluate`), compilation (`policycore.calc`) or printing.

``reach``::

    {"port", "protocol", "pods": ["ns/name", ...], "allowed": {src: {dst: bool}}}   # no self pairs

``explain``::

    {"from", "to", "port", "protocol", "allowed", "reason",
     "egress": SIDE | null, "ingress": SIDE | null}      # null: a pod to itself
    SIDE = {"endpoint", "node", "allowed",
            "decision": {"by": "rule" | "tier-default" | "profile" | "missing-profile" | "fail-closed",
                         "tier", "policy", "profile",
                         "policy_kind", "direction", "rule_index", "rule_id", "action", "why"},
            "tiers": [{"tier", "default": null | "deny" | "pass",
                       "policies": [{"policy", "policy_kind", "outcome", "rule_index", "logged"}]}]}

``missing-profile`` names the ``kns.<ns>`` profile of a pod whose Namespace does not exist (it
denies, as Calico's stand-in for a missing profile; its tier is listed under ``tiers``).

Invariants: pods are listed in endpoint-key order; a pod is named by its endpoint key
(``namespace/name``) and judged at its first IP.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policycore.calc.endpoints import missing_profile
from policycore.calc.normalize import parse_rule_id
from policycore.evaluate import Explanation, Peer, Verdict, connection_allowed
from policycore.ir import NodeState


def endpoint_peers(states: Mapping[str, NodeState]) -> dict[str, Peer]:
    """Every programmed workload endpoint as a `Peer` (its first IP, its node), by endpoint key."""
    peers = {
        key: Peer(endpoint.ips[0], key, node)
        for node, state in states.items()
        for key, endpoint in state.endpoints.items()
        if endpoint.ips
    }
    return dict(sorted(peers.items()))


def reach_matrix(
    states: Mapping[str, NodeState], peers: Mapping[str, Peer], protocol: int, port: int
) -> dict[str, dict[str, bool]]:
    """``{src: {dst: allowed}}`` over every ordered pair of distinct peers, in the peers' order."""
    return {
        src: {
            dst: connection_allowed(states, peers[src], peers[dst], protocol, port).allowed
            for dst in peers
            if dst != src
        }
        for src in peers
    }


def reach_json(port: int, protocol: str, allowed: Mapping[str, Mapping[str, bool]]) -> dict[str, Any]:
    """The ``reach -o json`` document for a matrix from `reach_matrix`."""
    return {
        "port": port,
        "protocol": protocol,
        "pods": list(allowed),
        "allowed": {src: dict(row) for src, row in allowed.items()},
    }


def policy_parts(policy_id: str) -> dict[str, str]:
    """``<tier>/<kind>/<namespace>/<name>`` → tier, kind and display name (``ns/name`` or ``name``)."""
    tier, kind, namespace, name = policy_id.split("/", 3)
    return {"tier": tier, "policy_kind": kind, "policy": f"{namespace}/{name}" if namespace else name}


def rule_index(rule_id: str) -> str:
    """A rule id's index within its policy direction (``2``, or ``2.1`` for a split rule)."""
    ref = parse_rule_id(rule_id)
    return str(ref.index) if ref.sub is None else f"{ref.index}.{ref.sub}"


def decision(verdict: Verdict) -> dict[str, Any]:
    """What decided one side: a rule, a tier's default, the profile or failing closed."""
    by = verdict.decided_by
    if by == "profile":
        return {"by": "profile"}
    if by.startswith("tier-default:"):
        tier = by.removeprefix("tier-default:")
        profile = missing_profile(tier)
        if profile is not None:
            return {"by": "missing-profile", "profile": profile}
        return {"by": "tier-default", "tier": tier}
    if by.startswith("fail-closed:"):
        return {"by": "fail-closed", "why": by.removeprefix("fail-closed:")}
    ref = parse_rule_id(by)
    return {
        "by": "rule",
        **policy_parts(ref.policy_id),
        "direction": ref.direction,
        "rule_index": rule_index(by),
        "rule_id": by,
        "action": "allow" if verdict.allowed else "deny",
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
    """One direction's SIDE document, or None when that side was not checked."""
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
    """The ``explain -o json`` document."""
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
