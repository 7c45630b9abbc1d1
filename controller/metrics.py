"""The controller's Prometheus metrics, Felix-style names with a ``kaliko_`` prefix.

Owns one `ControllerMetrics` per registry (never registered at import time, so tests use private
registries). It does not serve them (`iokit.health`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.calc_graph_update_seconds = Histogram(
            "kaliko_calc_graph_update_time_seconds",
            "Time to process one batch of datastore updates and flush",
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
        )
        self.invalid_resources = Counter(
            "kaliko_invalid_resources",
            "Datastore values that were not valid resources (treated as absent)",
            registry=registry,
        )
        self.compiled_revision = Gauge(
            "kaliko_compiled_revision", "Newest datastore revision compiled and flushed", registry=registry
        )
        self.snapshots = Counter("kaliko_snapshots", "Snapshots served to agents", registry=registry)
        self.messages_published = Counter(
            "kaliko_node_messages_published", "Node diffs published on the bus", registry=registry
        )
        self.bytes_published = Counter(
            "kaliko_node_message_bytes_published",
            "Bytes of node diffs published on the bus",
            registry=registry,
        )
        self.is_leader = Gauge("kaliko_leader", "1 while this controller is the leader", registry=registry)
        self.epoch = Gauge("kaliko_epoch", "The leader epoch of this controller", registry=registry)
        self.admin_requests = Counter(
            "kaliko_admin_requests",
            "Admin API requests by method and result",
            ["method", "code"],
            registry=registry,
        )
