"""The seeded workload: valid documents, deterministic, spread over nodes, no racing writes."""

from collections import Counter

import pytest

from loadtest.workload import Change, Workload, WorkloadSpec
from policycore.model import parse_resource

SPEC = WorkloadSpec(nodes=20, pods=600, policies=80, namespaces=6, seed=42)


def test_initial_documents_are_valid_and_sized_as_asked() -> None:
    docs = Workload(SPEC).initial_documents()
    kinds = Counter(parse_resource(doc).kind for doc in docs)
    assert kinds["Node"] == 20 and kinds["Namespace"] == 6 and kinds["Pod"] == 600
    assert kinds["NetworkPolicy"] + kinds["GlobalNetworkPolicy"] == 80
    assert kinds["GlobalNetworkPolicy"] == 5
    nodes = Counter(doc["spec"]["nodeName"] for doc in docs if doc["kind"] == "Pod")
    assert len(nodes) == 20  # pods are spread over every node
    ips = [doc["status"]["podIP"] for doc in docs if doc["kind"] == "Pod"]
    assert len(set(ips)) == len(ips)


def test_same_seed_same_documents() -> None:
    assert Workload(SPEC).initial_documents() == Workload(SPEC).initial_documents()
    other = WorkloadSpec(nodes=20, pods=600, policies=80, namespaces=6, seed=43)
    assert Workload(other).initial_documents() != Workload(SPEC).initial_documents()


def test_policy_mix_has_namespace_selectors_ip_blocks_and_default_denies() -> None:
    shapes = Counter(policy.shape for policy in Workload(SPEC).policies.values())
    assert shapes["default-deny"] == 6
    assert shapes["team"] and shapes["monitoring"] and shapes["ipblock"] and shapes["egress-db"]


def test_churn_documents_are_valid_and_keys_are_claimed() -> None:
    workload = Workload(SPEC)
    generators = [workload.create_policy, workload.edit_policy, workload.delete_policy,
                  workload.create_pod, workload.delete_pod, workload.relabel_pod]  # fmt: skip
    seen: list[Change] = []
    for _ in range(30):
        for generate in generators:
            change = generate()
            assert change is not None
            assert change.key in workload.busy
            assert change.key not in [c.key for c in seen]  # never twice while in flight
            if change.document is not None:
                parse_resource(change.document)
            seen.append(change)
        for change in seen:
            workload.settle(change)
        seen.clear()
    assert not workload.busy


def test_rejects_impossible_specs() -> None:
    with pytest.raises(ValueError, match="nodes"):
        WorkloadSpec(nodes=0, pods=1, policies=1, namespaces=1)
    with pytest.raises(ValueError, match="pods"):
        WorkloadSpec(nodes=1, pods=-1, policies=1, namespaces=1)
