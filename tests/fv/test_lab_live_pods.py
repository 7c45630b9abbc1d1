"""A live lab keeps its pods as a kubelet would: crashed processes come back, NodePort Services
answer on the host's loopback (policy or not), deleting a Namespace deletes what lived in it,
kaliko/probe answers every declared port on TCP and UDP, drift (a deleted rule, a stray rule in
our table) is repaired by the running agent, and ``lab probe`` prints tables and refuses SCTP.

One lab (two nodes, embedded backend) serves the module; each test uses its own namespace.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_lab_support import kalikoctl, netns_names, nft, nft_chain, start_lab, write_manifests
from test_lab_live import RESYNC_INTERVAL, deny_all_ingress, get, namespace, pod

from lab.live_lab import LiveLab
from lab.processes import free_port
from node_agent.dataplane.nft_rules import endpoint_chain

pytestmark = [pytest.mark.fv, pytest.mark.netns]

RESTART_BUDGET = 5.0
"""The CNI daemon looks every 0.5 s and restarts a first crash after 0.5 s."""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLab]:
    yield from start_lab(tmp_path_factory.mktemp("live-pods"))


def node_port_service(ns: str, name: str, port: int, node_port: int | None) -> dict[str, Any]:
    spec_port: dict[str, Any] = {"port": port, "targetPort": port}
    if node_port is not None:
        spec_port["nodePort"] = node_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "NodePort", "selector": {"app": name}, "ports": [spec_port]},
    }


def loopback_reply(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(b"hello\n")
        return sock.recv(200)


def node_ports(lab: LiveLab) -> dict[str, dict[str, Any]]:
    return {entry["service"]: entry for entry in lab.cni.lab()["node_ports"]}


def wait_until(predicate: Any, budget: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < budget, f"{what} not within {budget}s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_node_port_services_answer_on_the_hosts_loopback_whatever_the_policy(lab: LiveLab) -> None:
    fixed = free_port()
    lab.apply(
        [
            namespace("np"),
            pod("np", "web", ports=((8080, "TCP"),)),
            pod("np", "api", ports=((8081, "TCP"),)),
            node_port_service("np", "web", 8080, fixed),
            node_port_service("np", "api", 8081, None),  # no nodePort: the lab picks one
        ]
    )
    ports = node_ports(lab)
    assert ports["np/web"]["node_port"] == fixed and ports["np/web"]["listen"] == fixed
    assert ports["np/web"]["url"] == f"http://127.0.0.1:{fixed}/"
    assert ports["np/api"]["node_port"] is None and ports["np/api"]["listen"] > 0
    assert lab.pods()["np/web"]["forward"] == f"http://127.0.0.1:{fixed}/"
    assert loopback_reply(fixed).startswith(b"kaliko-probe np/web 8080/TCP")
    assert loopback_reply(ports["np/api"]["listen"]).startswith(b"kaliko-probe np/api 8081/TCP")

    lab.apply([deny_all_ingress("np")])  # like kubectl port-forward: the operator is never cut off
    assert [e.allowed for e in lab.probe_edges([("np/api", "np/web", 8080, "TCP")])] == [False]
    assert loopback_reply(fixed).startswith(b"kaliko-probe np/web")

    lab.delete([("Service", "np", "web")])
    assert "np/web" not in node_ports(lab)
    with pytest.raises(OSError):
        loopback_reply(fixed)
    lab.delete([("Namespace", "", "np")])
    assert node_ports(lab) == {}


def test_a_crashed_pod_process_is_restarted_and_serves_again(lab: LiveLab) -> None:
    lab.apply([namespace("crash"), pod("crash", "server", ports=((80, "TCP"),)), pod("crash", "client")])
    before = lab.pods()["crash/server"]
    assert before["restarts"] == 0
    os.kill(before["pid"], signal.SIGKILL)

    def restarted() -> bool:
        now = lab.pods()["crash/server"]
        return bool(now["alive"] and now["restarts"] == 1 and now["pid"] != before["pid"])

    seconds = wait_until(restarted, RESTART_BUDGET, "crash/server restarted")
    edge = [("crash/client", "crash/server", 80, "TCP")]
    wait_until(lambda: lab.probe_edges(edge)[0].allowed, RESTART_BUDGET, "crash/server serving again")
    print(f"pod process restarted {seconds:.2f}s after SIGKILL")
    lab.delete([("Namespace", "", "crash")])


def test_deleting_a_namespace_deletes_its_pods_services_and_policies(lab: LiveLab, tmp_path: Path) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "a", "namespace": "gone"},
        "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]},
    }
    manifests = write_manifests(
        tmp_path / "gone.yaml",
        namespace("gone"),
        pod("gone", "a"),
        pod("gone", "b"),
        service,
        deny_all_ingress("gone"),
    )
    result = kalikoctl(lab, "apply", "-f", manifests, "--wait")
    assert result.exit_code == 0, result.output
    assert any("-pod-gone-" in n for n in netns_names(lab.prefix))

    result = kalikoctl(lab, "delete", "namespace", "gone", "--wait")
    assert result.exit_code == 0, result.output
    assert "Successfully deleted 5 resource(s)" in result.output, result.output  # 1 + 2 pods, svc, policy
    for kind, name in (("Pod", "a"), ("Pod", "b"), ("Service", "a"), ("KubernetesNetworkPolicy", "deny")):
        assert get(lab, kind, "gone", name) is None, (kind, name)
    assert not [key for key in lab.pods() if key.startswith("gone/")]
    assert not [n for n in netns_names(lab.prefix) if "-pod-gone-" in n]
    assert not list(Path("/etc/netns").glob(f"{lab.prefix}-pod-gone-*"))


def test_kaliko_probe_answers_every_declared_port_on_both_protocols(lab: LiveLab) -> None:
    lab.apply(
        [
            namespace("both"),
            pod("both", "tcp-only", ports=((80, "TCP"),)),
            pod("both", "udp-only", ports=((53, "UDP"),)),
        ]
    )
    wanted = [
        ("both/udp-only", "both/tcp-only", 80, "TCP"),
        ("both/udp-only", "both/tcp-only", 80, "UDP"),
        ("both/tcp-only", "both/udp-only", 53, "UDP"),
        ("both/tcp-only", "both/udp-only", 53, "TCP"),
        ("both/tcp-only", "both/udp-only", 54, "UDP"),  # not declared: nothing listens
    ]
    assert [e.allowed for e in lab.probe_edges(wanted)] == [True, True, True, True, False]
    lab.delete([("Namespace", "", "both")])


def test_a_deleted_rule_and_a_stray_rule_are_repaired_by_the_running_agent(lab: LiveLab) -> None:
    lab.apply([namespace("drift2"), pod("drift2", "server", ports=((80, "TCP"),)), pod("drift2", "client")])
    lab.apply([deny_all_ingress("drift2")])
    server = lab.pods()["drift2/server"]
    netns = lab.node_netns()[server["node"]]
    chain = endpoint_chain(server["iface"], "ingress")
    programmed = nft_chain(netns, chain)
    forward = nft_chain(netns, "forward")
    edge = [("drift2/client", "drift2/server", 80, "TCP")]
    assert [e.allowed for e in lab.probe_edges(edge)] == [False]

    listing = nft(netns, "-a", "list", "chain", "ip", "kaliko", chain).splitlines()
    handle = next(line.rsplit("# handle ", 1)[1] for line in listing if " drop " in f" {line} ")
    nft(netns, "delete", "rule", "ip", "kaliko", chain, "handle", handle)
    nft(netns, "insert", "rule", "ip", "kaliko", "forward", "ip", "daddr", server["ip"], "accept")
    assert nft_chain(netns, chain) != programmed and nft_chain(netns, "forward") != forward

    def repaired() -> bool:
        return nft_chain(netns, chain) == programmed and nft_chain(netns, "forward") == forward

    seconds = wait_until(repaired, RESYNC_INTERVAL + 5, "drift repaired")
    assert [e.allowed for e in lab.probe_edges(edge)] == [False]
    print(f"deleted and stray rules repaired {seconds:.2f}s after the change")
    lab.delete([("Namespace", "", "drift2")])


def test_lab_probe_prints_a_table_and_says_it_cannot_probe_sctp(lab: LiveLab) -> None:
    lab.apply(
        [namespace("tbl"), pod("tbl", "a", ports=((7000, "UDP"),)), pod("tbl", "b", ports=((7000, "UDP"),))]
    )
    args = ("lab", "probe", "--run-dir", lab.run_dir, "--port", "7000", "--protocol", "UDP")
    result = kalikoctl(lab, *args, server=False)
    assert result.exit_code == 0, result.output
    assert "UDP/7000" in result.output and "tbl/a" in result.output and "pair(s) probed in" in result.output
    sctp = kalikoctl(lab, "lab", "probe", "--run-dir", lab.run_dir, "--protocol", "SCTP", server=False)
    assert sctp.exit_code == 2
    assert "--protocol SCTP: SCTP is" in sctp.output and "the lab probes TCP and UDP" in sctp.output
    lab.delete([("Namespace", "", "tbl")])
