"""The demo manifests and steps: they load, match Calico's texts, run on the built-in images, and
their expected connectivity follows from the policies under Kubernetes NetworkPolicy semantics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.apps import images
from lab.apps.management_ui.graph import parse_targets
from lab.apps.stars_probe import parse_urls
from lab.demos.catalog import Demo, DemoError, demo_names, load_demo

STARS_URLS = (
    "http://frontend.stars:80/status,http://backend.stars:6379/status,http://client.client:9000/status"
)


def test_the_three_demos_are_there() -> None:
    assert demo_names() == ["advanced", "simple", "stars"]
    assert [s.name for s in load_demo("stars").steps] == [
        "create-apps", "default-deny", "allow-ui", "backend-policy", "frontend-policy",
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["stars", "simple", "advanced"])
def test_every_document_is_a_known_kind_and_every_pod_runs_a_built_in_image(name: str) -> None:
    demo = load_demo(name)
    for step in demo.steps:
        for doc in demo.documents(step):
            assert doc["kind"] in {"Namespace", "Pod", "Service", "NetworkPolicy"}, doc
            if doc["kind"] == "Pod":
                container = doc["spec"]["containers"][0]
                ports = [(p["containerPort"], p.get("protocol", "TCP")) for p in container.get("ports", [])]
                argv = images.command(container["image"], container.get("args", []), ports, python="py")
                assert argv[:3] == ["py", "-m", images.IMAGES[container["image"]].module]
            if doc["kind"] == "NetworkPolicy":
                assert doc["apiVersion"] == "networking.k8s.io/v1" and doc["metadata"]["namespace"]


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _pod(demo: Demo, ref: str) -> dict[str, Any]:
    namespace, name = ref.split("/")
    for step in demo.steps:
        for doc in demo.documents(step):
            meta = doc["metadata"]
            if doc["kind"] == "Pod" and meta["name"] == name and meta["namespace"] == namespace:
                return doc
    raise KeyError(ref)


def test_stars_pods_and_args_follow_calicos_manifests() -> None:
    demo = load_demo("stars")
    expected = {
        "stars/backend": (
            "kaliko/stars-probe",
            {"role": "backend"},
            6379,
            ["--http-port=6379", f"--urls={STARS_URLS}"],
        ),
        "stars/frontend": (
            "kaliko/stars-probe",
            {"role": "frontend"},
            80,
            ["--http-port=80", f"--urls={STARS_URLS}"],
        ),
        "client/client": (
            "kaliko/stars-probe",
            {"role": "client"},
            9000,
            [f"--urls={STARS_URLS.rsplit(',', 1)[0]}"],
        ),
    }
    for ref, (image, labels, port, args) in expected.items():
        pod = _pod(demo, ref)
        container = pod["spec"]["containers"][0]
        assert (container["image"], pod["metadata"]["labels"], container["args"]) == (image, labels, args)
        assert [p["containerPort"] for p in container["ports"]] == [port]
        for arg in args:
            if arg.startswith("--urls="):
                parse_urls(arg.removeprefix("--urls="))
    ui = _pod(demo, "management-ui/management-ui")["spec"]["containers"][0]
    assert ui["image"] == "kaliko/management-ui" and ui["ports"] == [{"containerPort": 9001}]
    targets = parse_targets(
        next(a for a in ui["args"] if a.startswith("--targets=")).removeprefix("--targets=")
    )
    assert {t.id: t.url for t in targets} == {
        "F": "http://frontend.stars:80/status",
        "B": "http://backend.stars:6379/status",
        "C": "http://client.client:9000/status",
    }
    namespaces = {d["metadata"]["name"]: d["metadata"].get("labels") for d in demo.documents("create-apps")
                  if d["kind"] == "Namespace"}  # fmt: skip
    assert namespaces == {
        "stars": None,
        "management-ui": {"role": "management-ui"},
        "client": {"role": "client"},
    }


def _netpol(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1",
            "metadata": {"namespace": namespace, "name": name}, "spec": spec}  # fmt: skip


UI_FROM = [{"from": [{"namespaceSelector": {"matchLabels": {"role": "management-ui"}}}]}]
ALL_PODS: dict[str, Any] = {"matchLabels": {}}
CALICO_STARS_POLICIES = {
    "default-deny.yaml": [
        _netpol("stars", "default-deny", {"podSelector": {"matchLabels": {}}}),
        _netpol("client", "default-deny", {"podSelector": {"matchLabels": {}}}),
    ],
    "allow-ui.yaml": [_netpol("stars", "allow-ui", {"podSelector": ALL_PODS, "ingress": UI_FROM})],
    "allow-ui-client.yaml": [_netpol("client", "allow-ui", {"podSelector": ALL_PODS, "ingress": UI_FROM})],
    "backend-policy.yaml": [_netpol("stars", "backend-policy", {
        "podSelector": {"matchLabels": {"role": "backend"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}],
                     "ports": [{"protocol": "TCP", "port": 6379}]}],
    })],
    "frontend-policy.yaml": [_netpol("stars", "frontend-policy", {
        "podSelector": {"matchLabels": {"role": "frontend"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"role": "client"}}}],
                     "ports": [{"protocol": "TCP", "port": 80}]}],
    })],
}  # fmt: skip


@pytest.mark.parametrize("file", sorted(CALICO_STARS_POLICIES))
def test_stars_policies_are_calicos(file: str) -> None:
    assert _docs(load_demo("stars").directory / file) == CALICO_STARS_POLICIES[file]


def test_basic_and_advanced_policies_are_calicos() -> None:
    simple = load_demo("simple").directory
    assert _docs(simple / "access-nginx.yaml") == [_netpol("policy-demo", "access-nginx", {
        "podSelector": {"matchLabels": {"app": "nginx"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"run": "access"}}}]}],
    })]  # fmt: skip
    advanced = load_demo("advanced").directory
    assert _docs(advanced / "allow-dns-access.yaml")[0]["spec"] == {
        "podSelector": {"matchLabels": {}},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"name": "kube-system"}}}],
                    "ports": [{"protocol": "UDP", "port": 53}]}],
    }  # fmt: skip
    assert _docs(advanced / "default-deny-egress.yaml")[0]["spec"] == {
        "podSelector": {"matchLabels": {}},
        "policyTypes": ["Egress"],
    }


# --- an independent oracle: Kubernetes NetworkPolicy semantics for the subset the demos use -------------


class Cluster:
    """Namespaces, pods and policies after applying documents in order (later ones replace)."""

    def __init__(self) -> None:
        self.namespaces: dict[str, dict[str, str]] = {}
        self.pods: dict[str, tuple[str, dict[str, str]]] = {}
        self.policies: dict[tuple[str, str], dict[str, Any]] = {}

    def apply(self, doc: dict[str, Any]) -> None:
        meta = doc["metadata"]
        if doc["kind"] == "Namespace":
            self.namespaces[meta["name"]] = meta.get("labels") or {}
        elif doc["kind"] == "Pod":
            self.pods[f"{meta['namespace']}/{meta['name']}"] = (meta["namespace"], meta.get("labels") or {})
        elif doc["kind"] == "NetworkPolicy":
            self.policies[(meta["namespace"], meta["name"])] = doc["spec"]

    @staticmethod
    def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
        assert set(selector) <= {"matchLabels"}, "the oracle only knows matchLabels"
        return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())

    def _peer(self, peer: dict[str, Any], policy_ns: str, pod: str) -> bool:
        namespace, labels = self.pods[pod]
        if "namespaceSelector" in peer:
            in_ns = self._matches(peer["namespaceSelector"], self.namespaces[namespace])
        else:
            in_ns = namespace == policy_ns
        return in_ns and self._matches(peer.get("podSelector", {}), labels)

    def _direction_allows(self, pod: str, peer: str, direction: str, port: int, protocol: str) -> bool:
        namespace, labels = self.pods[pod]
        field, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        isolating = False
        for (policy_ns, _), spec in self.policies.items():
            types = spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"])
            if (
                policy_ns != namespace
                or direction not in types
                or not self._matches(spec["podSelector"], labels)
            ):
                continue
            isolating = True
            for rule in spec.get(field) or []:
                peer_ok = not rule.get(peers) or any(self._peer(p, policy_ns, peer) for p in rule[peers])
                port_ok = not rule.get("ports") or any(
                    p.get("protocol", "TCP") == protocol and p.get("port") in (None, port)
                    for p in rule["ports"]
                )
                if peer_ok and port_ok:
                    return True
        return not isolating

    def allowed(self, source: str, target: str, port: int, protocol: str) -> bool:
        return self._direction_allows(source, target, "Egress", port, protocol) and self._direction_allows(
            target, source, "Ingress", port, protocol
        )


@pytest.mark.parametrize("name", ["stars", "simple", "advanced"])
def test_expected_connectivity_follows_from_the_policies(name: str) -> None:
    demo = load_demo(name)
    cluster = Cluster()
    for step in demo.steps:
        for doc in demo.documents(step):
            cluster.apply(doc)
        for probe in demo.expected_probes(step):
            verdict = cluster.allowed(probe.source_pod, probe.target_pod, probe.port, probe.protocol)
            assert verdict == probe.allowed, f"{name}/{step.name}: {probe.source} -> {probe.target}"


def test_stars_ui_graph_per_step_matches_the_docs() -> None:
    demo = load_demo("stars")
    views = {step.name: demo.expected_ui_graph(step) for step in demo.steps}
    assert views["default-deny"] == {"visible": [], "edges": []}
    assert views["allow-ui"]["visible"] == ["F", "B", "C"] and not any(
        e["reachable"] for e in views["allow-ui"]["edges"]
    )
    reachable = {s: {(e["from"], e["to"]) for e in v["edges"] if e["reachable"]} for s, v in views.items()}
    assert reachable["backend-policy"] == {("F", "B")}
    assert reachable["frontend-policy"] == {("F", "B"), ("C", "F")}
    assert len(views["create-apps"]["edges"]) == 6 and len(reachable["create-apps"]) == 6


def test_a_bad_steps_file_is_rejected_with_the_field_path(tmp_path: Path) -> None:
    source = load_demo("simple").directory
    for file in source.iterdir():
        (tmp_path / file.name).write_text(file.read_text())
    steps = yaml.safe_load((source / "steps.yaml").read_text())
    steps["steps"][1]["expect"][0]["to"] = "nginks"
    (tmp_path / "steps.yaml").write_text(yaml.safe_dump(steps))
    with pytest.raises(DemoError, match=r"steps\[1\]\.expect\[0\]\.to: unknown endpoint 'nginks'"):
        load_demo(tmp_path)

    steps["steps"][1]["expect"][0]["to"] = "nginx"
    steps["endpoints"]["nginx"]["port"] = 8080
    (tmp_path / "steps.yaml").write_text(yaml.safe_dump(steps))
    with pytest.raises(
        DemoError, match=r"endpoints\.nginx\.port: pod policy-demo/nginx does not declare 8080/TCP"
    ):
        load_demo(tmp_path)

    steps["endpoints"]["nginx"]["port"] = 80
    steps["steps"][0]["apply"].append("missing.yaml")
    (tmp_path / "steps.yaml").write_text(yaml.safe_dump(steps))
    with pytest.raises(DemoError, match=r"steps\[0\]\.apply\[3\]: no file 'missing.yaml'"):
        load_demo(tmp_path)
