"""CPU and memory of the processes under test, sampled once a second with psutil.

Owns the time series ``(t, role, cpu seconds so far, RSS MiB)`` per role ("controller", "agents",
"services", "driver"; a role sums its processes) and the machine's CPU utilisation (the machine
is shared, so other load is part of the context of every figure). `window` gives a role's CPU
seconds and peak RSS between two marks. It does not own the processes.

Invariant: a process that has exited keeps its last sample (its CPU does not go backwards).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    role: str
    cpu_s: float
    rss_mb: float


@dataclass(slots=True)
class ResourceSampler:
    pids: Callable[[], dict[str, list[int]]]
    interval: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    machine: list[tuple[float, float]] = field(default_factory=list)
    _procs: dict[int, psutil.Process] = field(default_factory=dict)
    _last: dict[int, tuple[float, float]] = field(default_factory=dict)

    def sample(self) -> None:
        now = time.time()
        for role, pids in self.pids().items():
            cpu = rss = 0.0
            for pid in dict.fromkeys(pids):
                cpu_s, rss_mb = self._read(pid)
                cpu += cpu_s
                rss += rss_mb
            self.samples.append(Sample(now, role, cpu, rss))
        self.machine.append((now, psutil.cpu_percent(interval=None)))

    def _read(self, pid: int) -> tuple[float, float]:
        try:
            process = self._procs.get(pid) or self._procs.setdefault(pid, psutil.Process(pid))
            with process.oneshot():
                times = process.cpu_times()
                values = (times.user + times.system, process.memory_info().rss / 2**20)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return self._last.get(pid, (0.0, 0.0))
        self._last[pid] = values
        return values

    async def run(self) -> None:
        psutil.cpu_percent(interval=None)
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def window(self, role: str, start: float, end: float) -> dict[str, float]:
        """CPU seconds used by ``role`` in [start, end] and its peak RSS there (MiB)."""
        inside = [s for s in self.samples if s.role == role and start <= s.t <= end]
        before = [s for s in self.samples if s.role == role and s.t <= start]
        if not inside:
            return {"cpu_s": 0.0, "rss_mb": 0.0}
        first = before[-1] if before else inside[0]
        return {
            "cpu_s": round(inside[-1].cpu_s - first.cpu_s, 2),
            "rss_mb": round(max(s.rss_mb for s in inside), 1),
        }

    def machine_busy(self, start: float, end: float) -> float:
        """Mean machine CPU utilisation (percent of all cores) in [start, end]."""
        values = [v for t, v in self.machine if start <= t <= end]
        return round(sum(values) / len(values), 1) if values else 0.0
