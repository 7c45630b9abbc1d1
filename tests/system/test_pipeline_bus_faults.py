"""Bus faults between controller and agents: lost, repeated, garbage and skipped messages.

Proves: a message lost in transit leaves the agent behind only until the next message, whose
gap makes it fetch a snapshot and end in the compiled state; a seq the controller skips on
purpose (`Engine.force_gap`, what it does when a publish fails) has the same effect; a duplicated
message is ignored (programmed once, no snapshot); a malformed bus message is counted in
``kaliko_agent_malformed_messages_total`` and skipped, and the agent keeps applying what follows
without a snapshot; under seeded churn mixed with all of these faults and restarts, no agent
ever applies a position out of order and the cluster converges to the oracle's state.
"""

from __future__ import annotations

import random

from system_resources import allow_from, assert_matches_oracle, namespace, pod

from lab.embedded import EmbeddedCluster
from wire.gen.kaliko.v1 import node_stream_pb2 as pb


async def _shop(cluster: EmbeddedCluster) -> None:
    await cluster.apply(
        namespace("shop"),
        pod("shop", "web-1", "node-1", "10.1.0.1", app="web"),
        pod("shop", "client-1", "node-2", "10.1.0.3", app="client"),
        allow_from("shop", "web-from-client", {"app": "web"}, {"app": "client"}),
    )
    await cluster.wait_converged()


async def test_lost_message_is_repaired_by_the_gap_snapshot(cluster: EmbeddedCluster) -> None:
    await _shop(cluster)
    web = cluster.agents["node-1"]
    snapshots = web.metric("kaliko_agent_snapshots")
    web.subscriber.drop_next()

    await cluster.apply(pod("shop", "client-2", "node-3", "10.1.0.4", app="client"))
    await cluster.wait_for(lambda: len(web.subscriber.dropped) == 1, 5, "the message to node-1 lost")
    assert web.programmed_hash() != cluster.expected_hash("node-1")  # behind, and cannot know it yet

    await cluster.apply(pod("shop", "client-3", "node-3", "10.1.0.5", app="client"))
    await cluster.wait_converged()
    assert web.metric("kaliko_agent_snapshots") == snapshots + 1
    assert web.agent.applier.out_of_order == 1
    members = {m for s in web.dataplane.programmed().ipsets.values() for m in s.members}
    assert {"10.1.0.4", "10.1.0.5"} <= members
    await assert_matches_oracle(cluster)


async def test_forced_gap_makes_the_agent_resync(cluster: EmbeddedCluster) -> None:
    await _shop(cluster)
    web = cluster.agents["node-1"]
    snapshots = web.metric("kaliko_agent_snapshots")
    engine = cluster.engine()
    assert engine is not None
    await engine.force_gap(["node-1"])  # publishes an empty diff after the gap: resync without waiting
    await cluster.wait_converged()
    assert web.metric("kaliko_agent_snapshots") == snapshots + 1

    await cluster.apply(pod("shop", "client-2", "node-3", "10.1.0.4", app="client"))
    await cluster.wait_converged()
    assert web.metric("kaliko_agent_snapshots") == snapshots + 1
    await assert_matches_oracle(cluster)


async def test_duplicated_message_is_ignored(cluster: EmbeddedCluster) -> None:
    await _shop(cluster)
    web = cluster.agents["node-1"]
    applier = web.agent.applier
    applies, snapshots, consumed = applier.applies, applier.snapshots, web.subscriber.consumed
    web.subscriber.duplicate_next()

    await cluster.apply(pod("shop", "client-2", "node-3", "10.1.0.4", app="client"))
    await cluster.wait_converged()
    await web.subscriber.wait_consumed(consumed + 2)  # the agent has handled both copies

    assert len(web.subscriber.duplicated) == 1
    assert applier.applies == applies + 1
    assert applier.snapshots == snapshots
    assert applier.out_of_order == 0
    await assert_matches_oracle(cluster)


def _unknown_action_message(node: str) -> bytes:
    rule = pb.Rule(action="frobnicate", rule_id="r0")
    op = pb.Op(policy_update=pb.PolicyProgram(policy_id="p", ingress=[rule]))
    return pb.NodeMessage(node=node, epoch=1, seq=99, revision=1, ops=[op]).SerializeToString()


async def test_malformed_bus_messages_are_counted_and_skipped(cluster: EmbeddedCluster) -> None:
    await _shop(cluster)
    web = cluster.agents["node-1"]
    snapshots, consumed = web.agent.applier.snapshots, web.subscriber.consumed
    garbage = [b"\xff\xff\xff\xff not protobuf", _unknown_action_message("node-1"), b""]
    for payload in garbage:
        cluster.broker.append("node-1", payload)
    await web.subscriber.wait_consumed(consumed + len(garbage))
    assert web.metric("kaliko_agent_malformed_messages_total") == len(garbage)

    await cluster.apply(pod("shop", "client-2", "node-3", "10.1.0.4", app="client"))
    await cluster.wait_converged()
    assert web.agent.applier.snapshots == snapshots  # the stream simply continued
    await assert_matches_oracle(cluster)


async def test_churn_with_faults_never_applies_out_of_order(cluster: EmbeddedCluster) -> None:
    rng = random.Random(20240607)
    await _shop(cluster)
    for step in range(40):
        node = f"node-{rng.randint(1, 3)}"
        fault = rng.choice(
            ["none", "none", "drop", "duplicate", "garbage", "restart-agent", "restart-controller"]
        )
        running = cluster.agents[node]
        if fault == "drop":
            running.subscriber.drop_next()
        elif fault == "duplicate":
            running.subscriber.duplicate_next()
        elif fault == "garbage":
            cluster.broker.append(node, b"\x08\x96\x01 garbage")
        elif fault == "restart-agent":
            await cluster.restart_agent(node, graceful=rng.random() < 0.5)
        elif fault == "restart-controller":
            await cluster.restart_controller()
        labels = {"app": rng.choice(["web", "client", "db"])}
        await cluster.apply(
            pod("shop", f"p-{rng.randint(0, 6)}", node, f"10.2.0.{rng.randint(1, 6)}", **labels)
        )
        if step % 5 == 4:
            # A lost message is only noticed at the next one: give every node messages until no
            # fault is pending, then one more.
            for tick in range(4):
                for other in cluster.nodes:
                    await cluster.apply(
                        pod("shop", f"tick-{other}", other, f"10.3.{tick}.{step}", app="tick")
                    )
                await cluster.wait_compiled()
                if tick and not any(a.subscriber.pending_faults for a in cluster.agents.values()):
                    break
            await cluster.wait_converged()
            await assert_matches_oracle(cluster)
    assert cluster.order_violations() == []
    assert any(len(logs) > 1 for logs in cluster.history.values()) or cluster.election.epoch > 1
