"""The controller's composition root: builds the real parts from settings and supervises them.

Owns process start-up and shutdown: logging, the etcd store, the Kafka diff publisher (which
creates the cluster's topic with ``--partitions`` if it is absent), the MQTT status watcher, the
etcd election — all on the keys and topics of ``--cluster`` (`KeyLayout`, `diff_topic`,
`StatusTopics`) — the `Controller`, the gRPC server (AdminService, NodeSync, health,
reflection) and the /liveness, /readiness, /metrics endpoint on 127.0.0.1, run under one
`Supervisor` (SIGTERM/SIGINT → graceful stop: NOT_SERVING, resign the lease, exit 0).

::

    settings ─▶ EtcdStore ───────────┐
                KafkaDiffPublisher ──┤
                MqttStatusWatcher ───┼─▶ Controller ─▶ ControllerServer (gRPC :listen)
                EtcdElection ────────┘        │        HealthServer (HTTP 127.0.0.1:health-port)
                                              ▼
          Supervisor: leader (Controller.run) · status (run_status) · grpc-health (follow_readiness)

Leadership: a controller serves only health while a standby; when it wins it leads until the
lease is lost, and then the process **exits** with `EXIT_LEADERSHIP_LOST` (3) rather than
campaigning again in-process: the restarted process starts as a standby with a fresh graph and
takes a fresh epoch, so no half-reset state can leak from one leadership term into the next
(compose restarts it; so does any supervisor). Any other failure exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

from prometheus_client import CollectorRegistry

from controller.controller import Controller
from controller.grpc_server import ControllerServer
from controller.leader import EtcdElection, LeadershipLost
from controller.resource_store import KeyLayout
from controller.settings import ControllerSettings, parse_args
from iokit.cluster_name import diff_topic
from iokit.etcd_store import EtcdStore
from iokit.health import HealthServer
from iokit.kafka_publisher import KafkaDiffPublisher
from iokit.mqtt_status import MqttStatusWatcher
from iokit.status import StatusTopics
from iokit.supervise import Supervisor

log = logging.getLogger("kaliko.controller")
EXIT_LEADERSHIP_LOST = 3


class ControllerApp:
    """One controller process's parts; `run` serves until stopped or leadership is lost."""

    def __init__(self, settings: ControllerSettings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.layout = KeyLayout(settings.cluster)
        self.store = EtcdStore.from_endpoint(settings.etcd)
        host, _, port = settings.etcd.rpartition(":")
        self.election = EtcdElection(host, int(port), settings.identity, settings.lease_ttl, self.layout)
        self.watcher = MqttStatusWatcher(settings.mqtt, topics=StatusTopics(settings.cluster))
        publisher = KafkaDiffPublisher(
            settings.kafka,
            diff_topic(settings.cluster),
            create_partitions=settings.partitions,
            client_id=f"kaliko-controller-{settings.identity}",
        )
        self.controller = Controller(
            store=self.store,
            publisher=publisher,
            status_watcher=self.watcher,
            election=self.election,
            registry=self.registry,
            flush_interval=settings.flush_interval,
            layout=self.layout,
            settle_gc=True,
        )
        self.server = ControllerServer(self.controller)
        self.health = HealthServer(
            liveness=lambda: True,
            readiness=lambda: self.controller.ready,
            registry=self.registry,
            host=settings.health_host,
            port=settings.health_port,
        )
        self.supervisor = Supervisor(f"controller-{settings.identity}")
        self.supervisor.add("leader", self.controller.run)
        self.supervisor.add("status", self.controller.run_status)
        self.supervisor.add("grpc-health", self.server.follow_readiness)
        self.started = asyncio.Event()
        self.grpc_port = 0

    async def run(self) -> None:
        """Bind, serve, and clean up; raises `LeadershipLost` when this leader's term ends."""
        try:
            self.grpc_port = await self.server.start(self.settings.listen)
            await self.health.start()
            log.info(
                "controller %s of cluster %s: gRPC on %d, health on %d; campaigning for leadership",
                self.settings.identity,
                self.settings.cluster,
                self.grpc_port,
                self.health.port,
            )
            self.started.set()
            await self.supervisor.run()
        finally:
            await self._close()

    def stop(self) -> None:
        self.supervisor.stop("stop requested")

    async def _close(self) -> None:
        await self.server.stop(1.0)
        await self.health.stop()
        with contextlib.suppress(Exception):
            await self.controller.stop()
        await self.watcher.stop()
        with contextlib.suppress(Exception):
            await self.election.close()
        with contextlib.suppress(Exception):
            await self.store.close()


async def serve(settings: ControllerSettings) -> None:
    await ControllerApp(settings).run()


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(settings))
    except LeadershipLost as err:
        log.error("leadership lost (%s); exiting to restart as a standby", err)
        sys.exit(EXIT_LEADERSHIP_LOST)
