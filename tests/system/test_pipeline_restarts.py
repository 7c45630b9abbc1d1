"""Restart anything (GUIDE §2.4): agent and controller restarts end in the compiled state.

Proves: a restarted agent takes a snapshot and programs exactly what the controller compiled,
including changes made while it was down; a new controller takes a new epoch, every agent (also
those the change did not touch) resyncs from a snapshot of the new epoch, and changes made while
no controller ran are programmed; reports never go back in (epoch, seq) or revision.
"""

from __future__ import annotations

from system_resources import allow_from, assert_matches_oracle, namespace, pod

from lab.embedded import EmbeddedCluster


async def _shop(cluster: EmbeddedCluster) -> None:
    await cluster.apply(
        namespace("shop"),
        pod("shop", "web-1", "node-1", "10.1.0.1", app="web"),
        pod("shop", "client-1", "node-2", "10.1.0.3", app="client"),
        allow_from("shop", "web-from-client", {"app": "web"}, {"app": "client"}),
    )
    await cluster.wait_converged()


async def test_agent_restart_resyncs_from_snapshot_including_missed_changes(cluster: EmbeddedCluster) -> None:
    await _shop(cluster)
    await cluster.stop_agent("node-1", graceful=False)
    # While node-1's agent is down: a new allowed client appears.
    await cluster.apply(pod("shop", "client-2", "node-3", "10.1.0.4", app="client"))
    await cluster.wait_for(lambda: not cluster.mismatched(), 10, "the other nodes converged")

    restarted = cluster.start_agent("node-1")
    await cluster.wait_converged()
    assert restarted.metric("kaliko_agent_snapshots") == 1
    members = {m for s in restarted.dataplane.programmed().ipsets.values() for m in s.members}
    assert {"10.1.0.3", "10.1.0.4"} <= members
    await assert_matches_oracle(cluster)
    assert len(cluster.history["node-1"]) == 2  # two incarnations, each in order (fixture teardown)


async def test_graceful_and_abrupt_agent_stops_report_offline(cluster: EmbeddedCluster) -> None:
    controller = cluster.controller
    assert controller is not None
    for graceful in (True, False):
        await cluster.stop_agent("node-3", graceful=graceful)
        await cluster.wait_for(
            lambda: not controller.status.latest["node-3"].online, 5, "node-3 reported offline"
        )
        cluster.start_agent("node-3")
        await cluster.wait_converged()
        assert controller.status.latest["node-3"].online


async def test_controller_restart_takes_new_epoch_and_every_agent_resyncs(cluster: EmbeddedCluster) -> None:
    await _shop(cluster)
    first_epoch = cluster.election.epoch
    snapshots = {node: a.metric("kaliko_agent_snapshots") for node, a in cluster.agents.items()}

    await cluster.kill_controller()
    # Written while no controller runs: the new leader's first list picks it up.
    await cluster.apply(pod("shop", "client-2", "node-3", "10.1.0.4", app="client"))
    epoch = await cluster.start_controller()
    assert epoch == first_epoch + 1
    await cluster.wait_converged()

    for node, running in cluster.agents.items():
        position = running.agent.applier.programmed_position
        assert position is not None and position.epoch == epoch, node
        assert running.metric("kaliko_agent_snapshots") == snapshots[node] + 1, node
    members = {m for s in cluster.agents["node-1"].dataplane.programmed().ipsets.values() for m in s.members}
    assert "10.1.0.4" in members
    await assert_matches_oracle(cluster)

    # And the new epoch's deltas flow as usual afterwards.
    await cluster.apply(pod("shop", "client-3", "node-2", "10.1.0.5", app="client"))
    await cluster.wait_converged()
    await assert_matches_oracle(cluster)


async def test_repeated_controller_restarts_keep_epochs_increasing(cluster: EmbeddedCluster) -> None:
    await _shop(cluster)
    epochs = []
    for i in range(3):
        epochs.append(await cluster.restart_controller())
        await cluster.apply(pod("shop", f"extra-{i}", f"node-{i + 1}", f"10.1.1.{i + 1}", app="client"))
        await cluster.wait_converged()
    assert epochs == sorted(set(epochs)) and len(epochs) == 3
    reported_epochs = {p.epoch for p in cluster.history["node-2"][0].positions}
    assert set(epochs) <= reported_epochs
    await assert_matches_oracle(cluster)
