"""The services backend end to end: private etcd and Mosquitto, the shared Kafka, worker processes."""

import pytest

from loadtest.report import ReportSchema, build_report
from loadtest.runner import Run, RunParams
from loadtest.services import ServicesBackend, ServicesSettings

pytestmark = pytest.mark.fv


@pytest.mark.parametrize("scenario", ["policy-churn", "agent-restart"])
async def test_tiny_services_run_is_correct(scenario: str, kafka_bootstrap: str) -> None:
    params = RunParams(scenario, nodes=6, pods=120, policies=20, namespaces=2, rate=10, duration=4,
                       backend="services", seed=5)  # fmt: skip
    settings = ServicesSettings(kafka=kafka_bootstrap, partitions=8, topic="kaliko.bench-fv")
    run = Run(params, lambda sink: ServicesBackend(sink, settings))
    await run.execute()
    report = build_report(run)
    ReportSchema.model_validate(report)
    assert report["problems"] == []
    assert report["lost"] == 0 and report["mismatched_nodes"] == 0
    assert report["convergence_ms"]["count"] == report["changes"] > 0
    assert report["kafka_hop_ms"]["count"] > 0
    assert report["controller"]["cpu_s"] > 0 and report["agents"]["rss_mb"] > 0
    if scenario == "agent-restart":
        assert report["restarts"]["count"] > 0
