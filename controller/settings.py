"""The controller's settings: command-line flags with ``KALIKO_*`` environment defaults.

Owns parsing and checking the controller's configuration (the flags compose.yaml, the lab and
the fv tests pass; `tests/unit/test_compose.py` holds the contract). Precedence, as Felix's:
flag, then environment variable, then built-in default. Every ``HOST:PORT`` is checked here, so
a typo fails at start with the flag's name, not later in a client library; so is the cluster
name (``--cluster`` / ``KALIKO_CLUSTER``, a DNS-1123 label, default ``kaliko``), which namespaces
everything the controller uses on the shared services (`iokit.cluster_name`). It builds nothing
(`controller.app` does).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from dataclasses import dataclass

from iokit.cluster_name import DEFAULT_CLUSTER, InvalidClusterName, check_cluster_name

DEFAULT_PARTITIONS = 64
HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9.:\[\]-]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    etcd: str
    kafka: str
    mqtt: str
    listen: str
    health_port: int
    identity: str
    lease_ttl: int
    flush_interval: float
    health_host: str = "127.0.0.1"
    cluster: str = DEFAULT_CLUSTER
    partitions: int = DEFAULT_PARTITIONS
    """The diff topic's partition count when the controller has to create it."""


def host_port(value: str) -> str:
    """``value`` if it is ``HOST:PORT`` with a port in 1-65535 (0 allowed: pick a free port)."""
    match = HOST_PORT.match(value)
    if match is None or int(match["port"]) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return value


def _port(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (0-65535)")
    return int(value)


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number greater than 0")
    return int(value)


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be greater than 0")
    return number


def cluster_name(value: str) -> str:
    """An argparse type: ``value`` if it is a valid cluster name (argparse adds the flag's name)."""
    try:
        return check_cluster_name(value)
    except InvalidClusterName as err:
        raise argparse.ArgumentTypeError(f"{err} (from --cluster or KALIKO_CLUSTER)") from None


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def parse_args(argv: list[str] | None = None) -> ControllerSettings:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="kaliko-controller", description="Kaliko controller (leader-elected)")
    p.add_argument(
        "--etcd", type=host_port, default=env("KALIKO_ETCD", "127.0.0.1:2379"), help="etcd HOST:PORT"
    )
    p.add_argument(
        "--kafka",
        type=host_port,
        default=env("KALIKO_KAFKA", "127.0.0.1:9092"),
        help="Kafka bootstrap HOST:PORT",
    )
    p.add_argument(
        "--mqtt", type=host_port, default=env("KALIKO_MQTT", "127.0.0.1:1883"), help="MQTT broker HOST:PORT"
    )
    p.add_argument(
        "--listen",
        type=host_port,
        default=env("KALIKO_LISTEN", "127.0.0.1:50051"),
        help="gRPC address: AdminService, NodeSync, health, reflection (KALIKO_LISTEN)",
    )
    p.add_argument(
        "--health-port",
        type=_port,
        default=_port(env("KALIKO_HEALTH_PORT", "0")),
        help="port for /liveness, /readiness and /metrics on 127.0.0.1 (0: any free port)",
    )
    p.add_argument(
        "--health-host",
        default=env("KALIKO_HEALTH_HOST", "127.0.0.1"),
        help="address the health/metrics endpoint binds (0.0.0.0 only inside a container)",
    )
    p.add_argument(
        "--cluster",
        type=cluster_name,
        default=env("KALIKO_CLUSTER", DEFAULT_CLUSTER),
        help="the cluster's name: prefix of its etcd keys (/<cluster>/v1/), Kafka topic "
        "(<cluster>.node-diffs) and MQTT topics (<cluster>/nodes/...) (KALIKO_CLUSTER)",
    )
    p.add_argument(
        "--partitions",
        type=_positive_int,
        default=env("KALIKO_DIFF_PARTITIONS", str(DEFAULT_PARTITIONS)),
        help="partitions of the diff topic, when the controller creates it at start because it is "
        "absent (KALIKO_DIFF_PARTITIONS)",
    )
    p.add_argument(
        "--identity",
        default=env("KALIKO_IDENTITY") or default_identity(),
        help="this controller's name in the leader key (default: hostname-pid)",
    )
    p.add_argument(
        "--lease-ttl",
        type=_positive_int,
        default=3,
        help="leader lease TTL in seconds (failover takes about this)",
    )
    p.add_argument(
        "--flush-interval",
        type=_positive_float,
        default=0.005,
        help="seconds: at most one flush (one diff per affected node) per interval",
    )
    a = p.parse_args(argv)
    return ControllerSettings(
        etcd=a.etcd,
        kafka=a.kafka,
        mqtt=a.mqtt,
        listen=a.listen,
        health_port=a.health_port,
        health_host=a.health_host,
        identity=a.identity,
        lease_ttl=a.lease_ttl,
        flush_interval=a.flush_interval,
        cluster=a.cluster,
        partitions=a.partitions,
    )
