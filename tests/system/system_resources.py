"""Resource builders and state checks shared by the system tests (imported as a plain module).

`oracle_hashes` recomputes every node's state from scratch (`policycore.calc.oracle.compile_all`)
from what is in the store: an independent check of what the controller compiled.
"""

from __future__ import annotations

from typing import Any

from controller.resource_store import InvalidEntry
from lab.embedded import EmbeddedCluster
from policycore.calc.oracle import compile_all
from policycore.ir import NodeState

EMPTY_HASH = NodeState().content_hash()


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def pod(ns: str, name: str, node: str, ip: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "main", "ports": [{"containerPort": 80}]}]},
        "status": {"podIP": ip},
    }


def allow_from(
    ns: str, name: str, target: dict[str, str], source: dict[str, str], port: int = 80
) -> dict[str, Any]:
    """A Kubernetes NetworkPolicy: pods matching ``target`` accept ``port`` only from ``source``."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "podSelector": {"matchLabels": target},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": source}}],
                    "ports": [{"protocol": "TCP", "port": port}],
                }
            ],
        },
    }


async def oracle_hashes(cluster: EmbeddedCluster) -> dict[str, str]:
    """Each cluster node's state hash recomputed from scratch from the store's valid resources."""
    entries, _ = await cluster.store.list(cluster.layout.resources)
    resources = [r for r in (cluster.resources.decode(e) for e in entries) if not isinstance(r, InvalidEntry)]
    states = compile_all(resources)
    return {node: states.get(node, NodeState()).content_hash() for node in cluster.nodes}


def programmed_hashes(cluster: EmbeddedCluster) -> dict[str, str]:
    return {node: running.programmed_hash() for node, running in cluster.agents.items()}


async def assert_matches_oracle(cluster: EmbeddedCluster) -> None:
    """Every agent programmed exactly what the controller compiled and what the oracle computes."""
    expected = {node: cluster.expected_hash(node) for node in cluster.agents}
    assert programmed_hashes(cluster) == expected
    assert expected == await oracle_hashes(cluster)
