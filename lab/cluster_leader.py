"""Who leads a Kaliko cluster on an etcd, read synchronously, so ``lab up`` can refuse at once.

Owns `leader_of` (the identity in a cluster's leader key, `KeyLayout.leader`) and
`refuse_if_led`: ``lab up`` calls it before starting a controller, because a controller of a
cluster that someone already leads would only wait as a standby until the readiness timeout —
two labs (or a lab and compose) with the same cluster name on one etcd. It does not own the key
layout (`controller.resource_store.KeyLayout`), the election (`controller.leader`) or the lab's
processes (`lab.cluster`). Reads go through etcd's JSON gateway (``POST /v3/kv/range``) with the
standard library: synchronous like the rest of ``lab up``, and usable whether or not an event
loop runs.

Invariants: `refuse_if_led` raises `ClusterTaken` naming the cluster, the etcd endpoint, the key
and the holder's identity, and returns quietly when the key is absent; an etcd that does not
answer raises `EtcdUnreadable`, never a guess.
"""

from __future__ import annotations

import base64
import json
import urllib.request

from controller.resource_store import KeyLayout

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ClusterTaken(RuntimeError):
    """Another controller leads this cluster on this etcd; the message says who and what to do."""


class EtcdUnreadable(RuntimeError):
    """etcd did not answer a read through its JSON gateway."""


def etcd_get(endpoint: str, key: str, timeout: float = 5.0) -> bytes | None:
    """The value of ``key`` on the etcd at ``endpoint`` (HOST:PORT), or None when it is absent."""
    body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
    request = urllib.request.Request(
        f"http://{endpoint}/v3/kv/range", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with _NO_PROXY.open(request, timeout=timeout) as response:
            reply = json.loads(response.read())
    except (OSError, ValueError) as err:
        raise EtcdUnreadable(f"etcd at {endpoint}: could not read {key}: {err}") from err
    kvs = reply.get("kvs") or []
    return base64.b64decode(kvs[0].get("value", "")) if kvs else None


def leader_of(etcd: str, cluster: str) -> str | None:
    """The identity holding ``cluster``'s leader key on ``etcd``, or None when nobody leads it."""
    value = etcd_get(etcd, KeyLayout(cluster).leader)
    return None if value is None else value.decode(errors="replace")


def refuse_if_led(etcd: str, cluster: str) -> None:
    """Raise `ClusterTaken` if a controller already leads ``cluster`` on ``etcd``."""
    holder = leader_of(etcd, cluster)
    if holder is not None:
        raise ClusterTaken(
            f"cluster {cluster!r} on etcd {etcd} is already led by controller {holder!r} "
            f"(key {KeyLayout(cluster).leader}): another lab or deployment of that cluster is running. "
            "Stop it (kalikoctl lab down --run-dir ...), or give this lab another --cluster or --run-dir"
        )
