"""`lab.namespace_cascade`: a write that deleted Namespaces is followed by one delete of everything of
a namespaced kind in them (and nothing when no Namespace was deleted); deleted Pods are listed."""

from __future__ import annotations

import json

from lab.namespace_cascade import NAMESPACED_KINDS, cascade, deleted_pods
from wire.gen.kaliko.v1 import admin_pb2 as pb

STORE = {
    ("Pod", "gone"): ["a", "b"],
    ("Service", "gone"): ["a"],
    ("KubernetesNetworkPolicy", "gone"): ["deny"],
    ("Pod", "kept"): ["c"],
}


def list_documents(kind: str, namespace: str) -> list[str]:
    return [
        json.dumps({"metadata": {"name": n, "namespace": namespace}})
        for n in STORE.get((kind, namespace), [])
    ]


def result(kind: str, name: str, namespace: str = "", outcome: str = "deleted") -> pb.WriteResult:
    return pb.WriteResult(ref=pb.ResourceRef(kind=kind, namespace=namespace, name=name), outcome=outcome)


def test_the_namespaced_kinds_are_the_models() -> None:
    assert set(NAMESPACED_KINDS) == {"Pod", "Service", "KubernetesNetworkPolicy", "NetworkPolicy"}


def test_deleting_a_namespace_deletes_everything_in_it_in_one_write() -> None:
    sent: list[pb.DeleteRequest] = []

    def delete(request: pb.DeleteRequest) -> pb.WriteReply:
        sent.append(request)
        return pb.WriteReply(results=[result(r.kind, r.name, r.namespace) for r in request.refs], revision=12)

    reply = pb.WriteReply(results=[result("Namespace", "gone"), result("Pod", "x", "other")], revision=11)
    more = cascade(reply, list_documents, delete)
    assert len(sent) == 1 and sent[0].skip_not_exists
    assert sorted((r.kind, r.namespace, r.name) for r in sent[0].refs) == [
        ("KubernetesNetworkPolicy", "gone", "deny"),
        ("Pod", "gone", "a"),
        ("Pod", "gone", "b"),
        ("Service", "gone", "a"),
    ]
    assert more is not None and more.revision == 12
    assert deleted_pods(reply, more) == ["other/x", "gone/a", "gone/b"]


def test_nothing_is_deleted_without_a_deleted_namespace_or_anything_in_it() -> None:
    def delete(request: pb.DeleteRequest) -> pb.WriteReply:
        raise AssertionError("no delete expected")

    assert cascade(pb.WriteReply(results=[result("Pod", "c", "kept")]), list_documents, delete) is None
    absent = pb.WriteReply(
        results=[result("Namespace", "gone", outcome="absent"), result("Namespace", "empty")]
    )
    assert cascade(absent, list_documents, delete) is None
    assert deleted_pods(None, pb.WriteReply(results=[result("Pod", "c", "kept", outcome="absent")])) == []
