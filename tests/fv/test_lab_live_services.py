"""The live demos through the real CLI on the ``services`` backend: real etcd, Kafka and Mosquitto,
a ``kaliko-controller`` process and one ``kaliko-agent --dataplane nftables --netns <node>`` process
per node, each in the root namespace.

``kalikoctl demo simple --dataplane nftables --backend services -o json`` must exit 0 (every probe
as the tutorial says) and print every edge of every step with a convergence time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from live_lab_support import require_root
from typer.testing import CliRunner

from kalikoctl.main import build_app
from lab.demos.catalog import load_demo

pytestmark = [pytest.mark.fv, pytest.mark.netns]


def test_the_simple_demo_on_the_services_backend(
    tmp_path: Path, etcd_endpoint: str, kafka_bootstrap: str, mqtt_endpoint: str
) -> None:
    require_root()
    argv = ["demo", "simple", "--dataplane", "nftables", "--backend", "services", "-o", "json"]
    result = CliRunner().invoke(build_app(), [*argv, "--run-dir", str(tmp_path / "lab")])
    assert result.exit_code == 0, result.output
    steps = json.loads(result.stdout)["steps"]
    demo = load_demo("simple")
    assert [s["name"] for s in steps] == [s.name for s in demo.steps]
    for step, expected in zip(steps, demo.steps, strict=True):
        assert step["converged_seconds"] is not None and 0 <= step["converged_seconds"] < 30
        wanted = [(p.source_pod, p.target_pod, p.port, p.allowed) for p in demo.expected_probes(expected)]
        assert [(e["from"], e["to"], e["port"], e["allowed"]) for e in step["edges"]] == wanted
    assert not (tmp_path / "lab" / "state.json").exists()  # the demo lab is down again
