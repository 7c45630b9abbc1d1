"""The node agent's settings: command-line flags with ``KALIKO_*`` environment defaults.

Owns parsing and checking the agent's configuration (the flags compose.yaml and the lab use),
including the cluster name (``--cluster`` / ``KALIKO_CLUSTER``, a DNS-1123 label, default
``kaliko``): the agent reads ``<cluster>.node-diffs`` and reports on ``<cluster>/nodes/<node>/status``,
so it must name the same cluster as its controller; and ``--max-lag`` (``KALIKO_MAX_LAG``, seconds,
default 10; 0: never), how far behind the producer the agent may fall before it skips its backlog
and resyncs from a snapshot (`node_agent.agent`); and ``--report-interval``
(``KALIKO_REPORT_INTERVAL``, seconds, default 0.2; 0: every apply), the least time between two
status reports (`iokit.status.LatestStatus`). It builds nothing (`node_agent.app` does).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass

from iokit.cluster_name import DEFAULT_CLUSTER, InvalidClusterName, check_cluster_name
from iokit.mqtt_status import DEFAULT_REPORT_INTERVAL
from node_agent.agent import DEFAULT_MAX_LAG


@dataclass(frozen=True, slots=True)
class AgentSettings:
    node: str
    kafka: str
    mqtt: str
    controllers: tuple[str, ...]
    dataplane: str
    health_port: int
    grpc_listen: str
    etcd: str
    min_apply_interval: float
    resync_interval: float
    netns: str | None
    health_host: str = "127.0.0.1"
    cluster: str = DEFAULT_CLUSTER
    max_lag: float = DEFAULT_MAX_LAG
    report_interval: float = DEFAULT_REPORT_INTERVAL


def _cluster(value: str) -> str:
    try:
        return check_cluster_name(value)
    except InvalidClusterName as err:
        raise argparse.ArgumentTypeError(f"{err} (from --cluster or KALIKO_CLUSTER)") from None


def _seconds(option: str, variable: str, zero: str) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            seconds = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a number of seconds: {value!r} (from {option} or {variable})"
            ) from None
        if not seconds >= 0 or seconds == float("inf"):
            raise argparse.ArgumentTypeError(
                f"must be a finite number of seconds >= 0 (0: {zero}), got {value!r}"
                f" (from {option} or {variable})"
            )
        return seconds

    return parse


_max_lag = _seconds("--max-lag", "KALIKO_MAX_LAG", "never cut off")
_report_interval = _seconds("--report-interval", "KALIKO_REPORT_INTERVAL", "report every apply")


def parse_args(argv: list[str] | None = None) -> AgentSettings:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="kaliko-agent", description="Kaliko node agent")
    p.add_argument("--node", default=env("KALIKO_NODE"), help="this node's name (KALIKO_NODE)")
    p.add_argument(
        "--cluster",
        type=_cluster,
        default=env("KALIKO_CLUSTER", DEFAULT_CLUSTER),
        help="the cluster's name, as its controller's --cluster (KALIKO_CLUSTER)",
    )
    p.add_argument("--kafka", default=env("KALIKO_KAFKA", "127.0.0.1:9092"), help="Kafka bootstrap HOST:PORT")
    p.add_argument("--mqtt", default=env("KALIKO_MQTT", "127.0.0.1:1883"), help="MQTT broker HOST:PORT")
    p.add_argument(
        "--etcd",
        default=env("KALIKO_ETCD", "127.0.0.1:2379"),
        help="etcd HOST:PORT (unused by the agent; accepted so one env serves every component)",
    )
    p.add_argument(
        "--controller",
        default=env("KALIKO_CONTROLLER", "127.0.0.1:50051"),
        help="controller gRPC addresses, comma-separated (snapshots come from the leader)",
    )
    p.add_argument("--dataplane", choices=("memory", "nftables"), default=env("KALIKO_DATAPLANE", "memory"))
    p.add_argument(
        "--health-port",
        type=int,
        default=int(env("KALIKO_HEALTH_PORT", "0")),
        help="port for /liveness, /readiness and /metrics on 127.0.0.1 (0: any free port)",
    )
    p.add_argument(
        "--health-host",
        default=env("KALIKO_HEALTH_HOST", "127.0.0.1"),
        help="address the health/metrics endpoint binds (0.0.0.0 only inside a container)",
    )
    p.add_argument(
        "--grpc-listen", default=env("KALIKO_AGENT_LISTEN", "127.0.0.1:0"), help="AgentService address"
    )
    p.add_argument(
        "--min-apply-interval",
        type=float,
        default=0.0,
        help="throttle: at least this many seconds between data-plane transactions",
    )
    p.add_argument(
        "--resync-interval",
        type=float,
        default=10.0,
        help="seconds between read-backs of the data plane that repair drift",
    )
    p.add_argument(
        "--max-lag",
        type=_max_lag,
        default=env("KALIKO_MAX_LAG", str(DEFAULT_MAX_LAG)),
        help="seconds behind the producer before skipping the backlog and resyncing from a snapshot"
        " (0: never; KALIKO_MAX_LAG)",
    )
    p.add_argument(
        "--report-interval",
        type=_report_interval,
        default=env("KALIKO_REPORT_INTERVAL", str(DEFAULT_REPORT_INTERVAL)),
        help="seconds between two status reports at least; the newest status wins meanwhile"
        " (0: report every apply; KALIKO_REPORT_INTERVAL)",
    )
    p.add_argument("--netns", default=None, help="nftables: the network namespace to program (default: ours)")
    a = p.parse_args(argv)
    if not a.node:
        p.error("--node (or KALIKO_NODE) is required")
    return AgentSettings(
        node=a.node,
        kafka=a.kafka,
        mqtt=a.mqtt,
        controllers=tuple(x for x in a.controller.split(",") if x),
        dataplane=a.dataplane,
        health_port=a.health_port,
        health_host=a.health_host,
        grpc_listen=a.grpc_listen,
        etcd=a.etcd,
        min_apply_interval=a.min_apply_interval,
        resync_interval=a.resync_interval,
        netns=a.netns,
        cluster=a.cluster,
        max_lag=a.max_lag,
        report_interval=a.report_interval,
    )
