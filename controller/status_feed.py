"""The status feed: agents' MQTT statuses → the convergence tracker and the node-status table.

Owns the latest status of every node as reported (including offline nodes) and turning each into
a `NodeReport` for the tracker. A status with wrong field types is counted and skipped (the MQTT
watcher already skips payloads that are not JSON objects). It does not decide convergence
(`ConvergenceTracker`).
"""

from __future__ import annotations

import logging
from typing import Any

from iokit.status import StatusWatcher
from policycore.convergence import ConvergenceTracker, NodeReport

log = logging.getLogger(__name__)


def to_report(node: str, status: dict[str, Any]) -> NodeReport:
    """A `NodeReport` from a status payload; raises ValueError naming a field of the wrong type."""

    def integer(name: str) -> int:
        value = status.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"status.{name}: expected an integer, got {value!r}")
        return value

    online = status.get("online", True)
    ready = status.get("ready", False)
    if not isinstance(online, bool) or not isinstance(ready, bool):
        raise ValueError("status.online/ready: expected booleans")
    error = status.get("last_error")
    digest = status.get("state_hash")
    return NodeReport(
        node,
        integer("epoch"),
        integer("seq"),
        integer("revision"),
        ready and online,
        online,
        error if isinstance(error, str) else None,
        digest if isinstance(digest, str) else None,
    )


class StatusFeed:
    def __init__(self, watcher: StatusWatcher) -> None:
        self.watcher = watcher
        self.latest: dict[str, NodeReport] = {}
        self.malformed = 0
        self.tracker: ConvergenceTracker | None = None
        self.on_report: list[Any] = []

    def attach(self, tracker: ConvergenceTracker) -> None:
        """Feed a (new epoch's) tracker, replaying what is known so far."""
        self.tracker = tracker
        for report in self.latest.values():
            tracker.reported(report)

    async def run(self) -> None:
        await self.watcher.start()
        async for node, status in self.watcher:
            try:
                report = to_report(node, status)
            except ValueError as err:
                self.malformed += 1
                log.warning("skipping malformed status of %s: %s", node, err)
                continue
            self.latest[node] = report
            if self.tracker is not None:
                self.tracker.reported(report)
            for callback in self.on_report:
                callback(report)
