"""`LiveLab`: a live lab on the nftables data plane, driven from Python as ``kalikoctl`` drives it.

Owns the synchronous handle the live demos and the live fv tests use. Entering starts a lab
(`lab.cluster.up` with ``dataplane="nftables"``) in its own run directory and on a free admin
port, so no other lab is touched: its cluster name (`lab.cluster.run_dir_name`, the same as its
namespace prefix) keeps its etcd keys, Kafka topic and MQTT topics apart from every other
cluster's. On the ``services`` backend it also runs an etcd of its own (so nothing of it stays
on the shared etcd) and names its nodes ``<prefix>-node-i``. `apply` writes documents as
``kalikoctl apply --wait`` does: Pods admitted by the lab's CNI daemon first (`lab.cni.PodBatch`),
the batch through the admin API's ``Apply``, ``WaitConverged`` on the written revision, then the
new pods started and serving. `delete` is ``kalikoctl delete --wait`` (what lived in deleted
Namespaces goes too, `lab.namespace_cascade`; the deleted pods' namespaces go too).
`probe_all` / `probe_edges` make real connections between pods (`lab.live_probe`). Leaving
the context stops the lab: every namespace, process and nft table it made is gone.

::

    apply(docs) ─▶ CNI /admit ─▶ admin Apply ─▶ WaitConverged(revision) ─▶ CNI /start
                   (node, IP,     (controller ─bus─▶ agents ─nft─▶ node netns)    (hosts, processes)
                    netns, veth)

It does not own the lab's processes (`lab.cluster`), pods (`lab.pods`) or demos (`lab.live_demo`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from lab.cluster import ClusterSpec, LabError, LabState, down, up
from lab.cni import CniClient, PodBatch
from lab.live_probe import PROBE_TIMEOUT, Edge, probe_all, probe_edges
from lab.namespace_cascade import cascade, deleted_pods
from lab.nft_launchers import cni_client, lab_prefix
from lab.processes import ManagedProcess, ProcessSet, etcd_healthy, free_port, spawn_etcd
from wire.gen.kaliko.v1 import admin_pb2 as admin_pb
from wire.gen.kaliko.v1 import admin_pb2_grpc as admin_grpc

CONVERGE_TIMEOUT = 30.0
ETCD_TIMEOUT = 30.0


class NotConverged(LabError):
    """A write did not converge in time; the message names the lagging nodes."""


@dataclass(frozen=True)
class Written:
    """One write: the datastore revision and the seconds from sending it to the converged answer."""

    revision: int
    converged_seconds: float


class LiveLab:
    """One live lab; use as a context manager (up on enter, down on exit)."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        nodes: int = 2,
        backend: str = "embedded",
        timeout: float = CONVERGE_TIMEOUT,
    ) -> None:
        self.run_dir = str(run_dir)
        self.nodes = nodes
        self.backend = backend
        self.timeout = timeout
        self.state: LabState | None = None
        self._cni: CniClient | None = None
        self._channel: grpc.Channel | None = None

    @property
    def prefix(self) -> str:
        """The name prefix of every namespace of this lab."""
        return lab_prefix(self.run_dir)

    def __enter__(self) -> LiveLab:
        down(self.run_dir)  # a lab left running here (demo --serve), or a crashed run's leftovers
        spec = ClusterSpec(
            nodes=self.nodes,
            backend=self.backend,
            dataplane="nftables",
            listen=f"127.0.0.1:{free_port()}",
            run_dir=self.run_dir,
        )
        etcd = None
        if self.backend == "services":
            etcd, spec.etcd = self._private_etcd()
            spec.node_prefix = f"{self.prefix}-node"
        try:
            self.state = up(spec)
        except BaseException:
            if etcd is not None:
                etcd.stop()
            raise
        if etcd is not None:  # first in the lab's records, so `down` stops it last
            self.state.processes.processes.insert(0, etcd)
            self.state.save()
        try:
            self._cni = cni_client(self.state)
            if self._cni is None:
                raise LabError("the lab has no CNI daemon")
            self._channel = grpc.insecure_channel(self.state.admin)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _private_etcd(self) -> tuple[ManagedProcess, str]:
        """An etcd of this lab's own: a shared one holds other clusters' nodes, pods and epochs."""
        data = Path(self.run_dir) / "etcd"
        shutil.rmtree(data, ignore_errors=True)
        process, endpoint = spawn_etcd(ProcessSet(Path(self.run_dir) / "logs"), data)
        deadline = time.monotonic() + ETCD_TIMEOUT
        while not etcd_healthy(endpoint):
            if not process.alive() or time.monotonic() > deadline:
                process.stop()
                raise LabError(f"the lab's etcd did not become healthy; see {process.log}")
            time.sleep(0.1)
        return process, endpoint

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        down(self.run_dir)
        self.state = None

    @property
    def cni(self) -> CniClient:
        assert self._cni is not None, "enter the LiveLab first"
        return self._cni

    def admin(self, method: str, request: Any, timeout: float = 60.0) -> Any:
        """Call ``AdminService.<method>`` on the lab's controller."""
        assert self._channel is not None, "enter the LiveLab first"
        return getattr(admin_grpc.AdminServiceStub(self._channel), method)(request, timeout=timeout)

    # -- writes ---------------------------------------------------------------------------------

    def apply(self, documents: Sequence[Mapping[str, Any]]) -> Written:
        """``kalikoctl apply --wait``: pods admitted, the batch written, converged, pods serving."""
        batch = PodBatch.admit(self.cni, [dict(d) for d in documents])
        started = time.monotonic()
        try:
            reply = self.admin(
                "Apply", admin_pb.WriteRequest(documents_json=[json.dumps(d) for d in batch.documents])
            )
        except BaseException:
            batch.abort()
            raise
        written = self._converge(int(reply.revision), started)
        batch.commit()
        return written

    def delete(self, refs: Sequence[tuple[str, str, str]]) -> Written:
        """``kalikoctl delete --wait`` of ``(kind, namespace, name)``s; deleted pods leave the lab."""
        request = admin_pb.DeleteRequest(
            refs=[admin_pb.ResourceRef(kind=k, namespace=ns, name=n) for k, ns, n in refs],
            skip_not_exists=True,
        )
        started = time.monotonic()
        reply = self.admin("Delete", request)
        more = cascade(reply, self._list_documents, lambda r: self.admin("Delete", r))
        written = self._converge(int((more or reply).revision), started)
        self.cni.remove(deleted_pods(reply, more))
        return written

    def _list_documents(self, kind: str, namespace: str) -> list[str]:
        return list(self.admin("List", admin_pb.ListRequest(kind=kind, namespace=namespace)).documents_json)

    def _converge(self, revision: int, started: float) -> Written:
        reply = self.admin(
            "WaitConverged",
            admin_pb.WaitConvergedRequest(revision=revision, timeout_seconds=self.timeout),
            timeout=self.timeout + 10,
        )
        seconds = time.monotonic() - started
        if not reply.converged:
            lagging = ", ".join(reply.lagging) or "none"
            raise NotConverged(
                f"revision {revision} not converged within {self.timeout}s (lagging: {lagging})"
            )
        return Written(revision, seconds)

    # -- reads ----------------------------------------------------------------------------------

    def pods(self) -> dict[str, dict[str, Any]]:
        """The lab's pods by ``namespace/name`` (node, netns, ip, iface, ports, process, forward)."""
        return {pod["key"]: pod for pod in self.cni.lab()["pods"]}

    def node_netns(self) -> dict[str, str]:
        return {node["name"]: node["netns"] for node in self.cni.lab()["nodes"]}

    def node_report(self) -> list[dict[str, Any]]:
        """Each node as the UI's cluster panel shows it: name, ready, applied revision."""
        assert self.state is not None
        ours = set(self.state.spec.node_names)  # a shared MQTT broker also carries other clusters' nodes
        reply = self.admin("NodeStatus", admin_pb.NodeStatusRequest(), timeout=10)
        return [
            {"name": n.name, "ready": n.ready, "revision": max(int(n.revision), 0)}
            for n in reply.nodes
            if n.name in ours
        ]

    def probe_all(self, port: int, protocol: str = "TCP", timeout: float = PROBE_TIMEOUT) -> dict[str, Any]:
        """Every ordered pair of pods, for real, as ``kalikoctl reach -o json`` prints it."""
        matrix, _ = asyncio.run(probe_all(self.cni.lab(), port, protocol, timeout))
        return matrix

    def probe_edges(
        self, wanted: Sequence[tuple[str, str, int, str]], timeout: float = PROBE_TIMEOUT
    ) -> list[Edge]:
        return asyncio.run(probe_edges(self.cni.lab(), wanted, timeout))
