"""``make bench``: a fixed set of services-backend runs that fits in about 15 minutes on this box.

Owns the list of runs (`SUITE`), running each as its own ``python -m loadtest`` process (a fresh
private etcd and Mosquitto each, so one run cannot disturb the next), and the summary: one table
row per run (``<out>/summary.md``, also printed) from the JSON reports each run leaves in
``<out>/<name>.json`` (+ ``.html`` and Locust-style CSVs). Exit status: 0 when every run was
correct (nothing lost, no mismatched node, no problem), 1 otherwise; missed performance targets
are shown, not failed. It does not own a run (`loadtest.cli`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

G1_SCALE = ["--nodes", "1000", "--pods", "50000", "--policies", "2000", "--namespaces", "100"]
MID_SCALE = ["--nodes", "300", "--pods", "15000", "--policies", "600", "--namespaces", "30"]

SUITE: list[tuple[str, list[str]]] = [
    ("policy-churn", ["policy-churn", *G1_SCALE, "--rate", "10", "--duration", "120"]),
    ("pod-churn", ["pod-churn", *G1_SCALE, "--rate", "100", "--duration", "60"]),
    ("agent-restart", ["agent-restart", *MID_SCALE, "--rate", "10", "--duration", "60"]),
    ("slow-agent", ["slow-agent", *MID_SCALE, "--rate", "10", "--duration", "60"]),
    ("cold-start", ["cold-start", *MID_SCALE]),
]


def run_one(name: str, args: list[str], out: Path) -> dict[str, Any] | None:
    base = out / name
    argv = [sys.executable, "-m", "loadtest", *args, "--backend", "services", "--no-live",
            "--report", f"{base}.json", "--html", f"{base}.html", "--csv", str(base)]  # fmt: skip
    print(f"== {name}: {' '.join(argv[1:])}", flush=True)
    started = time.monotonic()
    with open(f"{base}.log", "w") as log:
        code = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT)
    print(f"   exit {code} after {time.monotonic() - started:.0f}s (log {base}.log)", flush=True)
    report = Path(f"{base}.json")
    return json.loads(report.read_text()) if report.exists() else None


def row(name: str, report: dict[str, Any] | None) -> str:
    if report is None:
        return f"| {name} | no report | | | | | | |"
    p, conv = report["params"], report["convergence_ms"]
    misses = [t["id"] + " " + t["metric"] for t in report["targets"] if not t["ok"]]
    return (
        f"| {name} | {p['nodes']}/{p['pods']}/{p['policies']} | {report['changes']} | "
        f"{conv['p50']:.0f} / {conv['p99']:.0f} / {conv['max']:.0f} | {report['kafka_hop_ms']['p99']:.0f} | "
        f"{report['controller']['cpu_s']:.0f} s, {report['controller']['rss_mb']:.0f} MiB | "
        f"{report['lost']} / {report['mismatched_nodes']} | {', '.join(misses) or 'none'} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.suite", description=__doc__)
    parser.add_argument("--out", default=".run/bench", help="directory for reports (default .run/bench)")
    parser.add_argument("--only", nargs="*", help="run only these suite entries")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "| run | nodes/pods/policies | changes | convergence ms p50 / p99 / max | Kafka hop p99 ms "
        "| controller CPU, RSS | lost / mismatched | targets missed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    correct = True
    for name, run_args in SUITE:
        if args.only and name not in args.only:
            continue
        report = run_one(name, run_args, out)
        lines.append(row(name, report))
        correct = correct and report is not None and report["lost"] == 0 and report["mismatched_nodes"] == 0
        correct = correct and report is not None and not report["problems"]
    summary = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(summary)
    print(summary)
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
