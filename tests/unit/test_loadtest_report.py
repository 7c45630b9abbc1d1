"""The JSON report schema tooling relies on, and the Locust-shaped CSV headers."""

import copy
import csv
from typing import Any

import pytest
from pydantic import ValidationError

from loadtest.outputs import HISTORY_HEADER, STATS_HEADER
from loadtest.report import ReportSchema, targets

MINIMAL: dict[str, Any] = {
    "scenario": "policy-churn",
    "params": {
        "nodes": 5,
        "pods": 100,
        "policies": 20,
        "namespaces": 2,
        "rate": 10.0,
        "duration": 10.0,
        "backend": "embedded",
        "seed": 1,
    },
    "changes": 3,
    "convergence_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 3.0},
    "pooled_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 3.0},
    "bytes_per_affected_node": {"p50": 100.0, "p99": 200.0, "max": 300.0},
    "bytes_to_unaffected_nodes": 0,
    "kafka_hop_ms": {"p50": 1.0, "p99": 2.0},
    "controller": {"cpu_s": 1.0, "rss_mb": 100.0},
    "agents": {"cpu_s": 1.0, "rss_mb": 100.0},
    "lost": 0,
    "mismatched_nodes": 0,
}


def test_minimal_report_validates_and_extra_fields_are_allowed() -> None:
    ReportSchema.model_validate(MINIMAL)
    ReportSchema.model_validate({**MINIMAL, "targets": [], "by_task": {}})


@pytest.mark.parametrize(
    "path",
    ["lost", "mismatched_nodes", "params.seed", "convergence_ms.p99", "kafka_hop_ms.p50", "agents.rss_mb"],
)
def test_each_tooling_field_is_required(path: str) -> None:
    report = copy.deepcopy(MINIMAL)
    *parents, leaf = path.split(".")
    target = report
    for part in parents:
        target = target[part]
    del target[leaf]
    with pytest.raises(ValidationError, match=leaf):
        ReportSchema.model_validate(report)


def test_targets_name_the_goal_and_whether_the_run_was_at_its_scale() -> None:
    report = {**MINIMAL, "by_task": {}, "warmup": {"ms": 10.0}, "restarts": {"max": 0.0}}
    found = {(t["id"], t["metric"]): t for t in targets(report)}
    assert found[("all", "lost")]["ok"] and found[("all", "lost")]["at_scale"]
    g1 = found[("G1", "convergence_ms.p99")]
    assert g1["ok"] and not g1["at_scale"]  # 5 embedded nodes are not G1's 1,000 services nodes
    big = copy.deepcopy(report)
    big["params"].update(nodes=1000, pods=50_000, policies=2000, duration=300.0, backend="services")
    big["convergence_ms"]["p99"] = 900.0
    g1 = {(t["id"], t["metric"]): t for t in targets(big)}[("G1", "convergence_ms.p99")]
    assert g1["at_scale"] and not g1["ok"]


def test_csv_headers_match_locust() -> None:
    assert STATS_HEADER[:4] == ["Type", "Name", "Request Count", "Failure Count"]
    assert "99.9%" in STATS_HEADER and STATS_HEADER[-1] == "100%"
    assert HISTORY_HEADER[:2] == ["Timestamp", "User Count"]
    assert HISTORY_HEADER[-1] == "Total Average Content Size"
    assert next(csv.reader([",".join(STATS_HEADER)])) == STATS_HEADER
