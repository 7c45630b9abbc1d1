"""Convergence bookkeeping: which datastore revisions every affected node has applied.

Owns `ConvergenceTracker`, the pure record of (a) the revision the engine has compiled, (b) each
message sent to each node (epoch, seq, revision) that the node has not yet acknowledged and (c)
what each node reports as applied. It does not own transport or waiting (the controller's admin
API awaits changes to it) and it never reads a clock.

Rule (GUIDE §2.5): revision R is converged when the engine has compiled every change up to R and
every node that was sent a message with revision <= R has reported applying that message (same
epoch, seq at or beyond it). A node whose report is from another epoch has applied nothing of
this epoch. A change that affects no node converges as soon as it is compiled.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What a node says it has programmed (from its status on MQTT)."""

    node: str
    epoch: int
    seq: int
    revision: int
    ready: bool
    online: bool = True
    last_error: str | None = None
    state_hash: str | None = None


@dataclass(slots=True)
class _NodeLedger:
    outstanding: deque[tuple[int, int]] = field(default_factory=deque)  # (seq, revision), seq ascending
    report: NodeReport | None = None


class ConvergenceTracker:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.compiled_revision = 0
        self._nodes: dict[str, _NodeLedger] = {}

    def compiled(self, revision: int) -> None:
        """The engine has fed every datastore change up to ``revision`` into the graph and flushed."""
        self.compiled_revision = max(self.compiled_revision, revision)

    def sent(self, node: str, seq: int, revision: int) -> None:
        """A message (this epoch, ``seq``) reflecting ``revision`` was published to ``node``."""
        ledger = self._nodes.setdefault(node, _NodeLedger())
        report = ledger.report
        if report is not None and report.epoch == self.epoch and report.seq >= seq:
            return
        ledger.outstanding.append((seq, revision))

    def reported(self, report: NodeReport) -> None:
        """A node's status arrived; drop what it has applied."""
        ledger = self._nodes.setdefault(report.node, _NodeLedger())
        ledger.report = report
        if report.epoch != self.epoch or not report.ready:
            return
        while ledger.outstanding and ledger.outstanding[0][0] <= report.seq:
            ledger.outstanding.popleft()

    def forget(self, node: str) -> None:
        """The node left the cluster (no endpoints, no Node resource): stop waiting for it."""
        self._nodes.pop(node, None)

    def lagging(self, revision: int) -> list[str]:
        """Nodes that still owe a message with revision <= ``revision``, sorted."""
        return sorted(
            n
            for n, ledger in self._nodes.items()
            if ledger.outstanding and ledger.outstanding[0][1] <= revision
        )

    def is_converged(self, revision: int) -> bool:
        return self.compiled_revision >= revision and not self.lagging(revision)

    def applied_revision(self, node: str) -> int:
        """The newest revision the node has fully applied (0 if it never reported this epoch)."""
        ledger = self._nodes.get(node)
        if ledger is None or ledger.report is None or ledger.report.epoch != self.epoch:
            return 0
        if ledger.outstanding:
            return max(ledger.report.revision, ledger.outstanding[0][1] - 1)
        return max(ledger.report.revision, self.compiled_revision)

    def report_of(self, node: str) -> NodeReport | None:
        ledger = self._nodes.get(node)
        return ledger.report if ledger else None

    def nodes(self) -> list[str]:
        return sorted(self._nodes)
