"""NodePort Services of a live lab: each one's ``nodePort`` on the host's loopback, forwarded to its pod.

Owns `node_port_wishes` (pure: which host ports the datastore's Services ask for, and where each
one goes) and `NodePorts`, the forwarder processes that serve them. A Service of type
``NodePort`` (or ``LoadBalancer``) exposes each of its TCP ports on ``127.0.0.1:<nodePort>`` —
Calico's Stars manifest gives the management UI ``nodePort: 30002``, so the UI is at
http://127.0.0.1:30002/ — and a port without a ``nodePort`` gets a free one, as Kubernetes
allocates one. Connections go to the Service's ``targetPort`` (a number, a container port name,
or by default its ``port``) of the pod the Service's hosts-file name resolves to
(`lab.hosts.selected_pod`).

How: a `lab.forwarder` process inside the pod's namespace, on a socket bound in the root
namespace (the host has no route to pod addresses). Like ``kubectl port-forward`` its traffic
reaches the pod on the pod's own loopback, so no policy cuts the operator off. A wanted port that
is already taken on the host (another lab's UI) is replaced by a free one; `to_json` shows both.
UDP NodePorts are not forwarded (the forwarder copies TCP streams).

It does not own the forwarder itself (`lab.forwarder`), which pods exist (`lab.pods`) or when it
is synced (`lab.cni`). Invariants: at most one forward per (Service, port); a forward is restarted
when its target changes or its process died; `stop_pod` runs before a pod's namespace is removed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.forwarder import start_forwarder
from lab.hosts import selected_pod
from lab.processes import ManagedProcess
from policycore.model.kube import Pod, Service
from policycore.naming import endpoint_key

log = logging.getLogger("kaliko.lab.node_ports")
EXPOSED_TYPES = ("NodePort", "LoadBalancer")
STOP_TIMEOUT = 5.0
EXEC_TIMEOUT = 10.0


@dataclass(frozen=True)
class NodePortWish:
    """One Service port to expose: ``service`` (``namespace/name``) ``port`` → ``pod``:``target_port``."""

    service: str
    port: int
    node_port: int | None
    pod: str
    target_port: int


def _target_port(pod: Pod, wanted: int | str | None, port: int) -> int | None:
    if wanted is None:
        return port
    if isinstance(wanted, int):
        return wanted
    for container in pod.spec.containers:
        for declared in container.ports:
            if declared.name == wanted and declared.protocol == "TCP":
                return declared.container_port
    return None


def node_port_wishes(services: Sequence[Service], pods: Sequence[Pod]) -> list[NodePortWish]:
    """Every TCP port of every NodePort/LoadBalancer Service that selects a pod with an address."""
    wishes = []
    for service in services:
        if service.spec.type not in EXPOSED_TYPES:
            continue
        pod = selected_pod(service, pods)
        if pod is None:
            continue
        key = endpoint_key(service.metadata.namespace or "default", service.metadata.name)
        for port in service.spec.ports:
            if port.protocol != "TCP":
                continue
            target = _target_port(pod, port.target_port, port.port)
            if target is None:
                log.warning("%s port %d: no TCP container port named %r", key, port.port, port.target_port)
                continue
            pod_key = endpoint_key(pod.metadata.namespace or "default", pod.metadata.name)
            wishes.append(NodePortWish(key, port.port, port.node_port, pod_key, target))
    return wishes


@dataclass
class _Forward:
    wish: NodePortWish
    process: ManagedProcess
    netns: str

    @property
    def listen(self) -> int:
        return self.process.ports["listen"]

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.wish.service,
            "port": self.wish.port,
            "node_port": self.wish.node_port,
            "listen": self.listen,
            "pod": self.wish.pod,
            "target_port": self.wish.target_port,
            "alive": self.process.alive(),
            "url": f"http://127.0.0.1:{self.listen}/",
        }


class NodePorts:
    """The forwards of one lab, keyed by (Service, port); one owner drives it (the CNI daemon)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.forwards: dict[tuple[str, int], _Forward] = {}

    def sync(self, wishes: Iterable[NodePortWish], netns_of: Mapping[str, str]) -> int:
        """Make the forwards match ``wishes`` for the pods of ``netns_of`` (pod key → netns)."""
        wanted = {(w.service, w.port): w for w in wishes if w.pod in netns_of}
        changed = 0
        for key in [k for k, f in self.forwards.items() if wanted.get(k) != f.wish]:
            self._stop(key)
            changed += 1
        for key, wish in wanted.items():
            if key not in self.forwards:
                self._start(wish, netns_of[wish.pod])
                changed += 1
        return changed

    def revive(self) -> list[str]:
        """Restart every forward whose process died; returns their Services."""
        revived = []
        for key, forward in list(self.forwards.items()):
            if not forward.process.alive():
                self._stop(key)
                self._start(forward.wish, forward.netns, forward.listen)
                revived.append(forward.wish.service)
        return revived

    def stop_pod(self, pod: str) -> None:
        """Stop the forwards into ``pod`` (before its namespace goes)."""
        for key in [k for k, f in self.forwards.items() if f.wish.pod == pod]:
            self._stop(key)

    def stop_all(self) -> None:
        for key in list(self.forwards):
            self._stop(key)

    def url_of(self, pod: str) -> str | None:
        """The host URL of the first forward into ``pod`` (by Service and port), if any."""
        for key in sorted(self.forwards):
            forward = self.forwards[key]
            if forward.wish.pod == pod and forward.process.alive():
                return f"http://127.0.0.1:{forward.listen}/"
        return None

    def to_json(self) -> list[dict[str, Any]]:
        return [self.forwards[key].to_json() for key in sorted(self.forwards)]

    def _start(self, wish: NodePortWish, netns: str, listen: int | None = None) -> None:
        wanted = wish.node_port if listen is None else listen
        name = f"{wish.service.replace('/', '.')}.{wish.port}.nodeport"
        process = start_forwarder(
            name, netns, wish.target_port, self.log_dir / f"{name}.log", listen_port=wanted or 0
        )
        deadline = time.monotonic() + EXEC_TIMEOUT  # until `ip netns exec` has exec'ed the forwarder
        while not process.alive() and not process.exited() and time.monotonic() < deadline:
            time.sleep(0.005)
        if wanted and process.ports["listen"] != wanted:
            log.warning("%s: host port %d is taken; using %d", name, wanted, process.ports["listen"])
        self.forwards[(wish.service, wish.port)] = _Forward(wish, process, netns)

    def _stop(self, key: tuple[str, int]) -> None:
        forward = self.forwards.pop(key)
        forward.process.stop(timeout=STOP_TIMEOUT)
