"""Per-task statistics, the way Locust keeps them: one entry per (category, task) plus "Aggregated".

Owns the counters the live table and the CSV files show — changes accepted, failures, resolved
convergence latencies (ms), bytes per affected node — and the once-a-second history rows (rates
and percentiles over the last ``window`` seconds, cumulative totals), like Locust's
``stats_history``. A "request" here is one change, and its "response time" is its convergence:
API accepted → last affected node applied. It does not resolve changes (`loadtest.ledger`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from loadtest.stats import LOCUST_PERCENTILES, Distribution, percentile

AGGREGATED = "Aggregated"


@dataclass(slots=True)
class TaskEntry:
    category: str
    name: str
    changes: int = 0
    failures: int = 0
    unchanged: int = 0
    latencies: Distribution = field(default_factory=Distribution)
    bytes_total: int = 0
    bytes_samples: int = 0
    accepted_times: deque[float] = field(default_factory=deque)
    failure_times: deque[float] = field(default_factory=deque)
    recent: deque[tuple[float, float]] = field(default_factory=deque)

    def rate(self, now: float, window: float) -> float:
        _trim(self.accepted_times, now - window)
        return len(self.accepted_times) / window

    def failure_rate(self, now: float, window: float) -> float:
        _trim(self.failure_times, now - window)
        return len(self.failure_times) / window

    def recent_percentile(self, now: float, window: float, q: float) -> float:
        while self.recent and self.recent[0][0] < now - window:
            self.recent.popleft()
        return percentile(sorted(v for _, v in self.recent), q)

    @property
    def mean_bytes(self) -> float:
        return self.bytes_total / self.bytes_samples if self.bytes_samples else 0.0


def _trim(times: deque[float], horizon: float) -> None:
    while times and times[0] < horizon:
        times.popleft()


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One second of the run: current rates and window percentiles, then cumulative totals."""

    timestamp: float
    nodes: int
    rate: float
    failure_rate: float
    percentiles: dict[float, float]
    total_changes: int
    total_failures: int
    total_median: float
    total_mean: float
    total_min: float
    total_max: float
    total_mean_bytes: float


class StatsBook:
    """Entries by task, the aggregate and the history; see the module docstring."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self.entries: dict[tuple[str, str], TaskEntry] = {}
        self.total = TaskEntry("", AGGREGATED)
        self.history: list[HistoryRow] = []

    def entry(self, category: str, name: str) -> TaskEntry:
        key = (category, name)
        if key not in self.entries:
            self.entries[key] = TaskEntry(category, name)
        return self.entries[key]

    def _both(self, category: str, name: str) -> tuple[TaskEntry, TaskEntry]:
        return self.entry(category, name), self.total

    def accepted(self, category: str, name: str, at: float) -> None:
        for entry in self._both(category, name):
            entry.changes += 1
            entry.accepted_times.append(at)

    def unchanged(self, category: str, name: str) -> None:
        for entry in self._both(category, name):
            entry.unchanged += 1

    def failed(self, category: str, name: str, at: float) -> None:
        for entry in self._both(category, name):
            entry.failures += 1
            entry.failure_times.append(at)

    def resolved(self, category: str, name: str, at: float, latency_ms: float, node_bytes: list[int]) -> None:
        for entry in self._both(category, name):
            entry.latencies.add(latency_ms)
            entry.recent.append((at, latency_ms))
            entry.bytes_total += sum(node_bytes)
            entry.bytes_samples += len(node_bytes)

    def tick(self, now: float, nodes: int) -> HistoryRow:
        """Append (and return) the history row for ``now``."""
        total = self.total
        ordered = total.latencies.ordered
        row = HistoryRow(
            timestamp=now,
            nodes=nodes,
            rate=total.rate(now, self.window),
            failure_rate=total.failure_rate(now, self.window),
            percentiles={q: total.recent_percentile(now, self.window, q) for q in LOCUST_PERCENTILES},
            total_changes=total.changes,
            total_failures=total.failures,
            total_median=percentile(ordered, 50),
            total_mean=total.latencies.mean(),
            total_min=ordered[0] if ordered else 0.0,
            total_max=total.latencies.max,
            total_mean_bytes=total.mean_bytes,
        )
        self.history.append(row)
        return row
