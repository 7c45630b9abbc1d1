"""The convergence ledger: per change, from "API accepted" to "last affected node applied".

Owns the harness's measurement state, fed from three sides on one wall clock (``time.time()``,
shared by every process on the machine):

* the driver: each accepted write ``(task, accepted_at, revision R)`` (`change`), or its error;
* the controller (through `loadtest.recorders`): every published message ``(node, revision F,
  bytes, t)`` and every flush's compiled revision (`published`, `flushed`);
* the agents: every applied position ``(node, revision, t)`` (`applied`), the bytes of messages
  whose apply changed nothing (`unaffected`), Kafka hops, restarts and every snapshot a node asked
  for, with its cause (`snapshot`: start, gap, cut-off, overflow).

Rule: the engine gives every message of one flush the revision it had compiled, so flush F covers
change R iff F is the first flush with F >= R. The nodes sent a message at F are R's affected
nodes (when one flush carries several changes, each is charged all of the flush's nodes: an upper
bound). Node n has applied R at the first report with revision >= F (a later delta or a snapshot
includes it). Convergence(R) = max over its nodes of that time - accepted_at; a change no node
needed converges when its flush happened. A flush is known complete once a flush record at or
beyond it arrived (records of one controller arrive in order).

It does not read clocks, do I/O or decide what a change is. Invariants: a change is resolved at
most once; samples are never negative (clamped, and counted in ``early``); at `finish`, every
change still waiting is counted lost, with the nodes it waited for.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class ChangeRecord:
    """One accepted change and, once resolved, when each of its nodes applied it."""

    id: int
    task: str
    category: str
    sent: float
    accepted: float
    revision: int
    flush: int | None = None
    waiting: set[str] = field(default_factory=set)
    applied: dict[str, float] = field(default_factory=dict)
    converged: float | None = None
    lost_nodes: tuple[str, ...] = ()

    @property
    def resolved(self) -> bool:
        return self.converged is not None

    def latency_ms(self, exclude: frozenset[str] = frozenset(), flush_time: float = 0.0) -> float:
        """Accepted → last node applied (ignoring ``exclude``; the flush time when none is left)."""
        times = [t for node, t in self.applied.items() if node not in exclude]
        end = max(times) if times else max(flush_time, self.accepted)
        return max(0.0, (end - self.accepted) * 1000.0)


@dataclass(slots=True)
class Failure:
    task: str
    category: str
    error: str
    at: float


@dataclass(slots=True)
class Restart:
    node: str
    started: float
    ready: float

    @property
    def ms(self) -> float:
        return (self.ready - self.started) * 1000.0


class ConvergenceLedger:
    """See the module docstring. ``baseline`` drops records of the warm-up (revision <= baseline)."""

    def __init__(self, baseline: int = 0) -> None:
        self.baseline = baseline
        self.changes: list[ChangeRecord] = []
        self.failures: list[Failure] = []
        self.restarts: list[Restart] = []
        self.hops: list[tuple[float, float]] = []
        self.lags: dict[str, list[tuple[float, float]]] = {}
        self.milestones: dict[str, float] = {}
        self.unaffected_bytes = 0
        self.unaffected_messages = 0
        self.snapshots = 0
        self.snapshot_causes: dict[str, dict[str, int]] = {}
        self.early = 0
        self.sent: dict[int, dict[str, int]] = {}
        self.flush_time: dict[int, float] = {}
        self._flushes: list[int] = []
        self._complete = 0
        self._applied: dict[str, tuple[list[int], list[float]]] = {}
        self._dirty: set[str] = set()  # nodes that reported since the last `resolve`
        self._pending: list[ChangeRecord] = []

    # -- feeds --------------------------------------------------------------------------------

    def change(self, task: str, category: str, sent: float, accepted: float, revision: int) -> ChangeRecord:
        record = ChangeRecord(len(self.changes), task, category, sent, accepted, revision)
        self.changes.append(record)
        self._pending.append(record)
        return record

    def failed(self, task: str, category: str, error: str, at: float) -> None:
        self.failures.append(Failure(task, category, error, at))

    def published(self, node: str, revision: int, nbytes: int, t: float) -> None:
        if revision <= self.baseline:
            return
        nodes = self.sent.get(revision)
        if nodes is None:
            nodes = self.sent[revision] = {}
            self._add_flush(revision, t)
        nodes[node] = nodes.get(node, 0) + nbytes

    def flushed(self, revision: int, t: float) -> None:
        if revision > self.baseline and revision not in self.flush_time:
            self._add_flush(revision, t)
        self._complete = max(self._complete, revision)

    def _add_flush(self, revision: int, t: float) -> None:
        self.flush_time[revision] = t
        insort(self._flushes, revision)

    def applied(self, node: str, revision: int, t: float) -> None:
        revisions, times = self._applied.setdefault(node, ([], []))
        if revisions and revision <= revisions[-1]:
            return
        revisions.append(revision)
        times.append(t)
        self._dirty.add(node)

    def unaffected(self, node: str, revision: int, nbytes: int) -> None:
        if revision > self.baseline:
            self.unaffected_bytes += nbytes
            self.unaffected_messages += 1

    def hop(self, t: float, ms: float) -> None:
        self.hops.append((t, ms))

    def snapshot(self, node: str, cause: str) -> None:
        self.snapshots += 1
        causes = self.snapshot_causes.setdefault(node, {})
        causes[cause] = causes.get(cause, 0) + 1

    def restarted(self, node: str, started: float, ready: float) -> None:
        self.restarts.append(Restart(node, started, ready))

    def lag(self, role: str, t: float, ms: float) -> None:
        self.lags.setdefault(role, []).append((t, ms))

    def milestone(self, name: str, t: float) -> None:
        self.milestones.setdefault(name, t)

    # -- queries --------------------------------------------------------------------------------

    def watermark(self, node: str) -> int:
        entry = self._applied.get(node)
        return entry[0][-1] if entry and entry[0] else 0

    def applied_at(self, node: str, revision: int) -> float | None:
        """When ``node`` first reported a revision >= ``revision`` (None: not yet)."""
        entry = self._applied.get(node)
        if entry is None:
            return None
        index = bisect_left(entry[0], revision)
        return entry[1][index] if index < len(entry[0]) else None

    def nodes_converged(self, nodes: Iterable[str], revision: int) -> int:
        return sum(1 for node in nodes if self.watermark(node) >= revision)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def in_flight_by_task(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self._pending:
            counts[record.task] = counts.get(record.task, 0) + 1
        return counts

    @property
    def compiled(self) -> int:
        return self._complete

    # -- resolution -----------------------------------------------------------------------------

    def resolve(self) -> list[ChangeRecord]:
        """Resolve what can be; return the changes resolved by this call."""
        still: list[ChangeRecord] = []
        done: list[ChangeRecord] = []
        dirty, self._dirty = self._dirty, set()
        for record in self._pending:
            if self._advance(record, dirty):
                done.append(record)
            else:
                still.append(record)
        self._pending = still
        return done

    def _advance(self, record: ChangeRecord, dirty: set[str]) -> bool:
        """Look at the record's waiting nodes: all of them once its flush is known, then only
        those that reported since (an answer changes only when a node reports)."""
        if record.flush is None:
            index = bisect_left(self._flushes, record.revision)
            if index == len(self._flushes) or self._flushes[index] > self._complete:
                return False
            record.flush = self._flushes[index]
            record.waiting = set(self.sent.get(record.flush, ()))
            candidates = set(record.waiting)
        else:
            candidates = record.waiting & dirty
        flush = record.flush
        for node in candidates:
            at = self.applied_at(node, flush)
            if at is None:
                continue
            if at < record.accepted:
                self.early += 1
                at = record.accepted
            record.applied[node] = at
            record.waiting.discard(node)
        if record.waiting:
            return False
        ends = list(record.applied.values()) or [max(self.flush_time.get(flush, 0.0), record.accepted)]
        record.converged = max(ends)
        return True

    def finish(self) -> list[ChangeRecord]:
        """Resolve a last time; every change still waiting is lost. Returns the lost changes."""
        self.resolve()
        lost = self._pending
        for record in lost:
            record.lost_nodes = (
                tuple(sorted(record.waiting)) if record.flush is not None else ("<uncompiled>",)
            )
        self._pending = []
        return lost

    def bytes_of(self, record: ChangeRecord) -> dict[str, int]:
        """Bytes each affected node was sent in the message that carried ``record``."""
        return self.sent.get(record.flush, {}) if record.flush is not None else {}
