"""The scaling curve: ``policy-churn`` at several node counts, as a table and a plot under ``docs/``.

Owns running one services-backend ``policy-churn`` per node count (pods scale at 50 per node,
policies and namespaces fixed, as in G1), keeping each JSON report in ``<reports>/nodes-<n>.json``,
and rendering ``docs/scaling.md`` (the table, the exact command, the machine's load) and
``docs/scaling.png`` (convergence p99 and controller CPU per change against nodes). With
``--render-only`` it redraws from reports already there. It does not own a run (`loadtest.cli`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PODS_PER_NODE = 50


def command(nodes: int, duration: int, report: Path, spawn_rate: int, load_rate: int) -> list[str]:
    return [
        sys.executable, "-m", "loadtest", "policy-churn", "--backend", "services", "--nodes", str(nodes),
        "--pods", str(nodes * PODS_PER_NODE), "--policies", "2000", "--namespaces", "100", "--rate", "10",
        "--duration", str(duration), "--spawn-rate", str(spawn_rate), "--load-rate", str(load_rate),
        "--no-live", "--report", str(report),
    ]  # fmt: skip


def render(reports: list[dict[str, Any]], docs: Path) -> None:
    reports = sorted(reports, key=lambda r: (r["params"]["nodes"], r["params"]["pods"]))
    plotted = [r for r in reports if r["changes"] and not r["problems"]]
    nodes = [r["params"]["nodes"] for r in plotted]
    figure, left = plt.subplots(figsize=(7, 4))
    left.plot(nodes, [r["convergence_ms"]["p99"] for r in plotted], "o-", label="convergence p99 (ms)")
    left.plot(nodes, [r["convergence_ms"]["p50"] for r in plotted], "o--", label="convergence p50 (ms)")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("simulated nodes (50 pods per node, 2,000 policies, 10 changes/s)")
    left.set_ylabel("per-change convergence (ms)")
    right = left.twinx()
    right.plot(nodes, [r["controller_cpu_ms_per_change"] for r in plotted], "s-", color="tab:red",
               label="controller CPU per change (ms)")  # fmt: skip
    right.set_ylabel("controller CPU per change (ms)")
    for failed in (r for r in reports if r not in plotted):
        x = failed["params"]["nodes"]
        left.axvline(x, color="grey", linestyle=":")
        left.annotate(
            f"{x}: run failed\n(see table)",
            (x, left.get_ylim()[0]),
            fontsize="x-small",
            ha="right",
            va="bottom",
        )
    left.legend(loc="upper left", fontsize="small")
    right.legend(loc="lower right", fontsize="small")
    figure.savefig(docs / "scaling.png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    header = [
        "nodes", "pods", "changes", "convergence p50 / p90 / p99 / max (ms)", "pooled p99 (ms)",
        "Kafka hop p99 (ms)", "controller CPU per change (ms)", "controller RSS (MiB)", "agents RSS (MiB)",
        "warm-up (s)", "machine busy (%)", "lost / mismatched", "problems",
    ]  # fmt: skip
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in reports:
        c = r["convergence_ms"]
        cells = [
            r["params"]["nodes"], r["params"]["pods"], r["changes"],
            f"{c['p50']:.0f} / {c['p90']:.0f} / {c['p99']:.0f} / {c['max']:.0f}",
            f"{r['pooled_ms']['p99']:.0f}", f"{r['kafka_hop_ms']['p99']:.0f}",
            f"{r['controller_cpu_ms_per_change']:.1f}", f"{r['controller']['rss_mb']:.0f}",
            f"{r['agents']['rss_mb']:.0f}", f"{(r['warmup']['ms'] or 0) / 1000:.1f}",
            f"{r['machine']['busy_pct']:.0f}", f"{r['lost']} / {r['mismatched_nodes']}",
            "; ".join(r["problems"])[:160] or "none",
        ]  # fmt: skip
        rows.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    commands = "\n".join(f"    {_as_typed(r['command'])}" for r in reports)
    (docs / "scaling.md").write_text(SCALING_MD.format(table="\n".join(rows), commands=commands))


def _as_typed(command: str) -> str:
    """Older reports name ``.../loadtest/__main__.py``; show ``python -m loadtest``."""
    program, _, rest = command.partition(" ")
    return f"python -m loadtest {rest}" if program.endswith("loadtest/__main__.py") else command


SCALING_MD = """# Scaling: policy churn against the number of nodes

`policy-churn` on the services backend (real etcd, Kafka, Mosquitto and gRPC admin API; the
controller and two agent worker processes on this 2-core box), 50 pods per node, 2,000 policies,
100 namespaces, 10 policy changes per second for the duration in each command. Convergence is per
change: admin API accepted → last affected node applied (see `docs/bench/README.md`). Controller
CPU per change is the controller process's CPU seconds during the churn and drain, divided by the
changes. "machine busy" is the whole machine's CPU utilisation during the churn: the box is shared
with other work, so every figure here is an upper bound of what the code needs. A point whose run
failed is listed with its problems and not plotted. Agents joined at `--spawn-rate` after the
load. The 1,000-node point is the G1 run (5 minutes, `--load-rate 500`). What grows with the
nodes: the controller's CPU per change (a fleet-wide change is one message per node: 3,000
encodes and sends) and the tail of the changes that reach every node, which the simulated fleet
applies on two shared cores (on real nodes each agent has its own CPU). The Kafka hop's p99 is the
agent workers' and the controller's loop stalls, not the broker (`bench/results.md`).

![convergence p99 and controller CPU per change against nodes](scaling.png)

{table}

Commands (each run, from the repository root):

{commands}

Regenerate: `python -m loadtest.scaling --nodes 100 300 1000 3000` (or `--render-only`).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.scaling", description=__doc__)
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 300, 1000, 3000])
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--spawn-rate", type=int, default=100, help="agents joining per second (see docs)")
    parser.add_argument(
        "--load-rate", type=int, default=0, help="preload documents per second (0: unlimited)"
    )
    parser.add_argument("--reports", default=".run/bench/scaling")
    parser.add_argument("--docs", default="docs")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args(argv)
    reports_dir, docs = Path(args.reports), Path(args.docs)
    reports_dir.mkdir(parents=True, exist_ok=True)
    docs.mkdir(parents=True, exist_ok=True)
    if not args.render_only:
        for nodes in args.nodes:
            argv_run = command(
                nodes, args.duration, reports_dir / f"nodes-{nodes}.json", args.spawn_rate, args.load_rate
            )
            print(" ".join(argv_run[1:]), flush=True)
            with open(reports_dir / f"nodes-{nodes}.log", "w") as log:
                subprocess.call(argv_run, stdout=log, stderr=subprocess.STDOUT)
    found = [json.loads(p.read_text()) for p in sorted(reports_dir.glob("*.json"))]
    found = [r for r in found if r["params"]["nodes"] in args.nodes]
    if not found:
        print("no reports to render", file=sys.stderr)
        return 1
    render(found, docs)
    print(f"wrote {docs / 'scaling.md'} and {docs / 'scaling.png'} from {len(found)} report(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
