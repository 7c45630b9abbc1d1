"""The node agent's composition root: builds the real parts from settings and supervises them.

Owns process start-up: logging, the data plane chosen by ``--dataplane``, the Kafka subscriber
(on ``<cluster>.node-diffs``), the MQTT status publisher (on ``<cluster>/nodes/<node>/status``),
the snapshot client, the AgentService gRPC server and the health server, run under one
`Supervisor` (SIGTERM → graceful stop: offline status, then exit).
"""

from __future__ import annotations

import asyncio
import logging
import sys

import grpc
from prometheus_client import CollectorRegistry

from iokit.cluster_name import diff_topic
from iokit.health import HealthServer
from iokit.kafka_bus import KafkaDiffSubscriber
from iokit.mqtt_status import MqttStatusPublisher
from iokit.status import StatusTopics
from iokit.supervise import Supervisor
from node_agent.agent import NodeAgent
from node_agent.dataplane.protocol import DataPlane
from node_agent.servicer import AgentServicer
from node_agent.settings import AgentSettings, parse_args
from node_agent.snapshot_client import SnapshotClient
from wire.gen.kaliko.v1 import agent_pb2_grpc

log = logging.getLogger("kaliko.agent")


def make_dataplane(settings: AgentSettings) -> DataPlane:
    if settings.dataplane == "nftables":
        from node_agent.dataplane.nft_driver import NftablesDataPlane

        nft: DataPlane = NftablesDataPlane(settings.netns)
        return nft
    from node_agent.dataplane.memory import MemoryDataPlane

    return MemoryDataPlane()


async def serve(settings: AgentSettings) -> None:
    registry = CollectorRegistry()
    snapshots = SnapshotClient(list(settings.controllers))
    agent = NodeAgent(
        settings.node,
        subscriber=KafkaDiffSubscriber(settings.kafka, settings.node, diff_topic(settings.cluster)),
        status=MqttStatusPublisher(
            settings.node,
            settings.mqtt,
            topics=StatusTopics(settings.cluster),
            min_interval=settings.report_interval,
        ),
        fetch_snapshot=snapshots.fetch,
        dataplane=make_dataplane(settings),
        registry=registry,
        min_apply_interval=settings.min_apply_interval,
        resync_interval=settings.resync_interval,
        max_lag=settings.max_lag,
    )
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(
        AgentServicer(agent.applier, settings.dataplane), server
    )
    port = server.add_insecure_port(settings.grpc_listen)
    health = HealthServer(
        liveness=lambda: True,
        readiness=lambda: agent.applier.ready,
        registry=registry,
        host=settings.health_host,
        port=settings.health_port,
    )
    await server.start()
    log.info(
        "agent %s of cluster %s: AgentService on port %d, data plane %s",
        settings.node,
        settings.cluster,
        port,
        settings.dataplane,
    )
    supervisor = Supervisor(f"agent-{settings.node}")
    supervisor.add("stream", agent.run)
    supervisor.add("drift-repair", agent.repair_drift)
    supervisor.add("health", health.serve)
    try:
        await supervisor.run()
    finally:
        await agent.stop(graceful=True)
        await server.stop(1.0)
        await snapshots.close()
        agent.applier.dataplane.close()


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(settings))
