"""Pod hosts files: every Service by name, resolved to a pod address (the lab has no kube-proxy).

Owns the content of ``/etc/netns/<pod netns>/hosts`` (which ``ip netns exec`` bind-mounts over
/etc/hosts for the pod's process) and writing it. Each Service is named ``<svc>.<ns>``,
``<svc>.<ns>.svc`` and ``<svc>.<ns>.svc.cluster.local``, plus ``<svc>`` in pods of its own
namespace, and resolves to the first pod (by name) it selects that has an address: without a
kube-proxy a Service name is its pod's address, and policy applies to pod addresses anyway. It
does not own which pods exist or when files are rewritten (`lab.pods`).

Invariant: a file is rewritten in place (truncate and write the same inode): a rename would leave
the running process reading the old, bind-mounted inode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from lab.topology import PodInfo
from policycore.model.kube import Pod, Service

ServiceAddresses = Mapping[tuple[str, str], str]


def selected_pod(service: Service, pods: Sequence[Pod]) -> Pod | None:
    """The first (by name) pod with an address in the Service's namespace that it selects."""
    namespace = service.metadata.namespace or "default"
    selector = service.spec.selector
    if not selector:
        return None
    chosen = sorted(
        (
            p
            for p in pods
            if (p.metadata.namespace or "default") == namespace
            and p.ips()
            and all(p.metadata.labels.get(k) == v for k, v in selector.items())
        ),
        key=lambda p: p.metadata.name,
    )
    return chosen[0] if chosen else None


def service_addresses(services: Sequence[Service], pods: Sequence[Pod]) -> dict[tuple[str, str], str]:
    """``(namespace, service) → address`` of the pod each Service selects (`selected_pod`)."""
    out: dict[tuple[str, str], str] = {}
    for service in services:
        pod = selected_pod(service, pods)
        if pod is not None:
            out[(service.metadata.namespace or "default", service.metadata.name)] = pod.ips()[0]
    return out


def write_in_place(path: Path, text: str) -> None:
    """Overwrite ``path`` keeping its inode (see the module docstring); create it if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        handle.seek(0)
        handle.truncate()
        handle.write(text)


def hosts_text(pod: PodInfo, names: ServiceAddresses) -> str:
    """The hosts file of ``pod`` for ``(namespace, service) → address``."""
    lines = ["127.0.0.1 localhost", f"{pod.ip} {pod.name}"]
    for (namespace, service), ip in sorted(names.items()):
        aliases = [
            f"{service}.{namespace}",
            f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.cluster.local",
        ]
        if namespace == pod.namespace:
            aliases.insert(0, service)
        lines.append(f"{ip} {' '.join(aliases)}")
    return "\n".join(lines) + "\n"
