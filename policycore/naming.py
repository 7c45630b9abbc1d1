"""Deterministic names shared by the compiler, the data planes and the lab.

Owns the host-side interface name of a pod (the compiler writes it into `EndpointProgram.iface`,
the lab creates the veth with it, nftables dispatches on it) and the endpoint key. Names are a
pure function of (namespace, pod) so they survive restarts. It owns nothing else.
"""

from __future__ import annotations

import hashlib

IFACE_PREFIX = "kal"
IFACE_MAX = 15  # Linux IFNAMSIZ - 1


def endpoint_key(namespace: str, pod: str) -> str:
    """``"<namespace>/<pod>"``: the key of a workload endpoint everywhere."""
    return f"{namespace}/{pod}"


def iface_name(namespace: str, pod: str) -> str:
    """The host-side veth name of a pod, like Calico's ``cali<hash>``: ``kal`` + 12 hex digits."""
    digest = hashlib.sha1(endpoint_key(namespace, pod).encode()).hexdigest()
    return (IFACE_PREFIX + digest)[:IFACE_MAX]
