"""``make services`` itself: idempotent, loopback only, its data in a git-ignored folder.

Proves, on the running services (fv): a second ``deploy/services/services.sh up`` leaves every
running service alone (same pids, exit 0) and ``status`` reports each one answering; etcd,
Mosquitto and the Kafka JVM listen on 127.0.0.1 only; their data and logs live in ``.run/services``,
which git ignores. (``down`` is not exercised here: these services are shared by everyone on the
machine; `tests/fv/test_broker_restart.py` stops and starts a private broker instead.)
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.fv

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "services" / "services.sh"
RUN = ROOT / ".run" / "services"
SERVICES = ("etcd", "mosquitto", "kafka")


def _pids() -> dict[str, int]:
    pids = {}
    for name in SERVICES:
        pidfile = RUN / f"{name}.pid"
        if not pidfile.exists():
            pytest.fail(f"{pidfile} is missing; run `make services`")
        pids[name] = int(pidfile.read_text().strip())
    return pids


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KALIKO_PYTHON": str(ROOT / ".venv" / "bin" / "python")}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=400, check=False
    )


def test_up_again_leaves_the_running_services_alone() -> None:
    before = _pids()
    again = _script("up")
    assert again.returncode == 0, again.stderr
    assert "starting" not in again.stdout, again.stdout
    assert _pids() == before
    status = _script("status")
    assert status.returncode == 0, status.stdout + status.stderr
    for name in SERVICES:
        line = next(line for line in status.stdout.splitlines() if line.startswith(name))
        assert "running" in line and "NOT" not in line, line


def test_every_service_listens_on_loopback_only() -> None:
    for name, pid in _pids().items():
        process = psutil.Process(pid)
        family = [process, *process.children(recursive=True)]
        listening = [
            c.laddr for p in family for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
        ]
        assert listening, f"{name} (pid {pid}) listens on nothing"
        for address in listening:
            ip = ipaddress.ip_address(address.ip)
            mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
            assert (mapped or ip).is_loopback, f"{name} listens on {address.ip}:{address.port}"


def test_service_data_lives_in_a_git_ignored_folder() -> None:
    assert (RUN / "etcd").is_dir() and (RUN / "kafka" / "data").is_dir()
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(RUN / "etcd")], check=False)
    assert ignored.returncode == 0, ".run/services is not git-ignored"
