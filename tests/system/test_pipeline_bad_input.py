"""Malformed datastore values, written behind the API's back, are treated as absent (GUIDE §2.3).

Proves, on the in-memory store: a value that is not JSON, has the wrong schema, is over the size
limit or holds a selector that does not parse is counted in ``kaliko_invalid_resources_total``
and treated as a deletion (a policy it overwrote is torn down on the nodes), the controller stays
ready and keeps compiling other changes, and a valid value written afterwards applies again.
"""

from __future__ import annotations

import json

import pytest
from system_resources import allow_from, assert_matches_oracle, namespace, pod

from controller.resource_store import KeyLayout
from lab.embedded import EmbeddedCluster
from policycore.model import ResourceKey

POLICY_KEY = KeyLayout().etcd_key(ResourceKey("KubernetesNetworkPolicy", "shop", "web-from-client"))
VALID = allow_from("shop", "web-from-client", {"app": "web"}, {"app": "client"})


def _bad_selector() -> bytes:
    doc = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web-from-client", "namespace": "shop"},
        "spec": {"selector": "app == 'web' &&& (", "ingress": [{"action": "Allow"}]},
    }
    return json.dumps(doc).encode()


BAD_VALUES = {
    "not-json": b"\x00\x01 definitely not json {",
    "wrong-schema": json.dumps(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "web-from-client", "namespace": "shop"},
            "spec": {"podSelector": "everything"},
        }
    ).encode(),
    "too-big": json.dumps({**VALID, "padding": "x" * (1400 * 1024)}).encode(),
    "bad-selector": _bad_selector(),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
async def test_invalid_value_is_counted_and_treated_as_absent(cluster: EmbeddedCluster, case: str) -> None:
    await cluster.apply(
        namespace("shop"),
        pod("shop", "web-1", "node-1", "10.1.0.1", app="web"),
        pod("shop", "client-1", "node-2", "10.1.0.3", app="client"),
        VALID,
    )
    await cluster.wait_converged()
    assert cluster.agents["node-1"].dataplane.programmed().policies

    controller = cluster.controller
    assert controller is not None
    await cluster.put_raw(POLICY_KEY, BAD_VALUES[case])
    await cluster.wait_converged()
    assert controller.metrics.registry.get_sample_value("kaliko_invalid_resources_total") == 1
    assert controller.ready
    assert not cluster.agents["node-1"].dataplane.programmed().policies, "the bad value counts as a delete"
    await assert_matches_oracle(cluster)

    # Other changes keep flowing, and a valid value under the same key applies again.
    await cluster.apply(pod("shop", "client-2", "node-3", "10.1.0.4", app="client"))
    await cluster.put_raw(POLICY_KEY, json.dumps(VALID).encode())
    await cluster.wait_converged()
    assert cluster.agents["node-1"].dataplane.programmed().policies
    await assert_matches_oracle(cluster)
