"""Pods of a live lab: placement, an address, a network namespace, the image's process, a hosts file.

Owns `PodManager`, the lab's kubelet and CNI plugin in one: for each Pod document it picks the
node (``spec.nodeName``, else the node with the fewest pods), takes an address from `lab.ipam`
(honouring ``cni.projectcalico.org/ipAddrs``), builds the pod's namespace and veth through
`lab.topology`, returns the document with ``spec.nodeName`` and ``status.podIP`` filled in (the
registration the CNI plugin writes to the datastore), and, once that write succeeded, starts the
pod's process with ``ip netns exec`` and waits until every declared port answers inside the pod.
Like a kubelet with ``restartPolicy: Always`` it restarts a pod process that died
(`restart_crashed`, with a back-off doubling from 0.5 s to 8 s, reset once a run lasted 10 s).
From the datastore's Services (`sync_services`) it writes the hosts files
(``/etc/netns/<pod netns>/hosts``, which ``ip netns exec`` bind-mounts over /etc/hosts; `lab.hosts`)
and serves NodePort Services on the host's loopback (`lab.node_ports`).

It does not own the HTTP face (`lab.cni`), the datastore write (the caller's admin API call), the
topology primitives (`lab.topology`) or process records (`lab.processes`).

The lifecycle of one pod: `admit` (validate everything first, then network; a failure removes
what this call built) → the caller writes the documents → `start` (or `rollback` when the write
failed) → ... → `remove`. What a Pod document asks for is read by `lab.pod_specs`.

Invariants: a re-applied pod keeps its node, address and namespace (its process restarts only
when its image, args or ports changed); one owner drives a manager (not thread-safe, as
`lab.topology.Lab`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.apps.images import POD_NAME_ENV, command
from lab.apps.probe import Target
from lab.apps.probe_matrix import Pair, ProbeRunError, probe_matrix
from lab.hosts import hosts_text, service_addresses, write_in_place
from lab.ipam import Ipam
from lab.node_ports import NodePorts, node_port_wishes
from lab.pod_specs import PodError, PodWish, placed_document, read_wish
from lab.processes import ManagedProcess, ProcessSet
from lab.topology import FABRIC, Lab, LabError, PodInfo
from policycore.model.kube import Pod, Service

__all__ = ["Admission", "LabPod", "PodError", "PodManager"]

READY_TIMEOUT = 60.0
RESTART_BACKOFF = 0.5
RESTART_BACKOFF_MAX = 8.0
RESTART_RESET_AFTER = 10.0
"""A run at least this long before a crash restarts the back-off at `RESTART_BACKOFF`."""
EXEC_TIMEOUT = 10.0
NETNS_ETC = Path("/etc/netns")
REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("kaliko.lab.pods")


@dataclass
class LabPod:
    """A pod the lab runs: its network (`PodInfo`), what runs in it and the process records."""

    info: PodInfo
    image: str
    args: tuple[str, ...]
    ports: tuple[tuple[int, str], ...]
    fingerprint: str
    process: ManagedProcess | None = None
    started_fingerprint: str = ""
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    restart_at: float | None = None
    """When a crashed process is due to restart (None: running, or not started)."""

    @property
    def key(self) -> str:
        return self.info.key

    def hosts_path(self) -> Path:
        return NETNS_ETC / self.info.netns / "hosts"

    def to_json(self, forward: str | None = None) -> dict[str, Any]:
        """The pod as ``GET /lab`` lists it; ``forward``: a host URL into it (a NodePort), if any."""
        alive = self.process is not None and self.process.alive()
        return {
            "key": self.key,
            "namespace": self.info.namespace,
            "name": self.info.name,
            "node": self.info.node,
            "netns": self.info.netns,
            "ip": self.info.ip,
            "iface": self.info.iface,
            "image": self.image,
            "ports": [{"port": p, "protocol": proto} for p, proto in self.ports],
            "pid": self.process.pid if self.process is not None else 0,
            "alive": alive,
            "restarts": self.restarts,
            "log": self.process.log if self.process is not None else "",
            "forward": forward,
        }


@dataclass
class Admission:
    """The result of `admit`: the documents to write and the pods this call created or changed."""

    documents: list[dict[str, Any]]
    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


class PodManager:
    """The pods of one lab; see the module docstring."""

    def __init__(
        self,
        topology: Lab,
        run_dir: Path,
        *,
        python: str = sys.executable,
    ) -> None:
        self.topology = topology
        self.ipam = Ipam(reserved=(str(FABRIC),))
        self.pods: dict[str, LabPod] = {}
        self.processes = ProcessSet(run_dir / "logs" / "pods")
        self.node_ports = NodePorts(self.processes.log_dir)
        self.python = python

    # -- nodes ----------------------------------------------------------------------------------

    def create_nodes(self, names: Iterable[str]) -> None:
        for name in names:
            info = self.topology.create_node(name)
            self.ipam.blocks[info.block] = name

    @property
    def nodes(self) -> list[str]:
        return list(self.topology.nodes)

    # -- admission ------------------------------------------------------------------------------

    def admit(self, documents: Sequence[Mapping[str, Any]]) -> Admission:
        """Place and network every new pod of ``documents``; return them with their placement.

        Every Pod document is checked before anything is built; if building one fails, the pods
        built by this call are removed again and `PodError` (or `LabError`) propagates.
        """
        wishes = self._validate(documents)
        out = Admission([dict(d) for d in documents])
        try:
            for wish in wishes:
                known = self.pods.get(wish.key)
                if known is None:
                    known = self._create(wish)
                    out.created.append(wish.key)
                elif known.started_fingerprint != wish.fingerprint:
                    known.image, known.args, known.ports = wish.image, wish.args, wish.ports
                    known.fingerprint = wish.fingerprint
                    out.changed.append(wish.key)
                out.documents[wish.index] = placed_document(wish.pod, known.info.node, known.info.ip)
        except BaseException:
            self.rollback(out.created)
            raise
        return out

    def _validate(self, documents: Sequence[Mapping[str, Any]]) -> list[PodWish]:
        problems: list[str] = []
        wishes: list[PodWish] = []
        for index, document in enumerate(documents):
            if not isinstance(document, Mapping) or document.get("kind") != "Pod":
                continue
            try:
                wish = read_wish(index, document)
            except PodError as err:
                problems += err.problems
                continue
            problems += self._check_placement(wish)
            wishes.append(wish)
        keys = [w.key for w in wishes]
        problems += [
            f"documents[{w.index}]: pod {w.key} appears twice" for w in wishes if keys.count(w.key) > 1
        ]
        if problems:
            raise PodError(problems)
        return wishes

    def _check_placement(self, wish: PodWish) -> list[str]:
        where = f"documents[{wish.index}]"
        node = wish.pod.spec.node_name
        known = self.pods.get(wish.key)
        if node and node not in self.topology.nodes:
            return [f"{where}.spec.nodeName: no node {node!r} in this lab ({', '.join(self.nodes)})"]
        if known is not None and node and node != known.info.node:
            return [f"{where}.spec.nodeName: pod {wish.key} runs on {known.info.node}; delete it to move it"]
        if known is not None and wish.requested_ip not in (None, known.info.ip):
            return [f"{where}.metadata.annotations: pod {wish.key} holds {known.info.ip}; delete it first"]
        if known is None and wish.requested_ip is not None:
            problem = self.ipam.check_request(wish.requested_ip)
            if problem is not None:
                return [f"{where}.{problem}"]
        return []

    def _create(self, wish: PodWish) -> LabPod:
        node = wish.pod.spec.node_name or self._least_loaded()
        ip = self.ipam.assign(wish.key, node, wish.requested_ip)
        namespace, name = wish.key.split("/", 1)
        try:
            info = self.topology.create_pod(node, namespace, name, ip)
        except BaseException:
            self.ipam.release(wish.key)
            raise
        pod = LabPod(info, wish.image, wish.args, wish.ports, wish.fingerprint)
        self.pods[wish.key] = pod
        write_in_place(pod.hosts_path(), hosts_text(info, {}))
        return pod

    def _least_loaded(self) -> str:
        load = {node: 0 for node in self.topology.nodes}
        for pod in self.pods.values():
            load[pod.info.node] += 1
        return min(load, key=lambda node: (load[node], self.nodes.index(node)))

    def rollback(self, keys: Iterable[str]) -> None:
        """Undo `admit` for pods whose registration was never written."""
        self.remove(keys)

    # -- processes ------------------------------------------------------------------------------

    async def start(self, keys: Iterable[str], timeout: float = READY_TIMEOUT) -> None:
        """Start (or restart, when changed) each pod's process; return once its ports answer."""
        started = []
        for key in keys:
            pod = self.pods.get(key)
            if pod is None:
                continue
            if pod.process is not None and pod.process.alive():
                if pod.started_fingerprint == pod.fingerprint:
                    continue
                self._stop_processes(pod)
            self._spawn(pod)
            started.append(pod)
        await self._wait_ready(started, timeout)

    def _spawn(self, pod: LabPod) -> None:
        ports = [(p, proto) for p, proto in pod.ports]
        argv = command(pod.image, pod.args, ports, python=self.python)
        name = pod.key.replace("/", ".")
        process = self.processes.spawn(
            name, ["ip", "netns", "exec", pod.info.netns, *argv], env={POD_NAME_ENV: pod.key}, cwd=REPO
        )
        process.argv = argv  # what /proc shows once `ip netns exec` has exec'ed the image
        deadline = time.monotonic() + EXEC_TIMEOUT
        while not process.alive():
            if time.monotonic() > deadline:
                raise LabError(f"pod {pod.key}: its process did not start; see {process.log}")
            time.sleep(0.005)
        pod.process = process
        pod.started_fingerprint = pod.fingerprint
        pod.started_at = time.monotonic()
        pod.restart_at = None

    async def _wait_ready(self, pods: list[LabPod], timeout: float) -> None:
        """Until every declared port of every pod answers on the pod's own loopback."""
        waiting = {pod.key: pod for pod in pods if pod.ports}
        deadline = time.monotonic() + timeout
        while waiting:
            pairs = [
                Pair(pod.info.netns, Target("127.0.0.1", port, proto))
                for pod in waiting.values()
                for port, proto in pod.ports
            ]
            try:
                results = await probe_matrix(pairs, timeout=0.5)
            except ProbeRunError as err:  # a slow machine: the probe process itself timed out
                problem = str(err)
            else:
                problem = "their ports did not answer"
                ready = set(waiting)
                for pair, result in zip(pairs, results, strict=True):
                    if not result.ok:
                        ready.discard(next(k for k, p in waiting.items() if p.info.netns == pair.source))
                for key in ready:
                    del waiting[key]
            for key, pod in list(waiting.items()):
                if pod.process is None or not pod.process.alive():
                    output = pod.process.log if pod.process is not None else "(no log)"
                    raise LabError(f"pod {key}: its process exited; see {output}")
            if waiting and time.monotonic() > deadline:
                raise LabError(f"pods {', '.join(waiting)} not serving within {timeout:.0f}s: {problem}")
            if waiting:
                await asyncio.sleep(0.1)

    def restart_crashed(self, now: float) -> list[str]:
        """Restart each started pod whose process died, once its back-off is over; returns them."""
        restarted = []
        for pod in self.pods.values():
            if pod.process is None or pod.process.alive():
                continue
            if pod.restart_at is None:
                ran = now - pod.started_at
                pod.backoff = (
                    RESTART_BACKOFF
                    if ran >= RESTART_RESET_AFTER or not pod.backoff
                    else min(pod.backoff * 2, RESTART_BACKOFF_MAX)
                )
                pod.restart_at = now + pod.backoff
                log.warning(
                    "pod %s: its process exited after %.1fs; restarting in %.1fs", pod.key, ran, pod.backoff
                )
            if now < pod.restart_at:
                continue
            if pod.process in self.processes.processes:
                self.processes.processes.remove(pod.process)
            try:
                self._spawn(pod)
            except (LabError, OSError) as err:
                log.warning("pod %s: restart failed: %s", pod.key, err)
                pod.started_at, pod.restart_at = now, None
                continue
            pod.restarts += 1
            restarted.append(pod.key)
        return restarted

    def _stop_processes(self, pod: LabPod) -> None:
        if pod.process is not None:
            pod.process.stop(timeout=5.0)
            if pod.process in self.processes.processes:
                self.processes.processes.remove(pod.process)
        pod.process, pod.restart_at = None, None

    # -- removal --------------------------------------------------------------------------------

    def remove(self, keys: Iterable[str]) -> list[str]:
        """Stop each pod's processes, remove its namespace and hosts file, free its address."""
        removed = []
        for key in keys:
            pod = self.pods.pop(key, None)
            if pod is None:
                continue
            self.node_ports.stop_pod(key)
            self._stop_processes(pod)
            if key in self.topology.pods:
                self.topology.delete_pod(pod.info.namespace, pod.info.name)
            shutil.rmtree(NETNS_ETC / pod.info.netns, ignore_errors=True)
            self.ipam.release(key)
            removed.append(key)
        return removed

    def teardown(self) -> None:
        """Every forward and pod, then the topology (nodes and fabric)."""
        self.node_ports.stop_all()
        self.remove(list(self.pods))
        self.processes.stop(timeout=5.0)
        self.topology.teardown()

    # -- hosts files ----------------------------------------------------------------------------

    def sync_services(self, services: Sequence[Service], pods: Sequence[Pod]) -> int:
        """Hosts files and NodePorts for the datastore's Services and Pods; returns how many changed."""
        netns_of = {key: pod.info.netns for key, pod in self.pods.items()}
        changed = self.node_ports.sync(node_port_wishes(services, pods), netns_of)
        names = service_addresses(services, pods)
        for pod in self.pods.values():
            text = hosts_text(pod.info, names)
            path = pod.hosts_path()
            if not path.exists() or path.read_text() != text:
                write_in_place(path, text)
                changed += 1
        return changed

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": [
                {"name": n.name, "netns": n.netns, "fabric_ip": n.fabric_ip, "block": n.block}
                for n in self.topology.nodes.values()
            ],
            "pods": [pod.to_json(self.node_ports.url_of(key)) for key, pod in sorted(self.pods.items())],
            "node_ports": self.node_ports.to_json(),
        }
