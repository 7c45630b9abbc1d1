"""`lab.node_ports.node_port_wishes`: which Services the lab exposes on the host's loopback, and where
each port goes (the pod the Service's name resolves to; targetPort by number, name or default)."""

from __future__ import annotations

from typing import Any

from lab.node_ports import NodePortWish, node_port_wishes
from policycore.model import parse_resource
from policycore.model.kube import Pod, Service


def service(name: str, ports: list[dict[str, Any]], kind: str = "NodePort", ns: str = "ui") -> Service:
    doc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": kind, "selector": {"app": name}, "ports": ports},
    }
    parsed = parse_resource(doc)
    assert isinstance(parsed, Service)
    return parsed


def pod(name: str, app: str, ip: str | None = "198.18.0.5", ns: str = "ui") -> Pod:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 9001}]}]},
    }
    if ip:
        doc["status"] = {"podIP": ip}
    parsed = parse_resource(doc)
    assert isinstance(parsed, Pod)
    return parsed


def test_a_node_port_goes_to_the_first_selected_pod_with_an_address() -> None:
    services = [service("web", [{"port": 80, "targetPort": 8080, "nodePort": 30002}])]
    pods = [pod("web-b", "web"), pod("web-a", "web", ip=None), pod("web-c", "web")]
    assert node_port_wishes(services, pods) == [NodePortWish("ui/web", 80, 30002, "ui/web-b", 8080)]


def test_target_port_by_name_or_default_and_no_node_port_means_any() -> None:
    services = [service("web", [{"port": 80, "targetPort": "http"}, {"port": 81, "name": "plain"}])]
    assert node_port_wishes(services, [pod("w", "web")]) == [
        NodePortWish("ui/web", 80, None, "ui/w", 9001),
        NodePortWish("ui/web", 81, None, "ui/w", 81),
    ]


def test_cluster_ip_services_udp_ports_unknown_names_and_unselected_services_are_not_exposed() -> None:
    services = [
        service("web", [{"port": 80, "nodePort": 30080}], kind="ClusterIP"),
        service("dns", [{"port": 53, "protocol": "UDP", "nodePort": 30053}]),
        service("named", [{"port": 80, "targetPort": "nope", "nodePort": 30081}]),
        service("lonely", [{"port": 80, "nodePort": 30082}]),
        service("lb", [{"port": 80, "nodePort": 30083}], kind="LoadBalancer"),
    ]
    pods = [pod("w", "web"), pod("d", "dns"), pod("n", "named"), pod("l", "lb")]
    assert node_port_wishes(services, pods) == [NodePortWish("ui/lb", 80, 30083, "ui/l", 80)]


def test_a_service_only_selects_pods_of_its_own_namespace() -> None:
    services = [service("web", [{"port": 80, "nodePort": 30002}])]
    assert node_port_wishes(services, [pod("w", "web", ns="other")]) == []
