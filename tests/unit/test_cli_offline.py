"""``kalikoctl reach``, ``explain`` and ``demo``: the compiled policy judged offline, exact JSON shapes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kalikoctl.commands import demo as demo_command
from kalikoctl.main import app
from kalikoctl.offline import OfflineCluster, PlacedPod
from policycore.calc.oracle import compile_all
from policycore.ir import NodeState
from policycore.model import load_resources

runner = CliRunner()

CLUSTER = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
---
apiVersion: v1
kind: Pod
metadata: {name: tool, namespace: ops, labels: {app: tool}}
spec: {nodeName: node-9}
status: {podIP: 198.18.0.3}
"""
# web may reach db on TCP 5432 (Kubernetes policy); ops/tool is denied everything by a Calico
# policy in tier "security" whose rule 1 denies and rule 0 only logs.
POLICIES = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: web}}}]
      ports: [{port: 5432}]
---
apiVersion: kaliko.io/v1
kind: Tier
metadata: {name: security}
spec: {order: 10}
---
apiVersion: kaliko.io/v1
kind: GlobalNetworkPolicy
metadata: {name: quarantine}
spec:
  tier: security
  order: 1
  selector: app == 'tool'
  types: [Egress]
  egress:
    - action: Log
    - action: Deny
      protocol: TCP
    - action: Pass
"""


@pytest.fixture
def manifests(tmp_path: Path) -> list[str]:
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    (tmp_path / "policies.yaml").write_text(POLICIES)
    return ["-f", str(tmp_path / "cluster.yaml"), "-f", str(tmp_path / "policies.yaml")]


def invoke_json(args: list[str]) -> tuple[int, Any]:
    result = runner.invoke(app, args)
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else None


def test_placement_is_deterministic_and_keeps_what_is_given(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CLUSTER)
    cluster = OfflineCluster(load_resources([str(tmp_path / "c.yaml")]))
    assert cluster.pods == {
        "ops/tool": PlacedPod("ops/tool", "node-9", "198.18.0.3"),  # given: kept
        "shop/db": PlacedPod("shop/db", "node-1", "198.18.0.2"),  # first free address, first node
        "shop/web": PlacedPod("shop/web", "node-2", "198.18.0.4"),  # 198.18.0.3 is taken by ops/tool
    }
    again = OfflineCluster(load_resources([str(tmp_path / "c.yaml")]))
    assert again.pods == cluster.pods and again.programmed() == cluster.programmed()
    one_node = OfflineCluster(load_resources([str(tmp_path / "c.yaml")]), nodes=1)
    assert {p.node for p in one_node.pods.values()} == {"node-1", "node-9"}
    assert sorted(one_node.dataplanes) == ["node-1", "node-9"]


def test_reapplied_and_later_pods_keep_placements(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CLUSTER)
    cluster = OfflineCluster(load_resources([str(tmp_path / "c.yaml")]))
    before = dict(cluster.pods)
    (tmp_path / "more.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: aaa, namespace: shop}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop, labels: {app: web, v: '2'}}\n"
    )
    cluster.apply(load_resources([str(tmp_path / "more.yaml")]))
    assert {k: cluster.pods[k] for k in before} == before
    assert cluster.pods["shop/aaa"] == PlacedPod("shop/aaa", "node-1", "198.18.0.5")


def test_the_graph_fed_data_planes_hold_what_the_oracle_computes(manifests: list[str]) -> None:
    files = manifests[1::2]
    cluster = OfflineCluster(load_resources(files))
    expected = compile_all(cluster.resources.values())
    assert cluster.programmed() == {node: expected.get(node, NodeState()) for node in cluster.programmed()}
    assert set(expected) <= set(cluster.programmed())


def test_reach_json_shape_and_verdicts(manifests: list[str]) -> None:
    code, doc = invoke_json(["reach", *manifests, "--port", "5432", "-o", "json"])
    assert code == 0
    assert doc == {
        "port": 5432,
        "protocol": "TCP",
        "pods": ["ops/tool", "shop/db", "shop/web"],
        "allowed": {
            "ops/tool": {"shop/db": False, "shop/web": False},  # egress denied by quarantine
            "shop/db": {"ops/tool": True, "shop/web": True},
            "shop/web": {"ops/tool": True, "shop/db": True},  # the policy lets web in on 5432
        },
    }


def test_reach_and_explain_read_directories_and_stdin(manifests: list[str], tmp_path: Path) -> None:
    _, expected = invoke_json(["reach", *manifests, "--port", "5432", "-o", "json"])
    (tmp_path / "notes.txt").write_text("not a manifest")
    from_dir = runner.invoke(app, ["reach", "-f", str(tmp_path), "--port", "5432", "-o", "json"])
    assert json.loads(from_dir.stdout) == expected
    piped = runner.invoke(
        app, ["reach", "-f", "-", "-f", manifests[3], "--port", "5432", "-o", "json"], input=CLUSTER
    )
    assert json.loads(piped.stdout) == expected
    args = ["explain", "-f", "-", "-f", manifests[3], "--from", "shop/web", "--to", "shop/db"]
    explained = runner.invoke(app, [*args, "--port", "5432", "-o", "json"], input=CLUSTER)
    assert json.loads(explained.stdout)["allowed"] is True


def test_reach_port_and_protocol_matter(manifests: list[str]) -> None:
    _, tcp80 = invoke_json(["reach", *manifests, "--port", "80", "-o", "json"])
    assert tcp80["allowed"]["shop/web"]["shop/db"] is False
    _, udp = invoke_json(["reach", *manifests, "--port", "5432", "--protocol", "udp", "-o", "json"])
    assert udp["protocol"] == "UDP"
    assert udp["allowed"]["shop/web"]["shop/db"] is False  # the policy's port is TCP
    assert udp["allowed"]["ops/tool"]["shop/web"] is True  # the Deny rule is TCP only; Pass → profile


def test_reach_table(manifests: list[str]) -> None:
    result = runner.invoke(app, ["reach", *manifests, "--port", "5432"])
    assert result.exit_code == 0
    rows = {
        line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line.startswith("  ops")
    }
    rows |= {
        line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line.startswith("  shop")
    }
    assert rows == {"ops/tool": ["-", "X", "X"], "shop/db": [".", "-", "."], "shop/web": [".", ".", "-"]}


def test_reach_errors(manifests: list[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: X}\n")
    result = runner.invoke(app, ["reach", "-f", str(bad)])
    assert result.exit_code == 1
    assert result.stdout.startswith(f"error: {bad}: metadata.name: 'X' is not a DNS-1123 subdomain")
    assert runner.invoke(app, ["reach", *manifests, "--protocol", "ICMP"]).exit_code == 2
    assert runner.invoke(app, ["reach", *manifests, "--port", "0"]).exit_code == 2


def test_explain_ingress_rule_decides(manifests: list[str]) -> None:
    args = ["explain", *manifests, "--from", "shop/web", "--to", "shop/db", "--port", "5432", "-o", "json"]
    code, doc = invoke_json(args)
    assert code == 0
    assert {k: doc[k] for k in ("from", "to", "port", "protocol", "allowed", "reason")} == {
        "from": "shop/web",
        "to": "shop/db",
        "port": 5432,
        "protocol": "TCP",
        "allowed": True,
        "reason": "allowed",
    }
    assert doc["egress"] == {
        "endpoint": "shop/web",
        "node": "node-2",
        "allowed": True,
        "decision": {"by": "profile"},
        "tiers": [],
    }
    ingress = doc["ingress"]
    assert (ingress["endpoint"], ingress["node"], ingress["allowed"]) == ("shop/db", "node-1", True)
    assert ingress["decision"] == {
        "by": "rule",
        "tier": "default",
        "policy_kind": "KubernetesNetworkPolicy",
        "policy": "shop/db-from-web",
        "direction": "ingress",
        "rule_index": "0",
        "rule_id": "default/KubernetesNetworkPolicy/shop/db-from-web/ingress/0",
        "action": "allow",
    }
    assert ingress["tiers"] == [
        {
            "tier": "default",
            "default": None,
            "policies": [
                {
                    "policy": "shop/db-from-web",
                    "policy_kind": "KubernetesNetworkPolicy",
                    "outcome": "allow",
                    "rule_index": "0",
                    "logged": [],
                }
            ],
        }
    ]


def test_explain_egress_deny_rule_with_its_index_and_log(manifests: list[str]) -> None:
    args = ["explain", *manifests, "--from", "ops/tool", "--to", "shop/web", "--port", "80", "-o", "json"]
    code, doc = invoke_json(args)
    assert code == 0
    assert (doc["allowed"], doc["reason"]) == (False, "denied by egress")
    egress = doc["egress"]
    assert egress["decision"]["by"] == "rule"
    assert (egress["decision"]["policy"], egress["decision"]["tier"]) == ("quarantine", "security")
    assert (egress["decision"]["rule_index"], egress["decision"]["action"]) == ("1", "deny")
    assert egress["tiers"] == [
        {
            "tier": "security",
            "default": None,
            "policies": [
                {
                    "policy": "quarantine",
                    "policy_kind": "GlobalNetworkPolicy",
                    "outcome": "deny",
                    "rule_index": "1",
                    "logged": ["0"],
                }
            ],
        }
    ]
    assert doc["ingress"]["decision"] == {"by": "profile"}


def test_explain_tier_default_and_text(manifests: list[str]) -> None:
    args = ["explain", *manifests, "--from", "ops/tool", "--to", "shop/db", "--port", "5432"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "ops/tool -> shop/db TCP/5432: DENIED (denied by egress and ingress)"
    assert lines[1].startswith(
        "egress at ops/tool (node node-9): denied by rule egress[1] of GlobalNetworkPolicy"
    )
    assert (
        "ingress at shop/db (node node-1): denied by the end of tier default (no policy in it decided)"
        in lines
    )
    assert "    KubernetesNetworkPolicy shop/db-from-web: no rule matched" in lines
    assert "    end of tier: deny" in lines


def test_explain_self_and_unknown_pod(manifests: list[str]) -> None:
    code, doc = invoke_json(
        ["explain", *manifests, "--from", "shop/db", "--to", "shop/db", "--port", "1", "-o", "json"]
    )
    assert code == 0
    assert (doc["allowed"], doc["reason"], doc["egress"], doc["ingress"]) == (True, "self", None, None)
    result = runner.invoke(
        app, ["explain", *manifests, "--from", "shop/nope", "--to", "shop/db", "--port", "1"]
    )
    assert result.exit_code == 2
    assert "no pod 'shop/nope'" in result.stderr


def test_explain_names_the_missing_profile_of_a_pod_without_its_namespace(tmp_path: Path) -> None:
    (tmp_path / "pods.yaml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: ops}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: tool, namespace: ops}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: lost, namespace: gone}\n"
    )
    files = ["-f", str(tmp_path / "pods.yaml")]
    code, doc = invoke_json(
        ["explain", *files, "--from", "ops/tool", "--to", "gone/lost", "--port", "80", "-o", "json"]
    )
    assert code == 0
    assert (doc["allowed"], doc["reason"]) == (False, "denied by ingress")
    assert doc["egress"]["decision"] == {"by": "profile"}
    assert doc["ingress"]["decision"] == {"by": "missing-profile", "profile": "kns.gone"}
    assert doc["ingress"]["tiers"] == [{"tier": "kns.gone", "default": "deny", "policies": []}]
    result = runner.invoke(
        app, ["explain", *files, "--from", "gone/lost", "--to", "ops/tool", "--port", "80"]
    )
    assert "egress at gone/lost (node node-1): denied by the missing profile kns.gone" in result.stdout
    code, doc = invoke_json(["reach", *files, "-o", "json"])
    assert doc["allowed"] == {"gone/lost": {"ops/tool": False}, "ops/tool": {"gone/lost": False}}


STARS_EDGES = [
    ("management-ui/management-ui", "stars/frontend", 80),
    ("management-ui/management-ui", "stars/backend", 6379),
    ("management-ui/management-ui", "client/client", 9000),
    ("stars/frontend", "stars/backend", 6379),
    ("stars/frontend", "client/client", 9000),
    ("stars/backend", "stars/frontend", 80),
    ("stars/backend", "client/client", 9000),
    ("client/client", "stars/frontend", 80),
    ("client/client", "stars/backend", 6379),
]


def test_demo_stars_json() -> None:
    code, doc = invoke_json(["demo", "stars", "--dataplane", "memory", "-o", "json"])
    assert code == 0
    assert [s["name"] for s in doc["steps"]] == [
        "create-apps",
        "default-deny",
        "allow-ui",
        "backend-policy",
        "frontend-policy",
    ]
    for step in doc["steps"]:
        assert set(step) == {"name", "converged_seconds", "edges"}
        assert step["converged_seconds"] is None
        assert [(e["from"], e["to"], e["port"]) for e in step["edges"]] == STARS_EDGES
        assert all(set(e) == {"from", "to", "port", "allowed"} for e in step["edges"])
    allowed = {s["name"]: {(e["from"], e["to"]) for e in s["edges"] if e["allowed"]} for s in doc["steps"]}
    ui = {(a, b) for a, b, _ in STARS_EDGES[:3]}
    assert allowed["create-apps"] == {(a, b) for a, b, _ in STARS_EDGES}
    assert allowed["default-deny"] == set()
    assert allowed["allow-ui"] == ui
    assert allowed["backend-policy"] == ui | {("stars/frontend", "stars/backend")}
    assert allowed["frontend-policy"] == ui | {
        ("stars/frontend", "stars/backend"),
        ("client/client", "stars/frontend"),
    }


def test_demo_text_prints_each_steps_matrix() -> None:
    result = runner.invoke(app, ["demo", "stars"])
    assert result.exit_code == 0
    titles = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert [t.split(" - ")[0] for t in titles] == [
        "step 1: create-apps",
        "step 2: default-deny",
        "step 3: allow-ui",
        "step 4: backend-policy",
        "step 5: frontend-policy",
    ]


def test_demo_mismatch_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong(demo: Any) -> Iterator[demo_command.StepResult]:
        edge = demo_command.Edge("stars/frontend", "stars/backend", 6379, "TCP", allowed=True, expected=False)
        yield demo_command.StepResult("only", "", None, (edge,))

    monkeypatch.setitem(demo_command.DATAPLANES, "memory", wrong)
    result = runner.invoke(app, ["demo", "stars"])
    assert result.exit_code == 1
    assert (
        "step only: stars/frontend -> stars/backend TCP/6379 is allowed, the demo expects the opposite"
        in (result.stderr)
    )


def test_demo_unknown_name_or_dataplane() -> None:
    assert runner.invoke(app, ["demo", "nope"]).exit_code == 2
    result = runner.invoke(app, ["demo", "stars", "--dataplane", "ebpf"])
    assert result.exit_code == 2
    assert "--dataplane: 'ebpf' is not one of memory" in result.stderr
