"""The apps inside real network namespaces: probes leave from the source pod's netns, and names resolve
through /etc/netns/<netns>/hosts (which `ip netns exec` mounts over /etc/hosts).

Two throw-away namespaces joined by a veth in 198.18.250.0/30 stand in for two pods; no nftables.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from lab.apps.probe import Target
from lab.apps.probe_matrix import Pair, probe_matrix

pytestmark = pytest.mark.netns

SUFFIX = f"{os.getpid() % 100000}"
CLIENT, SERVER = f"kapps-c{SUFFIX}", f"kapps-s{SUFFIX}"
CLIENT_IP, SERVER_IP = "198.18.250.1", "198.18.250.2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def pods() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.fail("netns tests need root")
    created: list[str] = []
    try:
        for name in (CLIENT, SERVER):
            _ip("netns", "add", name)
            created.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", CLIENT, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", SERVER)
        for name, address in ((CLIENT, CLIENT_IP), (SERVER, SERVER_IP)):
            _ip("-n", name, "addr", "add", f"{address}/30", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
        hosts = Path("/etc/netns") / CLIENT
        hosts.mkdir(parents=True, exist_ok=True)
        (hosts / "hosts").write_text(f"127.0.0.1 localhost\n{SERVER_IP} backend.stars\n")
        yield
    finally:
        for name in created:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        subprocess.run(["rm", "-rf", f"/etc/netns/{CLIENT}"], check=False)


@pytest.fixture
async def served(pods: None) -> AsyncIterator[None]:
    process = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", SERVER, sys.executable, "-m", "lab.apps.probe", "--ports", "80/TCP,53/UDP",
        "--name", "stars/backend", stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    ready = json.loads(await asyncio.wait_for(process.stdout.readline(), 20))
    assert ready["ports"] == ["80/TCP", "53/UDP"]
    yield
    process.terminate()
    await process.wait()


async def test_probe_matrix_probes_from_inside_the_source_netns(served: None) -> None:
    pairs = [
        Pair(CLIENT, Target(SERVER_IP, 80, "TCP")),
        Pair(CLIENT, Target(SERVER_IP, 53, "UDP")),
        Pair(CLIENT, Target(SERVER_IP, 81, "TCP")),
        Pair(SERVER, Target(SERVER_IP, 80, "TCP")),
    ]
    results = await probe_matrix(pairs, timeout=1.0)
    assert [r.ok for r in results] == [True, True, False, True]


async def test_names_resolve_through_the_netns_hosts_file(served: None) -> None:
    script = "import socket; print(socket.getaddrinfo('backend.stars', 80)[0][4][0])"
    process = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", CLIENT, sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 20)
    assert out.decode().strip() == SERVER_IP
