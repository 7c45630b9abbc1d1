"""A cluster's name, and the names it takes on the shared services: its Kafka topic and MQTT prefix.

Owns the rule for a cluster name and the two names derived from it that `iokit` speaks:

* the Kafka topic of node diffs, ``<cluster>.node-diffs`` (`diff_topic`);
* the MQTT topic prefix of node statuses, ``<cluster>/nodes`` (`status_prefix`; the topics
  themselves are `iokit.status.StatusTopics`).

The etcd key layout built on the same name, ``/<cluster>/v1/...``, is the controller's
(`controller.resource_store.KeyLayout`). This module does not decide which cluster a process
belongs to (its settings do: ``--cluster`` / ``KALIKO_CLUSTER``).

Why: several Kaliko clusters may share one etcd, one Kafka and one MQTT broker. Every key and
topic a cluster uses starts with its name, so two clusters with the same node names never read
each other's resources, diffs or statuses, and never stand behind each other's leader key.

Invariants: a cluster name is a DNS-1123 label (1-63 characters: lowercase letters, digits and
``-``, beginning and ending with a letter or digit), so it is valid as an etcd path segment, in a
Kafka topic name and in an MQTT topic level, and contains none of ``/ . + #``; the default cluster
``kaliko`` keeps the names the documentation and compose.yaml show (``/kaliko/v1/...``,
``kaliko.node-diffs``, ``kaliko/nodes/<node>/status``).
"""

from __future__ import annotations

import re

DEFAULT_CLUSTER = "kaliko"
MAX_LENGTH = 63
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class InvalidClusterName(ValueError):
    """A cluster name that is not a DNS-1123 label; the message says what is wrong with it."""


def check_cluster_name(name: str) -> str:
    """``name`` if it is a valid cluster name, else `InvalidClusterName` with the reason."""
    if not isinstance(name, str) or not name:
        raise InvalidClusterName(f"{name!r} is not a cluster name: it must not be empty")
    if len(name) > MAX_LENGTH:
        raise InvalidClusterName(f"{name!r} is {len(name)} characters long; a cluster name has at most 63")
    if not _DNS_LABEL.match(name):
        raise InvalidClusterName(
            f"{name!r} is not a DNS-1123 label: use lowercase letters, digits and '-', "
            "beginning and ending with a letter or digit"
        )
    return name


def diff_topic(cluster: str) -> str:
    """The Kafka topic that carries ``cluster``'s node diffs."""
    return f"{check_cluster_name(cluster)}.node-diffs"


def status_prefix(cluster: str) -> str:
    """The MQTT topic prefix under which ``cluster``'s nodes report their status."""
    return f"{check_cluster_name(cluster)}/nodes"
