"""The live terminal view of a run, like Locust's console stats: a rich table and a progress bar.

Owns rendering only: one row per task plus "Aggregated" (changes, failures, in flight,
convergence p50/p95/p99/max in ms, bytes per affected node, changes/s over the last 10 s), a
progress bar over the current phase and a status line (nodes converged, Kafka hop p99, snapshots,
CPU and RSS of the controller and agents, machine load). On a terminal it redraws twice a second;
otherwise it prints one status line every ``log_every`` seconds. It reads the `Run`, never
changes it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from loadtest.stats import percentile
from loadtest.taskstats import TaskEntry

if TYPE_CHECKING:
    from loadtest.runner import Run


class LiveView:
    def __init__(self, run: Run, console: Console | None = None, *, log_every: float = 10.0) -> None:
        self.run = run
        self.console = console or Console(stderr=True)
        self._live: Live | None = None
        self._log_every = log_every
        self._last_log = 0.0

    def __enter__(self) -> LiveView:
        if self.console.is_terminal:
            self._live = Live(self.render(), console=self.console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(None, None, None)
            self._live = None

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render())
            return
        now = time.monotonic()
        if now - self._last_log >= self._log_every:
            self._last_log = now
            self.console.print(self.status_line(), highlight=False)

    def render(self) -> Group:
        return Group(self.table(), self.progress(), Text(self.status_line()))

    def table(self) -> Table:
        run = self.run
        table = Table(title=f"kaliko bench — {run.params.scenario} ({run.params.backend})", expand=False)
        for name, justify in (
            ("Type", "left"),
            ("Name", "left"),
            ("# changes", "right"),
            ("# fails", "right"),
            ("in flight", "right"),
            ("p50 ms", "right"),
            ("p95 ms", "right"),
            ("p99 ms", "right"),
            ("max ms", "right"),
            ("B/node", "right"),
            ("changes/s", "right"),
        ):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        pending = run.ledger.in_flight_by_task()
        now = time.time()
        for (_, name), entry in sorted(run.book.entries.items()):
            table.add_row(*self._row(entry, pending.get(name, 0), now))
        table.add_row(*self._row(run.book.total, run.ledger.in_flight, now), style="bold")
        return table

    def _row(self, entry: TaskEntry, in_flight: int, now: float) -> list[str]:
        lat = entry.latencies
        return [
            entry.category,
            entry.name,
            str(entry.changes),
            str(entry.failures),
            str(in_flight),
            f"{lat.percentile(50):.0f}",
            f"{lat.percentile(95):.0f}",
            f"{lat.percentile(99):.0f}",
            f"{lat.max:.0f}",
            f"{entry.mean_bytes:.0f}",
            f"{entry.rate(now, self.run.book.window):.1f}",
        ]

    def progress(self) -> Group:
        run, state = self.run, self.run.state
        phase = state.phases.get(state.phase)
        elapsed = time.time() - phase.started if phase else 0.0
        if state.phase == "churn":
            total, done, label = run.params.duration, min(elapsed, run.params.duration), "churn"
        elif state.phase == "warm-up":
            total, done, label = (
                float(run.params.nodes),
                float(state.nodes_ready),
                "warm-up (nodes converged)",
            )
        else:
            total, done, label = 1.0, 1.0 if state.phase in ("check", "stop", "done") else 0.0, state.phase
        caption = Text(f"{label}: {done:.0f}/{total:.0f}  ({elapsed:.0f}s in phase)")
        return Group(caption, ProgressBar(total=max(total, 1e-9), completed=done, width=60))

    def status_line(self) -> str:
        run, state = self.run, self.run.state
        now = time.time()
        hops = sorted(ms for t, ms in run.ledger.hops[-5000:] if t >= now - 10)
        usage = []
        for role in ("controller", "agents"):
            samples = [s for s in run.sampler.samples[-40:] if s.role == role]
            if len(samples) >= 2:
                a, b = samples[-2], samples[-1]
                usage.append(
                    f"{role} {100 * (b.cpu_s - a.cpu_s) / max(1e-6, b.t - a.t):.0f}% {b.rss_mb:.0f}MiB"
                )
        busy = f"machine {run.sampler.machine[-1][1]:.0f}%" if run.sampler.machine else ""
        p99 = percentile(run.book.total.latencies.ordered, 99)
        return (
            f"[{state.phase}] nodes {state.nodes_ready}/{run.params.nodes}  changes {run.book.total.changes}"
            f"  in flight {run.ledger.in_flight}  p99 {p99:.0f}ms"
            f"  kafka hop p99 {percentile(hops, 99):.1f}ms  snapshots {run.ledger.snapshots}  "
            + "  ".join(usage)
            + f"  {busy}"
        )
