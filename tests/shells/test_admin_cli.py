"""kalikoctl's online commands (typer's CliRunner) against the in-process admin server.

The CLI's client is synchronous, so each invocation runs in a worker thread while the event loop
serves the controller, its gRPC server and the agents (see `admin_harness`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from admin_harness import AdminCluster, allow_from, cluster_manifests, running_cluster
from click.testing import Result
from typer.testing import CliRunner

from kalikoctl.main import build_app
from kalikoctl.online import resolve_kind
from policycore.model import KINDS
from wire.gen.kaliko.v1 import admin_pb2 as pb

NODES = ["node-1", "node-2", "node-3"]
WEB = allow_from("shop", "web", "app == 'web'", "app == 'client'", 80)
DB = allow_from("shop", "db", "app == 'db'", "app == 'web'", 5432)


@pytest.fixture
async def cluster() -> AsyncIterator[AdminCluster]:
    async with running_cluster(NODES) as c:
        await c.apply(*cluster_manifests(NODES))
        await c.agents_ready()
        yield c


async def kalikoctl(cluster: AdminCluster, *args: str, stdin: str | None = None) -> Result:
    runner = CliRunner()
    full = [*args, "--server", cluster.address]
    return await asyncio.to_thread(runner.invoke, build_app(), full, input=stdin)


def write(path: Path, *documents: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return str(path)


async def test_apply_prints_calicoctl_messages_and_waits_for_convergence(
    cluster: AdminCluster, tmp_path: Path
) -> None:
    policies = write(tmp_path / "policies.yaml", WEB, DB)
    result = await kalikoctl(cluster, "apply", "-f", policies)
    assert result.exit_code == 0, result.output
    assert "Successfully applied 2 'NetworkPolicy' resource(s)" in result.stdout
    changed = dict(WEB, spec={**WEB["spec"], "order": 10})
    write(tmp_path / "policies.yaml", changed)
    result = await kalikoctl(cluster, "apply", "-f", str(tmp_path), "--wait", "-o", "json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert set(found) == {"revision", "converged", "seconds", "nodes", "lagging"}
    assert found["converged"] is True and found["lagging"] == [] and 0 < found["seconds"] < 10
    assert sorted(found["nodes"]) == NODES
    assert all(n["ready"] and n["revision"] >= found["revision"] for n in found["nodes"].values())
    mixed = await kalikoctl(cluster, "apply", "-f", "-", stdin=json.dumps([WEB, cluster_manifests(NODES)[0]]))
    assert "Successfully applied 2 resource(s)" in mixed.stdout


async def test_every_problem_is_printed_with_its_source_and_path(
    cluster: AdminCluster, tmp_path: Path
) -> None:
    bad = allow_from("shop", "bad", "app ==", "all()", 80)
    bad["spec"]["ingress"][0]["action"] = "Maybe"
    good = write(tmp_path / "a-good.yaml", WEB)
    broken = write(tmp_path / "b-bad.yaml", DB, bad)
    before = cluster.store.revision
    result = await kalikoctl(cluster, "apply", "-f", good, "-f", broken)
    assert result.exit_code == 1
    assert f"{broken}#1: spec.ingress[0].action" in result.stdout
    assert f"{broken}#1: spec.selector" in result.stdout
    assert "INVALID_ARGUMENT" in result.stderr
    assert cluster.store.revision == before  # the good documents were not written either


async def test_create_replace_delete_and_their_refusals(cluster: AdminCluster, tmp_path: Path) -> None:
    policy = write(tmp_path / "web.yaml", WEB)
    assert (await kalikoctl(cluster, "create", "-f", policy)).exit_code == 0
    again = await kalikoctl(cluster, "create", "-f", policy)
    assert again.exit_code == 1 and "ALREADY_EXISTS" in again.stderr and "already exists" in again.stdout
    replaced = await kalikoctl(cluster, "replace", "-f", policy)
    assert (
        replaced.exit_code == 0 and "Successfully replaced 1 'NetworkPolicy' resource(s)" in replaced.stdout
    )
    deleted = await kalikoctl(cluster, "delete", "np", "web", "-n", "shop")
    assert deleted.exit_code == 0 and "Successfully deleted 1 'NetworkPolicy' resource(s)" in deleted.stdout
    missing = await kalikoctl(cluster, "delete", "-f", policy)
    assert missing.exit_code == 1 and "NOT_FOUND" in missing.stderr
    skipped = await kalikoctl(cluster, "delete", "-f", policy, "--skip-not-exists")
    assert skipped.exit_code == 0
    no_such_kind = await kalikoctl(cluster, "delete", "gadget", "x")
    assert no_such_kind.exit_code == 2


async def test_get_output_applies_back_unchanged(cluster: AdminCluster, tmp_path: Path) -> None:
    await cluster.apply(WEB, DB)
    for fmt in ("yaml", "json"):
        listed = await kalikoctl(cluster, "get", "networkpolicies", "-n", "shop", "-o", fmt)
        assert listed.exit_code == 0, listed.output
        (tmp_path / f"out.{fmt}").write_text(listed.stdout)
        before = cluster.store.revision
        result = await kalikoctl(cluster, "apply", "-f", str(tmp_path / f"out.{fmt}"), "-o", "json")
        assert result.exit_code == 0, result.output
        outcomes = [r["outcome"] for r in json.loads(result.stdout)["results"]]
        assert outcomes == ["unchanged", "unchanged"] and cluster.store.revision == before
    one = await kalikoctl(cluster, "get", "NetworkPolicy", "web", "-n", "shop", "-o", "yaml")
    document = yaml.safe_load(one.stdout)
    assert document["kind"] == "NetworkPolicy" and document["metadata"]["name"] == "web"
    assert document["metadata"]["resourceVersion"]


async def test_get_tables_aliases_and_selectors(cluster: AdminCluster) -> None:
    await cluster.apply(WEB)
    wide = await kalikoctl(cluster, "get", "netpol", "-n", "shop", "-o", "wide")
    assert wide.exit_code == 0
    assert "TIER" in wide.stdout and "SELECTOR" in wide.stdout and "app == 'web'" in wide.stdout
    pods = await kalikoctl(cluster, "get", "po", "-A", "-l", "app == 'client'", "-o", "wide")
    assert pods.stdout.count("client-") == 3 and "web-" not in pods.stdout and "10.10.1.2" in pods.stdout
    nodes = await kalikoctl(cluster, "get", "NODES")
    assert all(n in nodes.stdout for n in NODES)
    default_ns = await kalikoctl(cluster, "get", "pods")
    assert default_ns.exit_code == 0 and "No Pod resources found in namespace default." in default_ns.stderr
    missing = await kalikoctl(cluster, "get", "knp", "nope")
    assert missing.exit_code == 1 and "NOT_FOUND" in missing.stderr
    unknown = await kalikoctl(cluster, "get", "gadgets")
    assert unknown.exit_code == 2


async def test_label_needs_overwrite_to_change_a_value(cluster: AdminCluster) -> None:
    added = await kalikoctl(cluster, "label", "pod", "web-1", "zone=a", "-n", "shop")
    assert added.exit_code == 0 and "Successfully updated labels of Pod shop/web-1" in added.stdout
    refused = await kalikoctl(cluster, "label", "pod", "web-1", "zone=b", "-n", "shop")
    assert refused.exit_code == 1 and "--overwrite" in refused.stderr
    changed = await kalikoctl(cluster, "label", "pod", "web-1", "zone=b", "app-", "-n", "shop", "--overwrite")
    assert changed.exit_code == 0
    got = await cluster.stub.Get(
        pb.GetRequest(ref=pb.ResourceRef(kind="Pod", namespace="shop", name="web-1"))
    )
    assert json.loads(got.documents_json[0])["metadata"]["labels"] == {"zone": "b"}
    usage = await kalikoctl(cluster, "label", "pod", "web-1", "zone", "-n", "shop")
    assert usage.exit_code == 2


async def test_diff_exit_codes(cluster: AdminCluster, tmp_path: Path) -> None:
    await cluster.apply(WEB)
    same = await kalikoctl(cluster, "diff", "-f", write(tmp_path / "same.yaml", WEB))
    assert same.exit_code == 0 and same.stdout == ""
    changed = dict(WEB, spec={**WEB["spec"], "order": 5})
    result = await kalikoctl(cluster, "diff", "-f", write(tmp_path / "changed.yaml", changed, DB))
    assert result.exit_code == 1
    assert "--- live/NetworkPolicy/shop/web" in result.stdout and "+  order: 5" in result.stdout
    assert "+++ merged/NetworkPolicy/shop/db" in result.stdout
    invalid = await kalikoctl(cluster, "diff", "-f", write(tmp_path / "bad.yaml", {"kind": "Pod"}))
    assert invalid.exit_code == 2


async def test_server_dry_run_prints_the_per_node_diffs_and_writes_nothing(
    cluster: AdminCluster, tmp_path: Path
) -> None:
    before = cluster.store.revision
    result = await kalikoctl(cluster, "apply", "-f", write(tmp_path / "web.yaml", WEB), "--dry-run", "server")
    assert result.exit_code == 0, result.output
    assert (
        "nothing was written" in result.stdout and "NetworkPolicy shop/web: would be created" in result.stdout
    )
    assert "3 node(s) would receive changes" in result.stdout and "policy default/" in result.stdout
    as_json = await kalikoctl(
        cluster, "delete", "pod", "web-1", "-n", "shop", "--dry-run", "server", "-o", "json"
    )
    found = json.loads(as_json.stdout)
    assert found["dry_run"] is True and found["results"][0]["outcome"] == "deleted"
    assert "node-1" in found["nodes"]
    assert cluster.store.revision == before


async def test_wait_timeout_names_the_lagging_node_and_fails(cluster: AdminCluster, tmp_path: Path) -> None:
    await cluster.agents["node-2"].stop(graceful=True)
    await cluster.until(lambda: not cluster.controller.status.latest["node-2"].online)
    policy = write(tmp_path / "web.yaml", WEB)
    result = await kalikoctl(cluster, "apply", "-f", policy, "--wait", "--timeout", "0.3")
    assert result.exit_code == 1
    assert "timed out" in result.stderr and "lagging node(s): node-2" in result.stderr
    as_json = await kalikoctl(cluster, "apply", "-f", policy, "--wait", "--timeout", "0.2", "-o", "json")
    found = json.loads(as_json.stdout)
    assert as_json.exit_code == 1 and found["converged"] is False and found["lagging"] == ["node-2"]


async def test_node_status_json_shape(cluster: AdminCluster) -> None:
    result = await kalikoctl(cluster, "node", "status", "-o", "json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert set(found) == {"revision", "nodes"}
    assert [n["name"] for n in found["nodes"]] == NODES
    for entry in found["nodes"]:
        assert set(entry) == {"name", "online", "ready", "revision", "epoch", "seq", "last_error"}
        assert entry["online"] and entry["ready"] and entry["revision"] == found["revision"]
        assert entry["last_error"] is None
    text = await kalikoctl(cluster, "node", "status")
    assert "in sync" in text.stdout and "node-3" in text.stdout


async def test_server_list_falls_through_to_the_leader_and_none_is_exit_2(cluster: AdminCluster) -> None:
    runner = CliRunner()
    dead = "127.0.0.1:1"
    args = ["get", "nodes", "--server", f"{dead},{cluster.address}"]
    result = await asyncio.to_thread(runner.invoke, build_app(), args)
    assert result.exit_code == 0 and "node-1" in result.stdout
    nobody = await asyncio.to_thread(
        runner.invoke, build_app(), ["get", "nodes"], env={"KALIKO_SERVER": dead}
    )
    assert nobody.exit_code == 2 and "no leading controller answered" in nobody.stderr


async def test_reach_and_explain_without_files_ask_the_live_controller(cluster: AdminCluster) -> None:
    await cluster.apply(WEB)
    matrix = await kalikoctl(cluster, "reach", "--port", "80", "-o", "json")
    assert matrix.exit_code == 0, matrix.output
    found = json.loads(matrix.stdout)
    live = json.loads((await cluster.stub.Reach(pb.ReachRequest(port=80, protocol="TCP"))).json)
    assert found == live and found["allowed"]["shop/web-1"]["shop/web-2"] is False
    table = await kalikoctl(cluster, "reach", "--port", "80")
    assert "live" in table.stdout and "shop/client-3" in table.stdout
    args = ["explain", "--from", "shop/client-1", "--to", "shop/web-2", "--port", "80"]
    explained = await kalikoctl(cluster, *args, "-o", "json")
    assert json.loads(explained.stdout)["ingress"]["decision"]["policy"] == "shop/web"
    text = await kalikoctl(cluster, *args)
    assert "ALLOWED" in text.stdout and "NetworkPolicy shop/web" in text.stdout
    unknown = await kalikoctl(cluster, "explain", "--from", "shop/nope", "--to", "shop/web-2", "--port", "80")
    assert unknown.exit_code == 2 and "shop/nope" in unknown.stdout


async def test_lists_bigger_than_grpcs_default_4_mib_limit(cluster: AdminCluster, tmp_path: Path) -> None:
    blob = "x" * 450_000  # under the 512 KiB value limit; ten of them exceed 4 MiB
    namespaces = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": f"big-{i}", "annotations": {"blob": blob}},
        }
        for i in range(10)
    ]
    (tmp_path / "big.json").write_text(json.dumps(namespaces))
    applied = await kalikoctl(cluster, "apply", "-f", str(tmp_path / "big.json"))
    assert applied.exit_code == 0, applied.output
    listed = await kalikoctl(cluster, "get", "namespaces", "-o", "json")
    assert listed.exit_code == 0, listed.output
    assert len(listed.stdout) > 4 * 1024 * 1024
    names = {item["metadata"]["name"] for item in json.loads(listed.stdout)["items"]}
    assert {f"big-{i}" for i in range(10)} <= names


def test_every_kind_resolves_from_its_names_and_aliases() -> None:
    assert {resolve_kind(kind.upper()) for kind in KINDS} == set(KINDS)
    expected = {
        "np": "NetworkPolicy",
        "netpol": "NetworkPolicy",
        "networkpolicies": "NetworkPolicy",
        "knp": "KubernetesNetworkPolicy",
        "k8snetworkpolicy": "KubernetesNetworkPolicy",
        "gnp": "GlobalNetworkPolicy",
        "Tiers": "Tier",
        "ns": "Namespace",
        "po": "Pod",
        "no": "Node",
        "svc": "Service",
    }
    assert {alias: resolve_kind(alias) for alias in expected} == expected
