"""The HTML report: one self-contained page with the key figures, the targets and three plots.

Owns rendering with matplotlib (Agg backend, PNGs embedded as base64, so the file travels alone):
a histogram of per-change convergence (and the pooled per-node samples), convergence p50/p99 per
5-second window with the in-flight backlog, and CPU (% of one core) and RSS over time per role.
It reads a finished `Run` and its report dict; it computes no figure the JSON does not have,
except the per-window series drawn.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from loadtest.stats import Windows

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from loadtest.runner import Run


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _histogram(run: Run) -> str:
    per_change = [run.latency(c) for c in run.ledger.changes if c.converged is not None]
    pooled = [
        (t - c.accepted) * 1000
        for c in run.ledger.changes
        if c.converged is not None
        for t in c.applied.values()
    ]
    if not run.scenario.churn:
        per_change = [run.state.warmup_ms or 0.0]
        pooled = run.state.warmup_node_ms
    figure, axis = plt.subplots(figsize=(8, 3.5))
    bins = 60
    if pooled:
        axis.hist(pooled, bins=bins, alpha=0.5, label=f"pooled per node (n={len(pooled)})")
    if per_change:
        axis.hist(per_change, bins=bins, alpha=0.7, label=f"per change, last node (n={len(per_change)})")
    axis.set_xlabel("convergence (ms): API accepted → applied")
    axis.set_ylabel("count")
    axis.set_yscale("log")
    axis.legend()
    return _png(figure)


def _over_time(run: Run) -> str:
    origin = (
        run.state.phases["churn"].started if "churn" in run.state.phases else run.state.controller_started
    )
    windows = Windows(origin, 5.0)
    for c in run.ledger.changes:
        if c.converged is not None:
            windows.add(c.accepted, run.latency(c))
    series = windows.series((50, 99))
    figure, axis = plt.subplots(figsize=(8, 3.5))
    if series:
        xs = [x for x, _ in series]
        axis.plot(xs, [v["p50"] for _, v in series], label="p50")
        axis.plot(xs, [v["p99"] for _, v in series], label="p99")
    axis.set_xlabel("seconds since churn started (5 s windows, by acceptance time)")
    axis.set_ylabel("convergence (ms)")
    other = axis.twinx()
    rows = run.state.in_flight
    other.plot(
        [t - origin for t, _ in rows], [n for _, n in rows], color="grey", alpha=0.5, label="in flight"
    )
    other.set_ylabel("changes in flight")
    axis.legend(loc="upper left")
    other.legend(loc="upper right")
    return _png(figure)


def _resources(run: Run) -> str:
    figure, (cpu, rss) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    origin = run.state.phases["preload"].started if "preload" in run.state.phases else 0.0
    roles = sorted({s.role for s in run.sampler.samples})
    for role in roles:
        samples = [s for s in run.sampler.samples if s.role == role]
        xs = [s.t - origin for s in samples[1:]]
        pct = [100 * (b.cpu_s - a.cpu_s) / max(1e-6, b.t - a.t) for a, b in itertools.pairwise(samples)]
        cpu.plot(xs, pct, label=role)
        rss.plot([s.t - origin for s in samples], [s.rss_mb for s in samples], label=role)
    cpu.set_ylabel("CPU (% of one core)")
    rss.set_ylabel("RSS (MiB)")
    rss.set_xlabel("seconds since the run started")
    cpu.legend(fontsize="small")
    for name, phase in run.state.phases.items():
        for axis in (cpu, rss):
            axis.axvline(phase.started - origin, color="lightgrey", linewidth=0.8)
        cpu.annotate(name, (phase.started - origin, 0), fontsize="x-small", rotation=90, va="bottom")
    return _png(figure)


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def write_html(run: Run, report: dict[str, Any], path: str) -> None:
    p = report["params"]
    figures = [
        ("Convergence distribution", _histogram(run)),
        ("Convergence over time", _over_time(run)),
        ("CPU and memory", _resources(run)),
    ]
    key = [
        ("scenario", report["scenario"]),
        (
            "scale",
            f"{p['nodes']} nodes, {p['pods']} pods, {p['policies']} policies, {p['namespaces']} namespaces",
        ),
        (
            "rate / duration / backend / seed",
            f"{p['rate']}/s, {p['duration']} s, {p['backend']}, {p['seed']}",
        ),
        ("changes", report["changes"]),
        ("convergence ms (per change)", report["convergence_ms"]),
        ("pooled ms (per change and node)", report["pooled_ms"]),
        ("bytes per affected node", report["bytes_per_affected_node"]),
        ("bytes to unaffected nodes", report["bytes_to_unaffected_nodes"]),
        ("Kafka hop ms", report["kafka_hop_ms"]),
        ("controller", report["controller"]),
        ("agents", report["agents"]),
        ("warm-up ms", report["warmup"]["ms"]),
        ("lost / mismatched nodes", f"{report['lost']} / {report['mismatched_nodes']}"),
        ("machine", report["machine"]),
        ("problems", "; ".join(report["problems"]) or "none"),
    ]
    targets = "".join(
        f"<tr class={'ok' if t['ok'] else 'bad'}><td>{t['id']}</td><td>{html.escape(t['metric'])}</td>"
        f"<td>{t['value']}</td><td>{t['limit']}</td><td>{'yes' if t['ok'] else 'NO'}</td>"
        f"<td>{'yes' if t['at_scale'] else 'no'}</td></tr>"
        for t in report["targets"]
    )
    images = "".join(f'<h2>{title}</h2><img src="data:image/png;base64,{data}">' for title, data in figures)
    title = f"Kaliko bench: {html.escape(report['scenario'])}"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto}}th{{text-align:left;padding-right:1rem}}
td,th{{border-bottom:1px solid #ddd;padding:.2rem .5rem;font-size:.9rem}}table{{border-collapse:collapse}}
tr.ok td:nth-child(5){{color:green}}tr.bad td:nth-child(5){{color:#b00;font-weight:bold}}</style></head><body>
<h1>Kaliko bench — {html.escape(report["scenario"])}</h1>{_table(key)}
<h2>Targets</h2><table><tr><th>goal</th><th>metric</th><th>value</th><th>limit</th><th>met</th>
<th>at the goal's scale</th></tr>{targets}</table>{images}
<p><code>{html.escape(report["command"])}</code></p></body></html>"""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page)
