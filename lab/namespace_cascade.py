"""Deleting a Namespace in a live lab deletes what lives in it, as Kubernetes' namespace controller does.

Owns the rule, shared by ``kalikoctl delete`` (`kalikoctl.lab_writes`) and `lab.live_lab.LiveLab`:
after a write that deleted Namespaces, every resource of a namespaced kind (Pod, Service,
KubernetesNetworkPolicy, NetworkPolicy — `policycore.model.KINDS`) still in one of them is
deleted through the admin API in one more write, so its pods leave the lab (their namespaces,
veths and processes, through the lab's CNI daemon) and no policy of a gone namespace lingers in
the datastore for a namespace of the same name created later.

It does not own the admin API calls (its callers pass ``list_names`` and ``delete``) or removing
pods from the lab (`lab.cni`). Invariant: one delete for the whole cascade; nothing is deleted
when no Namespace was.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence

from policycore.model import KINDS, is_namespaced
from wire.gen.kaliko.v1 import admin_pb2 as pb

ListDocuments = Callable[[str, str], Sequence[str]]
"""``(kind, namespace) → documents_json`` (the admin API's ``List``)."""
Delete = Callable[[pb.DeleteRequest], pb.WriteReply]

NAMESPACED_KINDS = tuple(kind for kind in KINDS if is_namespaced(kind))


def deleted_namespaces(reply: pb.WriteReply) -> list[str]:
    """The Namespaces a write deleted."""
    return [r.ref.name for r in reply.results if r.ref.kind == "Namespace" and r.outcome == "deleted"]


def contents(list_documents: ListDocuments, namespaces: Iterable[str]) -> list[pb.ResourceRef]:
    """Every resource of a namespaced kind in ``namespaces``."""
    refs = []
    for namespace in namespaces:
        for kind in NAMESPACED_KINDS:
            for document in list_documents(kind, namespace):
                name = json.loads(document)["metadata"]["name"]
                refs.append(pb.ResourceRef(kind=kind, namespace=namespace, name=name))
    return refs


def cascade(reply: pb.WriteReply, list_documents: ListDocuments, delete: Delete) -> pb.WriteReply | None:
    """Delete what lived in the Namespaces ``reply`` deleted; None when there was nothing to delete."""
    refs = contents(list_documents, deleted_namespaces(reply))
    if not refs:
        return None
    return delete(pb.DeleteRequest(refs=refs, skip_not_exists=True))


def deleted_pods(*replies: pb.WriteReply | None) -> list[str]:
    """``namespace/name`` of every Pod the writes deleted."""
    return [
        f"{r.ref.namespace or 'default'}/{r.ref.name}"
        for reply in replies
        if reply is not None
        for r in reply.results
        if r.ref.kind == "Pod" and r.outcome == "deleted"
    ]
