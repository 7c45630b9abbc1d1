"""Real connection attempts between a live lab's pods: whole matrices and lists of edges.

Owns turning the CNI daemon's pod list (`lab.cni.CniClient.lab`) into probe pairs, each probe
leaving from inside the source pod's namespace towards the target pod's address (never from the
root namespace, which has no route to the pod network), and the answer in the shape
``kalikoctl reach -o json`` prints: ``{"port", "protocol", "pods": [...], "allowed": {src: {dst:
bool}}}`` with self pairs left out and pods in ``namespace/name`` order, so the two can be
compared as they are. It does not own how a probe is made (`lab.apps.probe`, run in parallel by
`lab.apps.probe_matrix`) or which pods exist (`lab.pods`).

SCTP cannot be probed where the kernel has no SCTP (`sctp_available`); callers say so.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lab.apps.probe import Target
from lab.apps.probe_matrix import Pair, probe_matrix

PROBE_TIMEOUT = 1.0
SOURCE_CONCURRENCY = 16
PROBED_PROTOCOLS = ("TCP", "UDP")


@dataclass(frozen=True)
class Edge:
    """One directed probe between two pods (``namespace/name``) and what came back."""

    source: str
    target: str
    port: int
    protocol: str
    allowed: bool


def sctp_available() -> bool:
    """Whether this kernel can open SCTP sockets at all."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
    except OSError:
        return False
    return True


def _pods(lab: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {pod["key"]: pod for pod in sorted(lab["pods"], key=lambda p: str(p["key"]))}


async def probe_edges(
    lab: Mapping[str, Any], wanted: Sequence[tuple[str, str, int, str]], timeout: float = PROBE_TIMEOUT
) -> list[Edge]:
    """Probe each ``(source pod, target pod, port, protocol)``; results keep the order of ``wanted``."""
    pods = _pods(lab)
    missing = sorted({key for src, dst, _, _ in wanted for key in (src, dst) if key not in pods})
    if missing:
        raise KeyError(f"no such pod in the lab: {', '.join(missing)} (pods: {', '.join(pods) or 'none'})")
    pairs = [
        Pair(str(pods[src]["netns"]), Target(str(pods[dst]["ip"]), port, protocol))
        for src, dst, port, protocol in wanted
    ]
    results = await probe_matrix(pairs, timeout=timeout, concurrency=SOURCE_CONCURRENCY)
    return [
        Edge(src, dst, port, proto, r.ok) for (src, dst, port, proto), r in zip(wanted, results, strict=True)
    ]


async def probe_all(
    lab: Mapping[str, Any], port: int, protocol: str, timeout: float = PROBE_TIMEOUT
) -> tuple[dict[str, Any], float]:
    """Every ordered pair of distinct pods on ``port``/``protocol``, as ``kalikoctl reach -o json``;
    also returns the seconds the probing took."""
    keys = list(_pods(lab))
    wanted = [(src, dst, port, protocol) for src in keys for dst in keys if dst != src]
    started = time.monotonic()
    edges = await probe_edges(lab, wanted, timeout)
    seconds = time.monotonic() - started
    allowed: dict[str, dict[str, bool]] = {src: {} for src in keys}
    for edge in edges:
        allowed[edge.source][edge.target] = edge.allowed
    return {"port": port, "protocol": protocol, "pods": keys, "allowed": allowed}, seconds
