"""Pods of a live lab: placement, an address, a network namespace, the image's process, a hosts file.

Owns `PodManager`, the lab's kubelet and CNI plugin in one: for each Pod document it picks the
node (``spec.nodeName``, else the node with the fewest pods), takes an address from `lab.ipam`
(honouring ``cni.projectcalico.org/ipAddrs``), builds the pod's namespace and veth through
`lab.topology`, returns the document with ``spec.nodeName`` and ``status.podIP`` filled in (the
registration the CNI plugin writes to the datastore), and, once that write succeeded, starts the
pod's process with ``ip netns exec`` and waits until every declared port answers inside the pod.
A `kaliko/management-ui` pod also gets a loopback port-forward (`lab.forwarder`). Hosts files
(``/etc/netns/<pod netns>/hosts``, which ``ip netns exec`` bind-mounts over /etc/hosts) name every
Service (`lab.hosts`).

It does not own the HTTP face (`lab.cni`), the datastore write (the caller's admin API call), the
topology primitives (`lab.topology`) or process records (`lab.processes`).

The lifecycle of one pod: `admit` (validate everything first, then network; a failure removes
what this call built) → the caller writes the documents → `start` (or `rollback` when the write
failed) → ... → `remove`. A pod runs one process: its first container's image (`kaliko/probe`
when none is given); `kaliko/probe` serves the ports of every container.

Invariants: a re-applied pod keeps its node, address and namespace (its process restarts only
when its image, args or ports changed); one owner drives a manager (not thread-safe, as
`lab.topology.Lab`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.apps.images import POD_NAME_ENV, UnknownImageError, command, image_for
from lab.apps.probe import Target
from lab.apps.probe_matrix import Pair, ProbeRunError, probe_matrix
from lab.forwarder import start_forwarder
from lab.hosts import hosts_text, service_addresses, write_in_place
from lab.ipam import Ipam, IpamError, requested_address
from lab.processes import ManagedProcess, ProcessSet
from lab.topology import FABRIC, Lab, LabError, PodInfo
from policycore.model import ValidationFailed, parse_resource, to_document
from policycore.model.kube import Pod, Service
from policycore.naming import endpoint_key

DEFAULT_IMAGE = "kaliko/probe"
UI_IMAGE = "kaliko/management-ui"
UI_DEFAULT_PORT = 9001
READY_TIMEOUT = 60.0
EXEC_TIMEOUT = 10.0
NETNS_ETC = Path("/etc/netns")
REPO = Path(__file__).resolve().parents[1]


class PodError(ValueError):
    """Pod documents the lab cannot run; ``problems`` are ``documents[i].field.path: reason`` strings."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class PodWish:
    """What one Pod document asks of the lab (validated)."""

    index: int
    pod: Pod
    key: str
    image: str
    args: tuple[str, ...]
    ports: tuple[tuple[int, str], ...]
    requested_ip: str | None

    @property
    def fingerprint(self) -> str:
        text = json.dumps([self.image, self.args, self.ports])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class LabPod:
    """A pod the lab runs: its network (`PodInfo`), what runs in it and the process records."""

    info: PodInfo
    image: str
    args: tuple[str, ...]
    ports: tuple[tuple[int, str], ...]
    fingerprint: str
    process: ManagedProcess | None = None
    forward: ManagedProcess | None = None
    started_fingerprint: str = ""

    @property
    def key(self) -> str:
        return self.info.key

    def hosts_path(self) -> Path:
        return NETNS_ETC / self.info.netns / "hosts"

    def forward_url(self) -> str | None:
        if self.forward is None or not self.forward.alive():
            return None
        return f"http://127.0.0.1:{self.forward.ports['listen']}/"

    def to_json(self) -> dict[str, Any]:
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
            "log": self.process.log if self.process is not None else "",
            "forward": self.forward_url(),
        }


@dataclass
class Admission:
    """The result of `admit`: the documents to write and the pods this call created or changed."""

    documents: list[dict[str, Any]]
    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


def read_wish(index: int, document: Mapping[str, Any]) -> PodWish:
    """Validate one Pod document for the lab (the one validator, then the lab's own checks)."""
    where = f"documents[{index}]"
    try:
        resource = parse_resource(document)
    except ValidationFailed as err:
        raise PodError([f"{where}.{p.path or '(document)'}: {p.reason}" for p in err.problems]) from None
    assert isinstance(resource, Pod)
    containers = resource.spec.containers
    image = (containers[0].image if containers else None) or DEFAULT_IMAGE
    field_path = f"{where}.spec.containers[0].image"
    try:
        image_for(image, field_path)
    except UnknownImageError as err:
        raise PodError([str(err)]) from None
    try:
        requested = requested_address(resource.metadata.annotations)
    except IpamError as err:
        raise PodError([f"{where}.{err}"]) from None
    ports = tuple((p.container_port, p.protocol) for c in containers for p in c.ports)
    args = tuple(containers[0].args) if containers else ()
    key = endpoint_key(resource.metadata.namespace or "default", resource.metadata.name)
    return PodWish(index, resource, key, image, args, tuple(dict.fromkeys(ports)), requested)


def placed_document(pod: Pod, node: str, ip: str) -> dict[str, Any]:
    """The Pod as the CNI plugin registers it: on ``node``, running, with ``ip``."""
    doc = to_document(pod)
    doc["spec"]["nodeName"] = node
    doc["status"] = {**doc.get("status", {}), "podIP": ip, "podIPs": [{"ip": ip}], "phase": "Running"}
    return doc


class PodManager:
    """The pods of one lab; see the module docstring."""

    def __init__(
        self,
        topology: Lab,
        run_dir: Path,
        *,
        python: str = sys.executable,
        ui_port: int = 0,
    ) -> None:
        self.topology = topology
        self.ipam = Ipam(reserved=(str(FABRIC),))
        self.pods: dict[str, LabPod] = {}
        self.processes = ProcessSet(run_dir / "logs" / "pods")
        self.python = python
        self.ui_port = ui_port

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
        for pod in started:
            if pod.image == UI_IMAGE:
                self._forward(pod)

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
                    log = pod.process.log if pod.process is not None else "(no log)"
                    raise LabError(f"pod {key}: its process exited; see {log}")
            if waiting and time.monotonic() > deadline:
                raise LabError(f"pods {', '.join(waiting)} not serving within {timeout:.0f}s: {problem}")
            if waiting:
                await asyncio.sleep(0.1)

    def _forward(self, pod: LabPod) -> None:
        if pod.forward is not None and pod.forward.alive():
            return
        tcp = [port for port, proto in pod.ports if proto == "TCP"]
        target = tcp[0] if tcp else UI_DEFAULT_PORT
        log = self.processes.log_dir / f"{pod.key.replace('/', '.')}.forward.log"
        pod.forward = start_forwarder(
            f"{pod.key}/forward", pod.info.netns, target, log, listen_port=self.ui_port
        )
        self.processes.processes.append(pod.forward)

    def _stop_processes(self, pod: LabPod) -> None:
        for process in (pod.forward, pod.process):
            if process is not None:
                process.stop(timeout=5.0)
                if process in self.processes.processes:
                    self.processes.processes.remove(process)
        pod.forward = pod.process = None

    # -- removal --------------------------------------------------------------------------------

    def remove(self, keys: Iterable[str]) -> list[str]:
        """Stop each pod's processes, remove its namespace and hosts file, free its address."""
        removed = []
        for key in keys:
            pod = self.pods.pop(key, None)
            if pod is None:
                continue
            self._stop_processes(pod)
            if key in self.topology.pods:
                self.topology.delete_pod(pod.info.namespace, pod.info.name)
            shutil.rmtree(NETNS_ETC / pod.info.netns, ignore_errors=True)
            self.ipam.release(key)
            removed.append(key)
        return removed

    def teardown(self) -> None:
        """Every pod, then the topology (nodes and fabric)."""
        self.remove(list(self.pods))
        self.processes.stop(timeout=5.0)
        self.topology.teardown()

    # -- hosts files ----------------------------------------------------------------------------

    def sync_hosts(self, services: Sequence[Service], pods: Sequence[Pod]) -> int:
        """Rewrite every pod's hosts file for these Services and Pods; returns how many changed."""
        names = service_addresses(services, pods)
        changed = 0
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
            "pods": [pod.to_json() for _, pod in sorted(self.pods.items())],
        }
