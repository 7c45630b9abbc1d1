"""Writing a finished run: the JSON report and CSV files in the layout of ``locust --csv``.

Owns the files: ``--report FILE.json`` (the `loadtest.report` document), ``--csv PREFIX`` →
``PREFIX_stats.csv`` (one row per task plus "Aggregated"), ``PREFIX_stats_history.csv`` (one
"Aggregated" row per second) and ``PREFIX_failures.csv`` (one row per distinct error), with
Locust's column names; a "request" is a change and its "response time" is its convergence in ms,
"content size" the mean bytes per affected node, "User Count" the nodes converged. The HTML
report is `loadtest.html_report`. It does not compute anything.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadtest.stats import LOCUST_PERCENTILES
from loadtest.taskstats import TaskEntry

if TYPE_CHECKING:
    from loadtest.runner import Run

PERCENT_COLUMNS = [f"{q:g}%" for q in LOCUST_PERCENTILES]
STATS_HEADER = [
    "Type",
    "Name",
    "Request Count",
    "Failure Count",
    "Median Response Time",
    "Average Response Time",
    "Min Response Time",
    "Max Response Time",
    "Average Content Size",
    "Requests/s",
    "Failures/s",
    *PERCENT_COLUMNS,
]
HISTORY_HEADER = [
    "Timestamp",
    "User Count",
    "Type",
    "Name",
    "Requests/s",
    "Failures/s",
    *PERCENT_COLUMNS,
    "Total Request Count",
    "Total Failure Count",
    "Total Median Response Time",
    "Total Average Response Time",
    "Total Min Response Time",
    "Total Max Response Time",
    "Total Average Content Size",
]
FAILURES_HEADER = ["Method", "Name", "Error", "Occurrences"]


def write_json(report: dict[str, Any], path: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")


def _stats_row(entry: TaskEntry, seconds: float) -> list[Any]:
    lat = entry.latencies
    return [
        entry.category,
        entry.name,
        entry.changes,
        entry.failures,
        round(lat.percentile(50), 1),
        round(lat.mean(), 1),
        round(lat.ordered[0], 1) if lat.ordered else 0,
        round(lat.max, 1),
        round(entry.mean_bytes, 1),
        round(entry.changes / seconds, 3) if seconds else 0,
        round(entry.failures / seconds, 3) if seconds else 0,
        *[round(lat.percentile(q), 1) for q in LOCUST_PERCENTILES],
    ]


def write_csv(run: Run, prefix: str) -> list[str]:
    """The three CSV files; returns their paths."""
    base = Path(prefix)
    base.parent.mkdir(parents=True, exist_ok=True)
    seconds = run.params.duration if run.scenario.churn else max(1.0, (run.state.warmup_ms or 0) / 1000)
    paths = [f"{prefix}_stats.csv", f"{prefix}_stats_history.csv", f"{prefix}_failures.csv"]
    with open(paths[0], "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(STATS_HEADER)
        for _, entry in sorted(run.book.entries.items()):
            writer.writerow(_stats_row(entry, seconds))
        writer.writerow(_stats_row(run.book.total, seconds))
    with open(paths[1], "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HISTORY_HEADER)
        for row in run.book.history:
            writer.writerow(
                [
                    int(row.timestamp),
                    row.nodes,
                    "",
                    "Aggregated",
                    round(row.rate, 3),
                    round(row.failure_rate, 3),
                    *[round(row.percentiles[q], 1) for q in LOCUST_PERCENTILES],
                    row.total_changes,
                    row.total_failures,
                    round(row.total_median, 1),
                    round(row.total_mean, 1),
                    round(row.total_min, 1),
                    round(row.total_max, 1),
                    round(row.total_mean_bytes, 1),
                ]
            )
    with open(paths[2], "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(FAILURES_HEADER)
        counts = Counter((f.category, f.task, f.error) for f in run.ledger.failures)
        for (category, task, error), occurrences in sorted(counts.items()):
            writer.writerow([category, task, error, occurrences])
    return paths
