"""The flow of one change through controller and agents in one process (GUIDE §4), on the twins.

Proves: a policy or pod change reaches every node it affects and each of those nodes programs
exactly what the controller compiled for it (and what a from-scratch recompute says); nodes it
does not affect get no message at all; the convergence tracker agrees with the agents.
"""

from __future__ import annotations

from system_resources import EMPTY_HASH, allow_from, assert_matches_oracle, namespace, pod

from lab.embedded import EmbeddedCluster


async def _workloads(cluster: EmbeddedCluster) -> None:
    await cluster.apply(
        namespace("shop"),
        pod("shop", "web-1", "node-1", "10.1.0.1", app="web"),
        pod("shop", "db-1", "node-2", "10.1.0.2", app="db"),
        pod("shop", "client-1", "node-2", "10.1.0.3", app="client"),
    )
    await cluster.wait_converged()


async def test_cold_start_programs_every_node_with_its_snapshot(cluster: EmbeddedCluster) -> None:
    assert cluster.ready
    for node, running in cluster.agents.items():
        assert running.metric("kaliko_agent_snapshots") == 1, node
        assert running.programmed_hash() == EMPTY_HASH == cluster.expected_hash(node)


async def test_policy_change_reaches_affected_nodes_only(cluster: EmbeddedCluster) -> None:
    await _workloads(cluster)
    before = {node: len(cluster.messages_for(node)) for node in cluster.nodes}

    await cluster.apply(allow_from("shop", "web-from-client", {"app": "web"}, {"app": "client"}))
    await cluster.wait_converged()

    after = {node: len(cluster.messages_for(node)) for node in cluster.nodes}
    assert after["node-1"] == before["node-1"] + 1  # the policy selects web-1 on node-1
    assert after["node-2"] == before["node-2"]  # client-1's ip set lives on node-1 only
    assert after["node-3"] == before["node-3"]
    web_state = cluster.agents["node-1"].dataplane.programmed()
    assert web_state.policies, "node-1 must program the policy that selects web-1"
    assert any("10.1.0.3" in s.members for s in web_state.ipsets.values()), "client-1 is the allowed source"
    await assert_matches_oracle(cluster)


async def test_pod_label_change_updates_selected_nodes_ipsets(cluster: EmbeddedCluster) -> None:
    await _workloads(cluster)
    await cluster.apply(allow_from("shop", "web-from-client", {"app": "web"}, {"app": "client"}))
    await cluster.wait_converged()
    before = {node: len(cluster.messages_for(node)) for node in cluster.nodes}

    # A new client on node-3 joins the allowed source set: node-1 (where the set is used) hears of
    # it, node-3 gets its new endpoint, node-2 hears nothing.
    await cluster.apply(pod("shop", "client-2", "node-3", "10.1.0.4", app="client"))
    await cluster.wait_converged()

    after = {node: len(cluster.messages_for(node)) for node in cluster.nodes}
    assert after["node-1"] == before["node-1"] + 1
    assert after["node-2"] == before["node-2"]
    assert after["node-3"] == before["node-3"] + 1
    members = {m for s in cluster.agents["node-1"].dataplane.programmed().ipsets.values() for m in s.members}
    assert {"10.1.0.3", "10.1.0.4"} <= members
    await assert_matches_oracle(cluster)

    # Relabel client-2 away from the selector: node-1 drops it from the set.
    await cluster.apply(pod("shop", "client-2", "node-3", "10.1.0.4", app="batch"))
    await cluster.wait_converged()
    members = {m for s in cluster.agents["node-1"].dataplane.programmed().ipsets.values() for m in s.members}
    assert "10.1.0.4" not in members
    await assert_matches_oracle(cluster)


async def test_policy_delete_tears_down_and_tracker_converges(cluster: EmbeddedCluster) -> None:
    await _workloads(cluster)
    revision = await cluster.apply(allow_from("shop", "web-from-client", {"app": "web"}, {"app": "client"}))
    await cluster.wait_converged()
    engine = cluster.engine()
    assert engine is not None
    assert engine.tracker.is_converged(revision)
    assert engine.tracker.applied_revision("node-1") >= revision

    await cluster.delete("KubernetesNetworkPolicy", "web-from-client", "shop")
    await cluster.wait_converged()
    state = cluster.agents["node-1"].dataplane.programmed()
    assert not state.policies and not state.ipsets
    await assert_matches_oracle(cluster)
