"""The lab topology on real namespaces: pods reach each other across nodes, borrowed IPs work,
pods can be deleted and recreated, and teardown / cleanup leave no namespace behind."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from netns_sockets import PodSockets
from pyroute2 import netns

from lab.topology import Lab, LabError, iface_name

pytestmark = pytest.mark.netns

PREFIX = f"kt{os.getpid() % 100000}"


def _ours(prefix: str) -> list[str]:
    return sorted(n for n in netns.listnetns() if n.startswith(f"{prefix}-"))


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab(prefix=PREFIX)
    lab.cleanup_leftovers()
    try:
        yield lab
    finally:
        lab.teardown()


@pytest.fixture
def sockets() -> Iterator[PodSockets]:
    pods = PodSockets()
    yield pods
    pods.close()


def test_pods_reach_each_other_across_nodes_including_a_borrowed_ip(lab: Lab, sockets: PodSockets) -> None:
    n1, n2 = lab.create_node("node-1"), lab.create_node("node-2")
    assert (n1.block, n2.block) == ("198.18.0.0/26", "198.18.0.64/26")
    a = lab.create_pod("node-1", "ns", "a", "198.18.0.2")
    b = lab.create_pod("node-2", "ns", "b", "198.18.0.66")
    c = lab.create_pod("node-2", "other", "c", "198.18.0.3")  # borrowed from node-1's block
    assert a.iface == iface_name("ns", "a") and len(a.iface) <= 15
    for pod in (a, b, c):
        sockets.serve(pod.netns, pod.ip, tcp=[80], udp=[53])
    checks = [
        (proto, s.netns, d.ip, port)
        for s in (a, b, c)
        for d in (a, b, c)
        if s is not d
        for proto, port in (("tcp", 80), ("udp", 53))
    ]
    assert sockets.matrix(checks) == [True] * len(checks)
    assert not sockets.tcp(a.netns, b.ip, 81)  # refused: no server, and the check says so


def test_a_node_created_later_learns_existing_borrowed_ips(lab: Lab, sockets: PodSockets) -> None:
    lab.create_node("node-1")
    lab.create_node("node-2")
    c = lab.create_pod("node-2", "ns", "c", "198.18.0.9")
    lab.create_node("node-3")
    d = lab.create_pod("node-3", "ns", "d", "198.18.0.130")
    sockets.serve(c.netns, c.ip, tcp=[8080])
    assert sockets.tcp(d.netns, c.ip, 8080)


def test_delete_and_recreate_a_pod_on_another_node(lab: Lab, sockets: PodSockets) -> None:
    lab.create_node("node-1")
    lab.create_node("node-2")
    a = lab.create_pod("node-1", "ns", "a", "198.18.0.2")
    b = lab.create_pod("node-2", "ns", "b", "198.18.0.66")
    lab.delete_pod("ns", "b")
    assert b.netns not in netns.listnetns()
    b2 = lab.create_pod("node-1", "ns", "b", "198.18.0.66")  # now borrowed from node-2's block
    sockets.serve(b2.netns, b2.ip, tcp=[80])
    assert sockets.tcp(a.netns, b2.ip, 80)


def test_bad_requests_are_refused_with_the_field_named(lab: Lab) -> None:
    lab.create_node("node-1")
    lab.create_pod("node-1", "ns", "a", "198.18.0.2")
    with pytest.raises(LabError, match="already exists"):
        lab.create_pod("node-1", "ns", "x", "198.18.0.2")
    with pytest.raises(LabError, match="not in the pod pool"):
        lab.create_pod("node-1", "ns", "y", "10.0.0.1")
    with pytest.raises(LabError, match="node 'nope'"):
        lab.create_pod("nope", "ns", "z", "198.18.0.4")
    with pytest.raises(LabError, match="namespace"):
        lab.create_pod("node-1", "Bad_NS", "z", "198.18.0.4")


def test_teardown_and_cleanup_leave_no_namespace_or_link_behind() -> None:
    lab = Lab(prefix=PREFIX)
    lab.cleanup_leftovers()
    lab.create_node("node-1")
    lab.create_pod("node-1", "ns", "a", "198.18.0.2")
    assert len(_ours(PREFIX)) == 3  # fabric, node, pod
    lab.teardown()
    assert _ours(PREFIX) == []
    crashed = Lab(prefix=PREFIX)
    crashed.create_node("node-1")
    crashed.create_pod("node-1", "ns", "a", "198.18.0.2")  # never torn down: a crashed run
    assert Lab(prefix=PREFIX).cleanup_leftovers() == sorted(
        _ours(PREFIX) or [f"{PREFIX}-fabric", f"{PREFIX}-node-1", f"{PREFIX}-pod-ns-a"]
    )
    assert _ours(PREFIX) == []
    root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert "kfab" not in root_links and "fab0" not in root_links and iface_name("ns", "a") not in root_links
