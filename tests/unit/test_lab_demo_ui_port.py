"""The live demo's UI port: the management UI's NodePort Service keeps Calico's nodePort 30002 unless
``--ui-port`` asks for another (0: none, so the lab picks a free one); ``--serve`` needs a live lab."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kalikoctl.main import build_app
from lab.demos.catalog import load_demo
from lab.live_demo import LiveDemo, LiveOptions


def ui_service(ui_port: int | None, tmp_path: Path) -> dict[str, Any]:
    demo = load_demo("stars")
    live = LiveDemo(demo, LiveOptions(run_dir=tmp_path, ui_port=ui_port))
    documents = live.documents(demo.steps[0])
    original = demo.documents(demo.steps[0])
    assert len(documents) == len(original)
    services = []
    for mine, theirs in zip(documents, original, strict=True):
        if mine["kind"] == "Service" and mine["metadata"]["namespace"] == "management-ui":
            services.append(mine)
        else:
            assert mine == theirs  # nothing else changes
    assert len(services) == 1
    return services[0]


@pytest.mark.parametrize(("ui_port", "node_port"), [(None, 30002), (8080, 8080), (0, None)])
def test_the_ui_services_node_port(ui_port: int | None, node_port: int | None, tmp_path: Path) -> None:
    port = ui_service(ui_port, tmp_path)["spec"]["ports"][0]
    assert port.get("nodePort") == node_port and port["port"] == 9001


def test_the_manifest_itself_is_left_alone(tmp_path: Path) -> None:
    ui_service(8080, tmp_path)
    assert ui_service(None, tmp_path)["spec"]["ports"][0]["nodePort"] == 30002


def test_serve_is_refused_without_a_live_lab() -> None:
    result = CliRunner().invoke(build_app(), ["demo", "stars", "--dataplane", "memory", "--serve"])
    assert result.exit_code == 2
    assert "--serve: the memory data plane runs no lab to keep up" in result.output
