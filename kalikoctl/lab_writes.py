"""Writes into a running lab that has a pod network: Pods go through the lab's CNI daemon too.

Owns the one rule the write commands follow when the ``--server`` they write to is the admin
address of a running ``lab up --dataplane nftables`` (found from its state file: ``.run/lab``, or
``$KALIKO_LAB_RUN_DIR``):

* ``apply`` / ``create`` / ``replace``: before the write, the CNI daemon admits the batch's Pods
  (node, address, namespace and veth; the documents come back with ``spec.nodeName`` and
  ``status.podIP``, the registration a CNI plugin writes); the whole batch is then written as
  usual; after it, the daemon rewrites the hosts files from the datastore and starts the new pods'
  processes, returning once their ports answer. If the write is refused, the new pods are removed.
* ``delete``: after the write, what lived in the Namespaces it deleted is deleted too, in one
  more write (`lab.namespace_cascade`, Kubernetes' namespace controller in miniature; the reply
  is extended with that write's results and revision, so ``--wait`` waits for it and the summary
  counts it); then every Pod deleted is stopped and removed, and hosts files follow.

Without such a lab, or for ``--dry-run=server``, nothing changes: documents go as they are. It
does not own the write commands (`kalikoctl.commands.write`) or the daemon (`lab.cni`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import typer

from kalikoctl.client import AdminClient, ServerError
from kalikoctl.output import EXIT_ERROR, EXIT_NO, fail, print_problems
from lab.cluster import RUN_DIR, LabError, LabState
from lab.cni import CniClient, CniError, PodBatch
from lab.namespace_cascade import cascade, deleted_pods
from lab.nft_launchers import cni_client
from policycore.model import Problem, SourcedDocument
from wire.gen.kaliko.v1 import admin_pb2 as pb

RUN_DIR_ENV = "KALIKO_LAB_RUN_DIR"
_DOCUMENT = re.compile(r"^documents\[(\d+)\]\.?")


def lab_cni(server: str) -> CniClient | None:
    """The CNI daemon of the running lab whose admin address is among ``server``'s, if any."""
    run_dir = Path(os.environ.get(RUN_DIR_ENV) or RUN_DIR)
    try:
        state = LabState.load(run_dir)
    except LabError:
        return None
    if state is None or state.admin not in [a.strip() for a in server.split(",")]:
        return None
    return cni_client(state)


def admit(
    documents: Sequence[SourcedDocument], server: str, *, dry_run: bool
) -> tuple[PodBatch, list[SourcedDocument]]:
    """The batch's pods admitted by the lab (if one runs there) and the documents to write."""
    cni = None if dry_run else lab_cni(server)
    try:
        batch = PodBatch.admit(cni, [d.doc for d in documents])
    except CniError as err:
        if err.status == 422:
            print_problems(_problems(err.problems, [d.source for d in documents]))
            raise typer.Exit(EXIT_NO) from None
        fail(f"the lab could not create the pods: {err}", EXIT_ERROR)
    placed = [SourcedDocument(d.source, doc) for d, doc in zip(documents, batch.documents, strict=True)]
    return batch, placed


def commit(batch: PodBatch) -> None:
    """After a successful write: the new pods run (exit 2 naming the pods if they could not start)."""
    try:
        batch.commit()
    except CniError as err:
        fail(f"written, but the lab could not start the pods: {err}", EXIT_ERROR)


def abort(batch: PodBatch) -> None:
    try:
        batch.abort()
    except CniError as err:
        fail(f"the write failed and the lab could not remove the pods it created: {err}", EXIT_ERROR)


def deleted(reply: pb.WriteReply, server: str) -> None:
    """After a successful delete: deleted Namespaces' contents go too, then the deleted Pods'
    namespaces and processes (``reply`` is extended with the cascade's results and revision)."""
    cni = lab_cni(server)
    if cni is None:
        return
    with AdminClient(server) as client:

        def list_documents(kind: str, namespace: str) -> list[str]:
            found = client.call("List", pb.ListRequest(kind=kind, namespace=namespace))
            return list(found.documents_json)

        try:
            more = cascade(reply, list_documents, lambda request: client.call("Delete", request))
        except ServerError as err:
            fail(f"deleted, but not what lived in the deleted namespaces: {err}", EXIT_ERROR)
    if more is not None:
        reply.results.extend(more.results)
        reply.revision = more.revision
    try:
        cni.remove(deleted_pods(reply))
    except CniError as err:
        fail(f"deleted, but the lab could not remove the pods: {err}", EXIT_ERROR)


def _problems(lines: Sequence[str], sources: Sequence[str]) -> list[Problem]:
    out = []
    for line in lines:
        path, _, reason = line.partition(": ")
        match = _DOCUMENT.match(path)
        source = ""
        if match is not None and int(match.group(1)) < len(sources):
            source = sources[int(match.group(1))]
            path = path[match.end() :]
        out.append(Problem(path, reason or line, source))
    return out
