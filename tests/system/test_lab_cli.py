"""``kalikoctl lab up/down/status`` start real background processes and clean up after themselves.

Proves: ``lab up --backend embedded`` returns only when every node is ready (the admin API then
reports each node's programmed state equal to what was compiled), records its process in the
state file and refuses a second lab; ``lab down`` stops it and removes the state file; a state
file left by a lab whose processes died is cleared by the next ``up``. The ``services`` backend
(marked fv: real etcd, Kafka, Mosquitto) runs a controller and one agent process per node,
registers the nodes and removes them again on ``down``, all under the cluster name derived from
its run directory; ``up`` refuses at once, starting nothing, when another controller already holds
its cluster's leader key, and refuses a cluster name that is not a DNS-1123 label naming the flag.
Each test uses its own run directory and a free port (the services tests also their own etcd), so
it never touches a lab someone else started.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.resource_store import KeyLayout
from iokit.etcd_store import EtcdStore
from kalikoctl.main import build_app
from lab.cluster import LabState, node_status, run_dir_name
from lab.processes import ProcessSet, etcd_healthy, free_port, spawn_etcd

runner = CliRunner()


def kalikoctl(*args: str) -> tuple[int, str]:
    result = runner.invoke(build_app(), list(args))
    return result.exit_code, result.output


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[str]:
    directory = str(tmp_path / "lab")
    yield directory
    kalikoctl("lab", "down", "--run-dir", directory)  # whatever the test left running


def _in_sync(admin: str, count: int) -> bool:
    """node-1..node-<count> are online, ready and programmed what was compiled for them (other
    nodes may have left retained statuses on a shared MQTT broker)."""
    reply = node_status(admin)
    assert reply is not None, "the admin API must answer once lab up returned"
    ours = {n.name: n for n in reply.nodes if n.name in {f"node-{i}" for i in range(1, count + 1)}}
    return len(ours) == count and all(
        n.online and n.ready and n.state_hash == n.expected_hash for n in ours.values()
    )


def test_embedded_lab_up_status_down(run_dir: str) -> None:
    listen = f"127.0.0.1:{free_port()}"
    code, out = kalikoctl("lab", "up", "--nodes", "3", "--listen", listen, "--run-dir", run_dir, "-o", "json")
    assert code == 0, out
    started = json.loads(out)
    assert started["nodes"] == ["node-1", "node-2", "node-3"] and started["admin"] == listen
    assert [p["name"] for p in started["processes"]] == ["embedded"]
    assert all(p["alive"] and p["ready"] for p in started["processes"])
    assert _in_sync(listen, 3)

    code, out = kalikoctl("lab", "status", "--run-dir", run_dir, "-o", "json")
    assert code == 0, out
    assert {n["name"] for n in json.loads(out)["nodes_status"]} >= {"node-1", "node-2", "node-3"}

    code, out = kalikoctl("lab", "up", "--listen", f"127.0.0.1:{free_port()}", "--run-dir", run_dir)
    assert code == 2 and "already running" in out

    state = LabState.load(run_dir)
    assert state is not None
    code, out = kalikoctl("lab", "down", "--run-dir", run_dir, "-o", "json")
    assert code == 0 and json.loads(out) == {"stopped": ["embedded"]}
    assert not any(p.alive() for p in state.processes.processes)
    assert not (Path(run_dir) / "state.json").exists()
    assert kalikoctl("lab", "status", "--run-dir", run_dir)[0] == 1


def test_lab_up_clears_a_dead_labs_state_file(run_dir: str) -> None:
    listen = f"127.0.0.1:{free_port()}"
    assert kalikoctl("lab", "up", "--nodes", "1", "--listen", listen, "--run-dir", run_dir)[0] == 0
    state = LabState.load(run_dir)
    assert state is not None
    process = state.processes.get("embedded")
    os.kill(process.pid, signal.SIGKILL)  # the lab dies behind our back
    os.waitpid(process.pid, 0)  # lab up ran in this process: the lab is our child
    assert kalikoctl("lab", "status", "--run-dir", run_dir)[0] == 1  # a dead process is not healthy

    code, out = kalikoctl("lab", "up", "--nodes", "2", "--listen", listen, "--run-dir", run_dir)
    assert code == 0, out
    assert _in_sync(listen, 2)


def test_lab_up_refuses_a_taken_address(run_dir: str) -> None:
    listen = f"127.0.0.1:{free_port()}"
    assert kalikoctl("lab", "up", "--nodes", "1", "--listen", listen, "--run-dir", run_dir)[0] == 0
    code, out = kalikoctl("lab", "up", "--listen", listen, "--run-dir", run_dir + "-other")
    assert code == 2 and "already in use" in out
    assert not (Path(run_dir + "-other") / "state.json").exists()


async def _node_keys(etcd: str, cluster: str, nodes: list[str]) -> list[str]:
    store = EtcdStore.from_endpoint(etcd)
    try:
        entries, _ = await store.list(KeyLayout(cluster).kind_prefix("Node"))
    finally:
        await store.close()
    return [e.key for e in entries if e.key.rsplit("/", 1)[-1] in nodes]


@pytest.fixture
def private_etcd(tmp_path: Path) -> Iterator[str]:
    """Its own etcd: the leader key is cluster-wide, and a lab elsewhere may lead on the shared one."""
    processes = ProcessSet(tmp_path / "etcd-logs")
    process, endpoint = spawn_etcd(processes, tmp_path / "etcd")
    deadline = time.monotonic() + 30
    while not etcd_healthy(endpoint):  # an external process starting: nothing to await
        assert not process.exited() and time.monotonic() < deadline, f"private etcd failed; see {process.log}"
        time.sleep(0.1)
    yield endpoint
    processes.stop()


@pytest.mark.fv
def test_services_lab_runs_controller_and_agent_processes(
    run_dir: str, private_etcd: str, kafka_bootstrap: str, mqtt_endpoint: str
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    code, out = kalikoctl(
        "lab",
        "up",
        "--backend",
        "services",
        "--nodes",
        "2",
        "--listen",
        listen,
        "--etcd",
        private_etcd,
        "--kafka",
        kafka_bootstrap,
        "--mqtt",
        mqtt_endpoint,
        "--run-dir",
        run_dir,
        "-o",
        "json",
    )
    assert code == 0, out
    started = json.loads(out)
    assert [p["name"] for p in started["processes"]] == ["controller", "node-1", "node-2"]
    cluster = started["cluster"]
    assert cluster == run_dir_name(run_dir) and cluster.startswith("k") and cluster != "kaliko"
    state = LabState.load(run_dir)
    assert state is not None
    assert all(f"--cluster={cluster}" in p.argv for p in state.processes.processes)
    assert _in_sync(listen, 2)
    assert len(asyncio.run(_node_keys(private_etcd, cluster, ["node-1", "node-2"]))) == 2
    assert asyncio.run(_node_keys(private_etcd, "kaliko", ["node-1", "node-2"])) == []

    code, out = kalikoctl("lab", "down", "--run-dir", run_dir)
    assert code == 0 and "stopped node-2, node-1, controller" in out
    assert asyncio.run(_node_keys(private_etcd, cluster, ["node-1", "node-2"])) == []


async def _hold_leader_key(etcd: str, cluster: str, identity: str) -> None:
    store = EtcdStore.from_endpoint(etcd)
    try:
        await store.put(KeyLayout(cluster).leader, identity.encode())
    finally:
        await store.close()


@pytest.mark.fv
def test_services_lab_up_refuses_at_once_a_cluster_someone_leads(
    run_dir: str, private_etcd: str, kafka_bootstrap: str, mqtt_endpoint: str
) -> None:
    asyncio.run(_hold_leader_key(private_etcd, "lab-taken", "someone-elses-controller"))
    started = time.monotonic()
    code, out = kalikoctl(
        "lab", "up", "--backend", "services", "--cluster", "lab-taken",
        "--listen", f"127.0.0.1:{free_port()}", "--etcd", private_etcd, "--kafka", kafka_bootstrap,
        "--mqtt", mqtt_endpoint, "--run-dir", run_dir,
    )  # fmt: skip
    assert code == 2, out
    assert time.monotonic() - started < 15, "refused at once, not after the readiness timeout"
    flat = " ".join(out.split())
    assert "'lab-taken'" in flat and "someone-elses-controller" in flat and "already led" in flat
    assert not (Path(run_dir) / "state.json").exists()


@pytest.mark.parametrize("name", ["Lab", "lab_b", "-lab", "lab.b", "x" * 64])
def test_lab_up_rejects_a_cluster_name_that_is_no_dns_label(run_dir: str, name: str) -> None:
    code, out = kalikoctl("lab", "up", "--cluster", name, "--run-dir", run_dir)
    assert code == 2 and "--cluster" in out
    assert not (Path(run_dir) / "state.json").exists()
