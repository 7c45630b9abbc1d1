"""The agent's desired state: applies a node's diff stream in order, or says it needs a snapshot.

Owns the stream position check (epoch, seq) and the `NodeState` the agent wants programmed. It
does not own programming (data planes) or when to ask for a snapshot over the network (the agent's
shell acts on `Verdict.NEEDS_SNAPSHOT`).

Invariants:
* Before the first snapshot nothing is applied: deltas are rejected (``NEEDS_SNAPSHOT``).
* A snapshot is accepted from a newer epoch, or from the current epoch at or after the current
  seq; it replaces the whole state. Anything from an older epoch is ``STALE``.
* A delta is applied only when its epoch equals the current one and its seq is current + 1. An
  older seq (a duplicate) is ignored (``STALE``); a gap or another epoch → ``NEEDS_SNAPSHOT``.
* An op that does not fit the state (`DiffError`) leaves the state unchanged → ``NEEDS_SNAPSHOT``.
* `offer_run` (a batch's consecutive deltas as one) ends where offering them one by one would.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from policycore.diff import DiffError, NodeDiff, StreamPosition, apply_ops
from policycore.ir import NodeState


class Verdict(enum.Enum):
    APPLIED = "applied"
    STALE = "stale"
    NEEDS_SNAPSHOT = "needs_snapshot"


@dataclass(slots=True)
class DesiredState:
    node: str
    state: NodeState = field(default_factory=NodeState)
    position: StreamPosition | None = None
    last_error: str | None = None

    @property
    def synced(self) -> bool:
        """Whether a first snapshot has been applied."""
        return self.position is not None

    def offer(self, diff: NodeDiff) -> Verdict:
        """Apply ``diff`` if it is next in the stream (or a usable snapshot); say what happened."""
        if diff.node != self.node:
            self.last_error = f"diff for node {diff.node!r} offered to {self.node!r}"
            return Verdict.STALE
        pos = self.position
        if diff.snapshot:
            if pos is not None and (
                diff.position.epoch < pos.epoch
                or (diff.position.epoch == pos.epoch and diff.position.seq < pos.seq)
            ):
                return Verdict.STALE
            return self._apply(diff, snapshot=True)
        if pos is None:
            return Verdict.NEEDS_SNAPSHOT
        if diff.position.epoch != pos.epoch:
            return Verdict.STALE if diff.position.epoch < pos.epoch else Verdict.NEEDS_SNAPSHOT
        if diff.position.seq <= pos.seq:
            return Verdict.STALE
        if diff.position.seq != pos.seq + 1:
            self.last_error = f"gap in stream: at seq {pos.seq}, got {diff.position.seq}"
            return Verdict.NEEDS_SNAPSHOT
        return self._apply(diff, snapshot=False)

    def offer_run(self, diffs: Sequence[NodeDiff]) -> int:
        """Apply the leading diffs of ``diffs`` that are the stream's next deltas, as one: how many.

        The same result as offering them one by one (each is this node's next seq in the current
        epoch), at the cost of one state copy and one copy per touched set instead of one per
        diff. Fewer than two qualifying: nothing is applied (0; `offer` the head instead). An op
        that does not fit: they are offered one by one up to the diff at fault, which is left
        (unapplied, counted out) for `offer` to refuse.
        """
        pos = self.position
        if pos is None:
            return 0
        run = 0
        for diff in diffs:
            if diff.snapshot or diff.node != self.node or diff.position.epoch != pos.epoch:
                break
            if diff.position.seq != pos.seq + run + 1:
                break
            run += 1
        if run < 2:
            return 0
        try:
            self.state = apply_ops(self.state, (op for diff in diffs[:run] for op in diff.ops))
        except DiffError:
            return self._offer_each(diffs[:run])
        self.position = diffs[run - 1].position
        self.last_error = None
        return run

    def _offer_each(self, diffs: Sequence[NodeDiff]) -> int:
        applied = 0
        for diff in diffs:
            if self._apply(diff, snapshot=False) is not Verdict.APPLIED:
                break
            applied += 1
        return applied

    def _apply(self, diff: NodeDiff, *, snapshot: bool) -> Verdict:
        try:
            self.state = apply_ops(self.state, diff.ops, snapshot=snapshot)
        except DiffError as err:
            self.last_error = str(err)
            return Verdict.NEEDS_SNAPSHOT
        self.position = diff.position
        self.last_error = None
        return Verdict.APPLIED
