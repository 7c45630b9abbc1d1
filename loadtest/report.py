"""The run report: the JSON document tooling reads, its schema, and the targets it is judged by.

Owns `build_report` (a finished `Run` → a plain dict), `ReportSchema` (pydantic: the field names
tooling relies on must be present with the right types; extra fields are allowed) and the target
table (G1-G9 of docs/performance goals), evaluated honestly: a target is ``ok`` only when measured
at the scale it names (``at_scale``) — otherwise it is reported with ``at_scale: false``. It does
not write files (`loadtest.outputs`) or compute convergence (`loadtest.ledger`).

Required shape (names kept for tooling)::

    {"scenario", "params": {"nodes", "pods", "policies", "namespaces", "rate", "duration",
     "backend", "seed"}, "changes", "convergence_ms": {"p50", "p90", "p99", "max"},
     "pooled_ms": {...}, "bytes_per_affected_node": {"p50", "p99", "max"},
     "bytes_to_unaffected_nodes", "kafka_hop_ms": {"p50", "p99"},
     "controller": {"cpu_s", "rss_mb"}, "agents": {"cpu_s", "rss_mb"}, "lost", "mismatched_nodes"}
"""

from __future__ import annotations

import os
import platform
import sys
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from loadtest.stats import summary

if TYPE_CHECKING:
    from loadtest.runner import Run


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Params(_Open):
    nodes: int
    pods: int
    policies: int
    namespaces: int
    rate: float
    duration: float
    backend: str
    seed: int


class Percentiles(_Open):
    p50: float
    p90: float
    p99: float
    max: float


class BytePercentiles(_Open):
    p50: float
    p99: float
    max: float


class HopPercentiles(_Open):
    p50: float
    p99: float


class Usage(_Open):
    cpu_s: float
    rss_mb: float


class ReportSchema(_Open):
    scenario: str
    params: Params
    changes: int
    convergence_ms: Percentiles
    pooled_ms: Percentiles
    bytes_per_affected_node: BytePercentiles
    bytes_to_unaffected_nodes: int
    kafka_hop_ms: HopPercentiles
    controller: Usage
    agents: Usage
    lost: int
    mismatched_nodes: int


def _target(
    tid: str, metric: str, value: float, limit: float, at_scale: bool, *, lower: bool = True
) -> dict[str, Any]:
    ok = value <= limit if lower else value >= limit
    return {
        "id": tid,
        "metric": metric,
        "value": round(value, 3),
        "limit": limit,
        "ok": ok,
        "at_scale": at_scale,
    }


def build_report(run: Run) -> dict[str, Any]:
    p, ledger, state = run.params, run.ledger, run.state
    excluded = frozenset(run.scenario.slow_nodes())
    resolved = [c for c in ledger.changes if c.converged is not None]
    latencies = [run.latency(c) for c in resolved]
    pooled = [
        max(0.0, (t - c.accepted) * 1000) for c in resolved for n, t in c.applied.items() if n not in excluded
    ]
    node_bytes = [b for c in resolved for n, b in ledger.bytes_of(c).items() if n not in excluded]
    if not run.scenario.churn:
        latencies = [state.warmup_ms] if state.warmup_ms is not None else []
        pooled = list(state.warmup_node_ms)
    window = _measured_window(run)
    hops = [ms for t, ms in ledger.hops if window[0] <= t <= window[1]]
    controller = run.sampler.window("controller", *window)
    agents = run.sampler.window("agents", *window)
    whole = (state.phases["preload"].started if "preload" in state.phases else 0.0, time.time())
    controller["rss_mb"] = run.sampler.window("controller", *whole)["rss_mb"]
    agents["rss_mb"] = run.sampler.window("agents", *whole)["rss_mb"]
    changes = len(ledger.changes) if run.scenario.churn else 1
    report: dict[str, Any] = {
        "scenario": p.scenario,
        "params": {
            "nodes": p.nodes,
            "pods": p.pods,
            "policies": p.policies,
            "namespaces": p.namespaces,
            "rate": p.effective_rate if run.scenario.churn else 0.0,
            "duration": p.duration,
            "backend": p.backend,
            "seed": p.seed,
            "spawn_rate": p.spawn_rate,
            "slow_nodes": run.scenario.slow_nodes(),
        },
        "changes": changes,
        "convergence_ms": summary(latencies, (50, 90, 95, 99)),
        "pooled_ms": summary(pooled, (50, 90, 95, 99)),
        "bytes_per_affected_node": summary(node_bytes, (50, 99)),
        "bytes_to_unaffected_nodes": ledger.unaffected_bytes,
        "messages_to_unaffected_nodes": ledger.unaffected_messages,
        "kafka_hop_ms": summary(hops, (50, 99, 99.9)),
        "controller": controller,
        "agents": agents,
        "lost": len(state.lost) + (0 if state.warmup_ms is not None else 1),
        "lost_examples": [
            {"task": c.task, "revision": c.revision, "nodes": list(c.lost_nodes[:5])} for c in state.lost[:5]
        ],
        "mismatched_nodes": len(state.mismatched),
        "mismatched_examples": sorted(state.mismatched)[:10],
        "failures": len(ledger.failures),
        "unchanged": run.book.total.unchanged,
        "snapshots": ledger.snapshots,
        "early_samples": ledger.early,
        "by_task": _by_task(run, excluded),
        "by_fanout": _by_fanout(run, resolved),
        "warmup": {
            "ms": round(state.warmup_ms, 3) if state.warmup_ms is not None else None,
            "mode": "cold start"
            if state.warmup_origin == state.controller_started
            else "agents joining a live load",
            "load_s": round(_phase(run, "preload")[1] - _phase(run, "preload")[0], 1),
            "node_ms": summary(state.warmup_node_ms, (50, 90, 99)),
            "controller": run.sampler.window("controller", *_phase(run, "warm-up")),
            "controller_in_sync_ms": _since(
                ledger.milestones.get("controller_in_sync"), state.controller_started
            ),
        },
        "loop_lag_ms": {
            role: summary((ms for t, ms in rows if window[0] <= t <= window[1]), (50, 99))
            for role, rows in sorted(ledger.lags.items())
        },
        "warmup_loop_lag_ms": {
            role: summary((ms for t, ms in rows if t <= window[0] or not run.scenario.churn), (50, 99))
            for role, rows in sorted(ledger.lags.items())
        },
        "restarts": summary([r.ms for r in ledger.restarts], (50, 90, 99)),
        "in_flight": _in_flight(run),
        "achieved_rate": round(changes / p.duration, 2) if run.scenario.churn else 0.0,
        "controller_cpu_ms_per_change": round(controller["cpu_s"] * 1000 / changes, 3) if changes else 0.0,
        "machine": {
            "cpus": os.cpu_count(),
            "busy_pct": run.sampler.machine_busy(*window),
            "loadavg": list(os.getloadavg()),
            "python": platform.python_version(),
        },
        "phases": {name: {"start": ph.started, "end": ph.ended} for name, ph in state.phases.items()},
        "problems": list(state.problems),
        "command": _command(),
    }
    if excluded:
        report["slow_agent"] = _slow(run, resolved, excluded)
    report["targets"] = targets(report)
    return report


def _command() -> str:
    """The command line as typed: ``python -m loadtest ...``, not the path of ``__main__.py``."""
    program = "python -m loadtest" if sys.argv[0].endswith(("loadtest/__main__.py", "-m")) else sys.argv[0]
    return " ".join([program, *sys.argv[1:]])


def _since(t: float | None, origin: float) -> float | None:
    return round((t - origin) * 1000, 1) if t is not None else None


def _phase(run: Run, name: str) -> tuple[float, float]:
    phase = run.state.phases.get(name)
    if phase is None:
        return (0.0, 0.0)
    return (phase.started, phase.ended or time.time())


def _measured_window(run: Run) -> tuple[float, float]:
    if run.scenario.churn and "churn" in run.state.phases:
        start = run.state.phases["churn"].started
        end = _phase(run, "drain")[1] if "drain" in run.state.phases else _phase(run, "churn")[1]
        return (start, end)
    return _phase(run, "warm-up")


def _by_task(run: Run, excluded: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for (category, name), entry in sorted(run.book.entries.items()):
        records = [c for c in run.ledger.changes if c.task == name and c.converged is not None]
        node_bytes = [b for c in records for n, b in run.ledger.bytes_of(c).items() if n not in excluded]
        out[name] = {
            "category": category,
            "changes": entry.changes,
            "failures": entry.failures,
            "unchanged": entry.unchanged,
            "convergence_ms": summary((run.latency(c) for c in records), (50, 90, 99)),
            "affected_nodes": summary((len(c.applied) for c in records), (50, 99)),
            "bytes_per_affected_node": summary(node_bytes, (50, 99)),
        }
    return out


FANOUT_BUCKETS = ((0, 0), (1, 10), (11, 100), (101, 1000), (1001, 10**9))


def _by_fanout(run: Run, resolved: list[Any]) -> dict[str, Any]:
    """Convergence by how many nodes a change reached: a fleet-wide change waits for every agent."""
    out: dict[str, Any] = {}
    for low, high in FANOUT_BUCKETS:
        inside = [c for c in resolved if low <= len(c.applied) <= high]
        if inside:
            out[f"{low}-{high}" if high < 10**9 else f">{low - 1}"] = summary(
                (run.latency(c) for c in inside), (50, 99)
            )
    return out


def _in_flight(run: Run) -> dict[str, Any]:
    """Changes waiting for convergence during the churn: a growing backlog has a positive slope."""
    start, end = _phase(run, "churn")
    rows = [(t, n) for t, n in run.state.in_flight if start <= t <= end]
    if len(rows) < 2:
        return {
            "max": max((n for _, n in rows), default=0),
            "end": rows[-1][1] if rows else 0,
            "slope_per_s": 0.0,
        }
    mean_t = sum(t for t, _ in rows) / len(rows)
    mean_n = sum(n for _, n in rows) / len(rows)
    var = sum((t - mean_t) ** 2 for t, _ in rows)
    slope = sum((t - mean_t) * (n - mean_n) for t, n in rows) / var if var else 0.0
    return {
        "max": max(n for _, n in rows),
        "end": rows[-1][1],
        "mean": round(mean_n, 1),
        "slope_per_s": round(slope, 3),
    }


def _slow(run: Run, resolved: list[Any], excluded: frozenset[str]) -> dict[str, Any]:
    """The slow node: how far behind it ran, how often it resynced (and why), whether it converged."""
    node = sorted(excluded)[0]
    with_slow = [c.latency_ms(frozenset(), run.ledger.flush_time.get(c.flush or 0, 0.0)) for c in resolved]
    lag = [max(0.0, (c.applied[node] - c.accepted) * 1000) for c in resolved if node in c.applied]
    causes = dict(sorted(run.ledger.snapshot_causes.get(node, {}).items()))
    return {
        "node": node,
        "seconds_per_message": run.scenario.slow_nodes()[node],
        "convergence_ms_including_slow": summary(with_slow, (50, 90, 99)),
        "slow_node_ms": summary(lag, (50, 90, 99)),
        "snapshots": sum(causes.values()),
        "snapshot_causes": causes,
        "cutoffs": causes.get("cut-off", 0) + causes.get("overflow", 0),
        "converged": node not in run.state.mismatched
        and not any(node in c.lost_nodes for c in run.state.lost),
    }


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals this scenario can speak to, each with its measured value."""
    p, scenario = report["params"], report["scenario"]
    services = p["backend"] == "services"
    out = [
        _target("all", "lost", report["lost"], 0, True),
        _target("all", "mismatched_nodes", report["mismatched_nodes"], 0, True),
    ]
    g1_scale = services and p["nodes"] >= 1000 and p["pods"] >= 50_000 and p["policies"] >= 2000
    if scenario in ("policy-churn", "slow-agent", "agent-restart"):
        conv = report["convergence_ms"]
        at = g1_scale and p["rate"] >= 10 and p["duration"] >= 300 and scenario == "policy-churn"
        out += [
            _target("G1", "convergence_ms.p50", conv["p50"], 100, at),
            _target("G1", "convergence_ms.p99", conv["p99"], 500, at),
            _target("G1", "convergence_ms.max", conv["max"], 2000, at),
        ]
        edit = report["by_task"].get("edit_policy", {}).get("bytes_per_affected_node", {"max": 0.0})
        out.append(_target("G3", "by_task.edit_policy.bytes_per_affected_node.max", edit["max"], 2048, True))
        out.append(_target("G7", "kafka_hop_ms.p99", report["kafka_hop_ms"]["p99"], 20, g1_scale))
    if scenario == "pod-churn":
        at = services and p["nodes"] >= 1000 and p["rate"] >= 100 and p["duration"] >= 300
        out.append(_target("G2", "convergence_ms.p99", report["convergence_ms"]["p99"], 1000, at))
        slope = report.get("in_flight", {}).get("slope_per_s", 0.0)
        out.append(_target("G2", "in_flight.slope_per_s (no growing backlog)", slope, 0.5, at))
        for task in ("create_pod", "delete_pod"):
            entry = report["by_task"].get(task, {}).get("bytes_per_affected_node", {"max": 0.0})
            out.append(_target("G3", f"by_task.{task}.bytes_per_affected_node.max", entry["max"], 256, True))
        out.append(_target("G3", "bytes_to_unaffected_nodes", report["bytes_to_unaffected_nodes"], 0, True))
    if scenario == "cold-start":
        at = services and p["nodes"] >= 1000 and p["pods"] >= 100_000 and p["policies"] >= 10_000
        out.append(_target("G5", "warmup.ms", report["warmup"]["ms"] or 0.0, 60_000, at))
        out.append(_target("G5", "controller.rss_mb", report["controller"]["rss_mb"], 2048, at))
    if scenario == "agent-restart":
        out.append(_target("G6", "restarts.max", report["restarts"]["max"], 2000, g1_scale))
    if scenario == "slow-agent":
        out.append(
            _target("G6", "convergence_ms.p99 (others)", report["convergence_ms"]["p99"], 500, g1_scale)
        )
        slow = report["slow_agent"]
        out.append(_target("G6", "slow_agent.cutoffs (it resyncs)", slow["cutoffs"], 1, True, lower=False))
        out.append(_target("G6", "slow_agent.converged", float(slow["converged"]), 1, True, lower=False))
    if services and p["nodes"] >= 1000:
        out.append(_target("G9", "agents.rss_mb", report["agents"]["rss_mb"], 8192, True))
    return out
