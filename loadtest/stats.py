"""Latency statistics for the harness: nearest-rank percentiles, summaries and windowed history.

Owns the arithmetic every report uses, so the JSON, CSV, HTML and live table agree: `percentile`
(nearest rank: the smallest sample such that at least q % of the samples are at or below it — the
conservative choice for latency, never an interpolated value no run produced), `summary`, and
`Windows`, which buckets timestamped samples into fixed windows for "percentiles over time". It
does not own what a sample means (`loadtest.ledger`) or how it is printed.

Invariants: an empty sample set summarises to zeros with ``count == 0`` (never an exception, never
NaN, so the JSON schema holds for a run with no changes); percentiles are monotone in q.
"""

from __future__ import annotations

import math
from bisect import insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

LOCUST_PERCENTILES = (50, 66, 75, 80, 90, 95, 98, 99, 99.9, 99.99, 100)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence; 0.0 when empty. ``q`` in [0, 100]."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile: q must be within [0, 100], got {q}")
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def summary(values: Iterable[float], quantiles: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """``{"p50": .., "p90": .., "p99": .., "max", "min", "mean", "count"}`` over ``values``."""
    ordered = sorted(values)
    out: dict[str, float] = {_name(q): round(percentile(ordered, q), 3) for q in quantiles}
    out["max"] = round(float(ordered[-1]), 3) if ordered else 0.0
    out["min"] = round(float(ordered[0]), 3) if ordered else 0.0
    out["mean"] = round(sum(ordered) / len(ordered), 3) if ordered else 0.0
    out["count"] = len(ordered)
    return out


def _name(q: float) -> str:
    text = f"{q:g}".replace(".", "_")
    return f"p{text}"


@dataclass(slots=True)
class Distribution:
    """Samples kept sorted as they arrive (for live percentiles over a growing run)."""

    ordered: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        insort(self.ordered, value)

    def __len__(self) -> int:
        return len(self.ordered)

    def percentile(self, q: float) -> float:
        return percentile(self.ordered, q)

    def mean(self) -> float:
        return sum(self.ordered) / len(self.ordered) if self.ordered else 0.0

    @property
    def max(self) -> float:
        return self.ordered[-1] if self.ordered else 0.0


@dataclass(slots=True)
class Windows:
    """Timestamped samples grouped into windows of ``width`` seconds starting at ``origin``."""

    origin: float
    width: float = 5.0
    buckets: dict[int, list[float]] = field(default_factory=dict)

    def add(self, t: float, value: float) -> None:
        index = int((t - self.origin) // self.width)
        self.buckets.setdefault(index, []).append(value)

    def series(self, quantiles: Sequence[float] = (50, 99)) -> list[tuple[float, dict[str, float]]]:
        """``[(window start offset in s, {"p50": .., "p99": .., "count": n}), ...]`` in time order."""
        rows = []
        for index in sorted(self.buckets):
            ordered = sorted(self.buckets[index])
            values = {_name(q): percentile(ordered, q) for q in quantiles}
            values["count"] = float(len(ordered))
            rows.append((index * self.width, values))
        return rows
