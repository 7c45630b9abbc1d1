"""The admin API's writes on a live in-process cluster: batches are all or nothing, every error code,
dry runs persist nothing, labels, and convergence after a write.

Real Controller + Engine + CalcGraph + agents over the in-memory twins (see `admin_harness`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest
from admin_harness import AdminCluster, allow_from, cluster_manifests, docs, node, pod, running_cluster

from wire.gen.kaliko.v1 import admin_pb2 as pb

NODES = ["node-1", "node-2", "node-3"]
WEB = allow_from("shop", "web", "app == 'web'", "app == 'client'", 80)


@pytest.fixture
async def cluster() -> AsyncIterator[AdminCluster]:
    async with running_cluster(NODES) as c:
        await c.apply(*cluster_manifests(NODES))
        await c.agents_ready()
        yield c


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


def problems(err: grpc.aio.AioRpcError) -> list[dict[str, object]]:
    found = dict(err.trailing_metadata() or ())
    return json.loads(found["kaliko-problems"])  # type: ignore[arg-type]


async def test_apply_then_wait_converged_reports_every_node(cluster: AdminCluster) -> None:
    reply = await cluster.apply(WEB)
    assert [r.outcome for r in reply.results] == ["created"]
    assert reply.results[0].ref == pb.ResourceRef(kind="NetworkPolicy", namespace="shop", name="web")
    stored = json.loads(reply.results[0].document_json)
    assert stored["metadata"]["resourceVersion"] == str(reply.revision)

    done = await cluster.stub.WaitConverged(
        pb.WaitConvergedRequest(revision=reply.revision, timeout_seconds=10)
    )
    assert done.converged and done.revision == reply.revision and not done.lagging
    assert [n.node for n in done.nodes] == NODES
    assert all(n.converged and n.ready and n.online and n.revision >= reply.revision for n in done.nodes)
    # what the agents programmed is what the controller compiled, policy included
    for name in NODES:
        programmed = cluster.dataplanes[name].programmed()
        assert programmed.content_hash() == cluster.controller.engine.expected_hash(name)  # type: ignore[union-attr]
        assert any(p.endswith("/shop/web") for p in programmed.policies)


async def test_an_invalid_document_rejects_the_whole_batch(cluster: AdminCluster) -> None:
    before = cluster.store.revision
    bad_action = allow_from("shop", "bad", "app == 'web'", "app == 'client'", 80)
    bad_action["spec"]["ingress"][0]["action"] = "Maybe"
    bad_selector = allow_from("shop", "worse", "app ==", "all()", 99999)
    request = pb.WriteRequest(documents_json=[*docs(WEB, bad_action, bad_selector), "{not json"])
    err = await refused(cluster.stub.Apply(request))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    found = problems(err)
    where = {(p["document"], p["path"]) for p in found}
    assert (1, "spec.ingress[0].action") in where
    assert {p["document"] for p in found} == {1, 2, 3}  # every bad document, the good one not
    assert any(p["document"] == 2 and "selector" in str(p["path"]) for p in found)
    assert any(p["document"] == 2 and "ports" in str(p["path"]) for p in found)
    assert "documents[1]: spec.ingress[0].action" in (err.details() or "")
    assert cluster.store.revision == before
    missing = await refused(
        cluster.stub.Get(
            pb.GetRequest(ref=pb.ResourceRef(kind="NetworkPolicy", namespace="shop", name="web"))
        )
    )
    assert missing.code() is grpc.StatusCode.NOT_FOUND


async def test_a_batch_naming_one_resource_twice_is_invalid(cluster: AdminCluster) -> None:
    err = await refused(cluster.stub.Apply(pb.WriteRequest(documents_json=docs(WEB, WEB))))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [(p["document"], p["path"]) for p in problems(err)] == [(1, "metadata.name")]
    empty = await refused(cluster.stub.Apply(pb.WriteRequest()))
    assert empty.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_create_of_an_existing_resource_writes_nothing(cluster: AdminCluster) -> None:
    before = cluster.store.revision
    fresh = node("node-9")
    err = await refused(cluster.stub.Create(pb.WriteRequest(documents_json=docs(fresh, node("node-1")))))
    assert err.code() is grpc.StatusCode.ALREADY_EXISTS
    assert "node-1" in (err.details() or "")
    assert cluster.store.revision == before
    created = await cluster.stub.Create(pb.WriteRequest(documents_json=docs(fresh)))
    assert [r.outcome for r in created.results] == ["created"]


async def test_replace_needs_existence_and_a_current_resource_version(cluster: AdminCluster) -> None:
    err = await refused(cluster.stub.Replace(pb.WriteRequest(documents_json=docs(WEB))))
    assert err.code() is grpc.StatusCode.NOT_FOUND
    first = await cluster.apply(WEB)
    stale = json.loads(first.results[0].document_json)
    changed = json.loads(first.results[0].document_json)
    changed["spec"]["ingress"][0]["destination"]["ports"] = [8080]
    second = await cluster.stub.Replace(pb.WriteRequest(documents_json=docs(changed)))
    assert [r.outcome for r in second.results] == ["replaced"] and second.revision > first.revision
    before = cluster.store.revision
    for call in (cluster.stub.Replace, cluster.stub.Apply):
        conflict = await refused(call(pb.WriteRequest(documents_json=docs(stale))))
        assert conflict.code() is grpc.StatusCode.ABORTED
        assert [p["path"] for p in problems(conflict)] == ["metadata.resourceVersion"]
    assert cluster.store.revision == before


async def test_apply_of_identical_content_is_unchanged_and_writes_nothing(cluster: AdminCluster) -> None:
    first = await cluster.apply(WEB)
    before = cluster.store.revision
    again = await cluster.apply(WEB)
    assert [r.outcome for r in again.results] == ["unchanged"]
    assert again.revision == first.revision and cluster.store.revision == before


async def test_delete_by_ref_and_by_document_with_skip_not_exists(cluster: AdminCluster) -> None:
    created = await cluster.apply(WEB)
    ref = pb.ResourceRef(kind="NetworkPolicy", namespace="shop", name="web")
    gone = pb.ResourceRef(kind="NetworkPolicy", namespace="shop", name="never")
    err = await refused(cluster.stub.Delete(pb.DeleteRequest(refs=[ref, gone])))
    assert err.code() is grpc.StatusCode.NOT_FOUND
    assert (await cluster.stub.Get(pb.GetRequest(ref=ref))).documents_json  # still there
    stale = json.loads(created.results[0].document_json)
    stale["metadata"]["resourceVersion"] = str(created.revision - 1)
    conflict = await refused(cluster.stub.Delete(pb.DeleteRequest(documents_json=docs(stale))))
    assert conflict.code() is grpc.StatusCode.ABORTED
    reply = await cluster.stub.Delete(pb.DeleteRequest(refs=[ref, gone], skip_not_exists=True))
    assert [r.outcome for r in reply.results] == ["deleted", "absent"]
    done = await cluster.stub.WaitConverged(
        pb.WaitConvergedRequest(revision=reply.revision, timeout_seconds=10)
    )
    assert done.converged
    assert not any(p.endswith("/shop/web") for p in cluster.dataplanes["node-1"].programmed().policies)
    bad_ref = await refused(
        cluster.stub.Delete(pb.DeleteRequest(refs=[pb.ResourceRef(kind="Gadget", name="x")]))
    )
    assert bad_ref.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert problems(bad_ref)[0]["collection"] == "refs"


async def test_dry_run_persists_nothing_and_returns_the_per_node_diffs(cluster: AdminCluster) -> None:
    # only node-2 holds a pod the policy selects
    only_node_2 = allow_from("shop", "web-2-only", "app == 'web' && zone == 'b'", "all()", 443)
    await cluster.apply(pod("shop", "web-2", "node-2", "10.10.2.1", {"app": "web", "zone": "b"}))
    before = cluster.store.revision
    reply = await cluster.stub.Apply(pb.WriteRequest(documents_json=docs(only_node_2), dry_run=True))
    assert cluster.store.revision == before
    assert [r.outcome for r in reply.results] == ["created"]
    assert [d.node for d in reply.dry_run_diffs] == ["node-2"]
    kinds = {op.WhichOneof("op") for op in reply.dry_run_diffs[0].ops}
    assert {"policy_update", "endpoint_update"} <= kinds
    missing = await refused(
        cluster.stub.Get(
            pb.GetRequest(ref=pb.ResourceRef(kind="NetworkPolicy", namespace="shop", name="web-2-only"))
        )
    )
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    # a dry-run delete of a pod: node-1's endpoint and every node's ip sets that held its IP
    gone = await cluster.stub.Delete(
        pb.DeleteRequest(refs=[pb.ResourceRef(kind="Pod", namespace="shop", name="web-1")], dry_run=True)
    )
    assert [r.outcome for r in gone.results] == ["deleted"] and cluster.store.revision == before
    assert "node-1" in {d.node for d in gone.dry_run_diffs}
    # dry runs do not disturb the engine: a real write afterwards converges as usual
    real = await cluster.apply(only_node_2)
    done = await cluster.stub.WaitConverged(
        pb.WaitConvergedRequest(revision=real.revision, timeout_seconds=10)
    )
    assert done.converged


async def test_label_set_overwrite_and_remove(cluster: AdminCluster) -> None:
    ref = pb.ResourceRef(kind="Pod", namespace="shop", name="web-1")
    set_zone = await cluster.stub.Label(pb.LabelRequest(ref=ref, set={"zone": "a"}))
    assert [r.outcome for r in set_zone.results] == ["replaced"]
    before = cluster.store.revision
    taken = await refused(cluster.stub.Label(pb.LabelRequest(ref=ref, set={"zone": "b"})))
    assert taken.code() is grpc.StatusCode.FAILED_PRECONDITION and "overwrite" in (taken.details() or "")
    bad = await refused(cluster.stub.Label(pb.LabelRequest(ref=ref, set={"zone": "not a value!"})))
    assert bad.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert any("labels" in str(p["path"]) for p in problems(bad))
    same = await cluster.stub.Label(pb.LabelRequest(ref=ref, set={"zone": "a"}))
    assert [r.outcome for r in same.results] == ["unchanged"] and cluster.store.revision == before
    moved = await cluster.stub.Label(
        pb.LabelRequest(ref=ref, set={"zone": "b"}, remove=["app"], overwrite=True)
    )
    labels = json.loads(moved.results[0].document_json)["metadata"]["labels"]
    assert labels == {"zone": "b"}
    missing = await refused(
        cluster.stub.Label(
            pb.LabelRequest(ref=pb.ResourceRef(kind="Pod", namespace="shop", name="nope"), set={"a": "b"})
        )
    )
    assert missing.code() is grpc.StatusCode.NOT_FOUND
