"""A live lab leaves nothing behind: ``lab up`` after a crash clears the crashed run's pods,
processes and namespaces first, and ``lab down`` removes every namespace, link, route, nft table,
hosts file and process the lab made; the root namespace is as it was."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
from live_lab_support import netns_names, require_root

from lab.live_lab import LiveLab

pytestmark = [pytest.mark.fv, pytest.mark.netns]


Identity = tuple[int, float]


def identity(pid: int) -> Identity:
    return pid, psutil.Process(pid).create_time()


def running(process: Identity) -> bool:
    """Still the same process (a recycled pid is another one), and not a zombie."""
    try:
        found = psutil.Process(process[0])
        return found.create_time() == process[1] and found.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def root_view() -> tuple[list[str], str, list[str]]:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines())
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    routes = subprocess.run(["ip", "route", "show"], capture_output=True, text=True).stdout.splitlines()
    return names, tables, sorted(routes)


def pod_documents(ns: str) -> list[dict[str, object]]:
    docs: list[dict[str, object]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}]
    for name in ("a", "b"):
        container = {"name": name, "image": "kaliko/probe", "ports": [{"containerPort": 80}]}
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
                "spec": {"containers": [container]},
            }
        )
    return docs


def test_up_after_a_crash_cleans_up_first_and_down_leaves_nothing(tmp_path: Path) -> None:
    require_root()
    run_dir = tmp_path / "lab"
    before = root_view()
    crashed = LiveLab(run_dir)
    crashed.__enter__()
    crashed.apply(pod_documents("crash"))
    assert crashed.state is not None
    lab_pids = [identity(p.pid) for p in crashed.state.processes.processes]
    pod_pids = [identity(int(p["pid"])) for p in crashed.pods().values()]
    for pid, _ in lab_pids:  # the daemon and the cluster die; their pods and namespaces stay
        os.kill(pid, signal.SIGKILL)
    assert all(running(pid) for pid in pod_pids)
    leftovers = netns_names(crashed.prefix)
    assert any("-pod-crash-" in name for name in leftovers)

    with LiveLab(run_dir) as lab:
        assert not any(running(pid) for pid in pod_pids + lab_pids)
        assert not any("-pod-" in name for name in netns_names(lab.prefix))
        lab.apply(pod_documents("again"))
        assert [e.allowed for e in lab.probe_edges([("again/a", "again/b", 80, "TCP")])] == [True]
        assert lab.state is not None
        pids = [identity(p.pid) for p in lab.state.processes.processes]
        pids += [identity(int(p["pid"])) for p in lab.pods().values()]
        prefix = lab.prefix

    assert netns_names(prefix) == []
    assert not list(Path("/etc/netns").glob(f"{prefix}-*"))
    assert not any(running(pid) for pid in pids)
    assert not (run_dir / "state.json").exists()
    assert root_view() == before
