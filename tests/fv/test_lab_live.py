"""A live lab on nftables: agents program their node namespaces from the root namespace,
``kalikoctl apply`` creates real pods (placement, IPAM, endpoint registration, processes, hosts
files), ``delete`` removes them, ``lab probe`` answers in ``reach``'s shape, and a running agent
repairs a chain flushed behind its back.

One lab (two nodes, embedded backend) serves the whole module; each test uses its own namespace
and removes its pods again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_lab_support import (
    kalikoctl,
    named_netns_inode,
    netns_inode,
    netns_names,
    nft,
    nft_chain,
    start_lab,
    write_manifests,
)

from lab.live_lab import LiveLab
from node_agent.dataplane.nft_rules import endpoint_chain
from wire.gen.kaliko.v1 import admin_pb2 as pb

pytestmark = [pytest.mark.fv, pytest.mark.netns]

RESYNC_INTERVAL = 10.0  # the agents' default --resync-interval


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLab]:
    yield from start_lab(tmp_path_factory.mktemp("live-lab"))


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod(ns: str, name: str, *, ports: tuple[tuple[int, str], ...] = (), **extra: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": "kaliko/probe"}
    if ports:
        container["ports"] = [{"containerPort": p, "protocol": proto} for p, proto in ports]
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}, **extra.pop("metadata", {})},
        "spec": {"containers": [container], **extra.pop("spec", {})},
    }
    return doc


def deny_all_ingress(ns: str, name: str = "deny") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }


def get(lab: LiveLab, kind: str, ns: str, name: str) -> dict[str, Any] | None:
    reply = lab.admin("List", pb.ListRequest(kind=kind, namespace=ns))
    for text in reply.documents_json:
        doc = json.loads(text)
        if doc["metadata"]["name"] == name:
            return dict(doc)
    return None


def resolve_in(netns: str, name: str) -> str:
    script = f"import socket; print(socket.getaddrinfo({name!r}, 80)[0][4][0])"
    out = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return out.stdout.strip() or out.stderr.strip()


def test_agents_run_in_the_root_netns_and_program_their_node_netns(lab: LiveLab) -> None:
    assert lab.state is not None
    embedded = lab.state.processes.get("embedded")
    assert netns_inode(embedded.pid) == netns_inode("self")  # control plane on the host's loopback
    nodes = lab.node_netns()
    assert sorted(nodes) == ["node-1", "node-2"]
    for netns in nodes.values():
        assert netns.startswith(f"{lab.prefix}-")
        assert "table ip kaliko" in nft(netns, "list", "tables")
    assert (
        "table ip kaliko"
        not in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    )


def test_apply_creates_real_pods_and_delete_removes_them(lab: LiveLab, tmp_path: Path) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }
    web = pod(
        "shop",
        "web",
        ports=((80, "TCP"), (53, "UDP")),
        metadata={"annotations": {"cni.projectcalico.org/ipAddrs": '["198.18.1.1"]'}},
        spec={"nodeName": "node-2"},
    )
    manifests = write_manifests(
        tmp_path / "shop.yaml", namespace("shop"), service, web, pod("shop", "client")
    )
    result = kalikoctl(lab, "apply", "-f", manifests, "--wait")
    assert result.exit_code == 0, result.output

    registered = get(lab, "Pod", "shop", "web")
    assert registered is not None
    assert registered["spec"]["nodeName"] == "node-2" and registered["status"]["podIP"] == "198.18.1.1"
    client_doc = get(lab, "Pod", "shop", "client")
    assert client_doc is not None and client_doc["spec"]["nodeName"] == "node-1"  # spread: the emptier node
    pods = lab.pods()
    assert pods["shop/client"]["ip"] == client_doc["status"]["podIP"]
    assert pods["shop/client"]["ip"].startswith("198.18.0.")  # node-1's block, 198.18.0.0/26
    for key in ("shop/web", "shop/client"):
        entry = pods[key]
        assert entry["alive"] and netns_inode(entry["pid"]) == named_netns_inode(entry["netns"])
    client_netns = pods["shop/client"]["netns"]
    assert resolve_in(client_netns, "web") == "198.18.1.1"  # the hosts file, through ip netns exec
    assert resolve_in(client_netns, "web.shop.svc.cluster.local") == "198.18.1.1"

    wanted = [("shop/client", "shop/web", 80, "TCP"), ("shop/client", "shop/web", 53, "UDP")]
    assert [e.allowed for e in lab.probe_edges(wanted)] == [True, True]  # across nodes, via a /32
    lab.apply([deny_all_ingress("shop")])
    assert [e.allowed for e in lab.probe_edges(wanted)] == [False, False]

    result = kalikoctl(lab, "delete", "-f", manifests, "--wait")
    assert result.exit_code == 0, result.output
    lab.delete([("KubernetesNetworkPolicy", "shop", "deny")])
    assert "shop/web" not in lab.pods() and "shop/client" not in lab.pods()
    assert not [n for n in netns_names(lab.prefix) if "-pod-shop-" in n]
    assert get(lab, "Pod", "shop", "web") is None
    assert not list(Path("/etc/netns").glob(f"{lab.prefix}-pod-shop-*"))


def test_pods_the_lab_cannot_run_are_refused_whole(lab: LiveLab, tmp_path: Path) -> None:
    before = netns_names(lab.prefix)
    bad_image = pod("odd", "nginx")
    bad_image["spec"]["containers"][0]["image"] = "nginx:latest"
    bad_node = pod("odd", "far", spec={"nodeName": "node-9"})
    manifests = write_manifests(
        tmp_path / "odd.yaml", namespace("odd"), pod("odd", "fine"), bad_image, bad_node
    )
    result = kalikoctl(lab, "apply", "-f", manifests)
    assert result.exit_code == 1
    assert "odd.yaml#2: spec.containers[0].image: unknown image 'nginx:latest'" in result.output
    assert "odd.yaml#3: spec.nodeName: no node 'node-9' in this lab" in result.output
    assert netns_names(lab.prefix) == before
    assert get(lab, "Pod", "odd", "fine") is None


def test_lab_probe_prints_what_reach_prints_for_the_same_manifests(lab: LiveLab, tmp_path: Path) -> None:
    pods = [pod("probe", name, ports=((8080, "TCP"),)) for name in ("a", "b", "c")]
    lab.apply([namespace("probe"), *pods, deny_all_ingress("probe")])
    allow_b = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-a-to-b", "namespace": "probe"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "b"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}],
        },
    }
    lab.apply([allow_b])
    started = time.monotonic()
    result = kalikoctl(
        lab, "lab", "probe", "--run-dir", lab.run_dir, "--port", "8080", "-o", "json", server=False
    )
    seconds = time.monotonic() - started
    assert result.exit_code == 0, result.output
    live = json.loads(result.stdout)
    assert set(live) == {"port", "protocol", "pods", "allowed"}

    registered = [
        json.loads(d) for d in lab.admin("List", pb.ListRequest(kind="Pod", namespace="probe")).documents_json
    ]
    policies = [deny_all_ingress("probe"), allow_b]
    manifests = write_manifests(tmp_path / "probe.yaml", namespace("probe"), *registered, *policies)
    offline = kalikoctl(lab, "reach", "-f", manifests, "--port", "8080", "-o", "json", server=False)
    assert offline.exit_code == 0, offline.output
    expected = json.loads(offline.stdout)
    mine = {p for p in live["pods"] if p.startswith("probe/")}
    assert {
        k: {d: v for d, v in row.items() if d in mine} for k, row in live["allowed"].items() if k in mine
    } == {k: {d: v for d, v in row.items() if d in mine} for k, row in expected["allowed"].items()}
    assert live["allowed"]["probe/a"]["probe/b"] is True and live["allowed"]["probe/c"]["probe/b"] is False
    print(f"lab probe: {len(live['pods'])} pods, {seconds:.2f}s including the CLI")
    lab.delete(
        [("Pod", "probe", n) for n in "abc"]
        + [("KubernetesNetworkPolicy", "probe", p["metadata"]["name"]) for p in policies]
    )


def test_a_flushed_chain_is_repaired_by_the_running_agent(lab: LiveLab) -> None:
    lab.apply([namespace("drift"), pod("drift", "server", ports=((80, "TCP"),)), pod("drift", "client")])
    lab.apply([deny_all_ingress("drift")])
    server = lab.pods()["drift/server"]
    netns = lab.node_netns()[server["node"]]
    chain = endpoint_chain(server["iface"], "ingress")
    programmed = nft_chain(netns, chain)
    edge = [("drift/client", "drift/server", 80, "TCP")]
    assert [e.allowed for e in lab.probe_edges(edge)] == [False]

    nft(netns, "flush", "chain", "ip", "kaliko", chain)
    flushed = time.monotonic()
    assert nft_chain(netns, chain) == []
    assert [e.allowed for e in lab.probe_edges(edge)] == [True]  # the drift is real: the deny is gone
    deadline = flushed + RESYNC_INTERVAL + 5
    while nft_chain(netns, chain) != programmed:
        assert time.monotonic() < deadline, f"{chain} not repaired within {RESYNC_INTERVAL + 5:.0f}s"
        time.sleep(0.2)
    repaired = time.monotonic() - flushed
    assert [e.allowed for e in lab.probe_edges(edge)] == [False]
    print(f"drift repaired after {repaired:.2f}s (resync interval {RESYNC_INTERVAL:.0f}s)")
    lab.delete(
        [("Pod", "drift", "server"), ("Pod", "drift", "client"), ("KubernetesNetworkPolicy", "drift", "deny")]
    )
