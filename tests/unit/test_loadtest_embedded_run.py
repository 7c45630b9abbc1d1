"""Tiny embedded runs end to end: real controller and agents on the twins, a valid report, nothing lost."""

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from loadtest.cli import app
from loadtest.embedded import EmbeddedBackend
from loadtest.report import ReportSchema, build_report
from loadtest.runner import Run, RunParams


def test_policy_churn_cli_writes_every_output(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["policy-churn", "--nodes", "5", "--pods", "100", "--policies", "20", "--namespaces", "2",
            "--duration", "10", "--rate", "10", "--seed", "7", "--no-live",
            "--report", f"{out}.json", "--html", f"{out}.html", "--csv", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(Path(f"{out}.json").read_text())
    ReportSchema.model_validate(report)
    assert report["lost"] == 0 and report["mismatched_nodes"] == 0 and report["problems"] == []
    assert report["changes"] >= 80  # 10 s at 10/s, minus the few edits that changed nothing
    assert report["convergence_ms"]["count"] == report["changes"]
    assert 0 < report["convergence_ms"]["p50"] <= report["convergence_ms"]["max"]
    assert report["bytes_per_affected_node"]["count"] > 0
    rows = list(csv.DictReader(Path(f"{out}_stats.csv").read_text().splitlines()))
    assert rows[-1]["Name"] == "Aggregated" and int(rows[-1]["Request Count"]) == report["changes"]
    assert {row["Name"] for row in rows} >= {"create_policy", "edit_policy", "delete_policy"}
    assert len(list(csv.DictReader(Path(f"{out}_stats_history.csv").read_text().splitlines()))) >= 10
    page = Path(f"{out}.html").read_text()
    assert page.count("data:image/png;base64,") == 3


@pytest.mark.parametrize("scenario", ["pod-churn", "agent-restart", "slow-agent", "cold-start"])
async def test_each_scenario_runs_correctly(scenario: str) -> None:
    params = RunParams(scenario, nodes=4, pods=80, policies=12, namespaces=2, rate=20, duration=3, seed=3)
    run = Run(params, lambda sink: EmbeddedBackend(sink, partitions=4))
    await run.execute()
    report = build_report(run)
    ReportSchema.model_validate(report)
    assert report["problems"] == []
    assert report["lost"] == 0 and report["mismatched_nodes"] == 0
    if scenario == "cold-start":
        assert report["changes"] == 1 and report["warmup"]["ms"] == report["convergence_ms"]["max"]
    else:
        assert report["convergence_ms"]["count"] > 0
    if scenario == "agent-restart":
        assert report["restarts"]["count"] > 0
        assert report["snapshots"] >= report["restarts"]["count"]
    if scenario == "slow-agent":
        assert report["slow_agent"]["node"] == "node-1"
        assert report["slow_agent"]["slow_node_ms"]["count"] > 0
    if scenario == "pod-churn":
        assert report["by_task"]["create_pod"]["bytes_per_affected_node"]["count"] > 0


@pytest.mark.parametrize(
    ("cause", "backend"),
    [
        ("cut-off", {"max_lag": 1.0}),  # more than max_lag behind: skip to the end
        ("overflow", {"max_lag": 0.0, "queue_size": 4}),  # no cut-off: its queue overflows
    ],
)
async def test_the_slow_agent_resyncs_from_snapshots_and_loses_nothing(
    cause: str, backend: dict[str, Any]
) -> None:
    params = RunParams(
        "slow-agent", nodes=4, pods=80, policies=12, namespaces=2, rate=20, duration=4, seed=3,
        slow_interval=0.2,
    )  # fmt: skip
    run = Run(params, lambda sink: EmbeddedBackend(sink, partitions=4, **backend))
    await run.execute()
    report = build_report(run)
    ReportSchema.model_validate(report)
    assert report["problems"] == []
    assert report["lost"] == 0 and report["mismatched_nodes"] == 0
    slow = report["slow_agent"]
    assert slow["node"] == "node-1" and slow["seconds_per_message"] == 0.2
    assert slow["snapshot_causes"].get(cause, 0) > 0 and slow["cutoffs"] > 0, slow
    assert slow["snapshots"] > slow["snapshot_causes"]["start"] and slow["converged"]
    assert slow["slow_node_ms"]["count"] > 0
    assert {t["metric"]: t["ok"] for t in report["targets"]}["slow_agent.cutoffs (it resyncs)"]
