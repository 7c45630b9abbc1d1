"""Garbage-collector settling for long-lived processes that hold a large heap of small objects.

Owns `settle_garbage_collector`, called once a process has built the state it will keep (the
controller after its first compile, each load-harness agent worker once its nodes have joined).
It does not own when to call it, nor any other memory policy.

Why: CPython's young collection runs every 700 net allocations of containers and traverses every
young container, so a process that copies large containers on each change (a graph's indexes, a
node's address sets) spends a large share of its CPU collecting. Freezing what was built moves it
out of the collector's view; a higher young threshold collects the rest a few times a minute.
Reference cycles are rare in these heaps (RSS stays flat in the benchmarks), so nothing builds up.
"""

from __future__ import annotations

import gc

GC_GEN0_THRESHOLD = 100_000


def settle_garbage_collector() -> None:
    """Collect, freeze what survives, and collect young objects every `GC_GEN0_THRESHOLD`
    allocations at least (the controller's graph: a young collection scanning it cost 30-130 ms,
    `loadtest.bench_core --gc-threshold`; the simulated agents: a third of their CPU, see
    `docs/bench/results.md`)."""
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(GC_GEN0_THRESHOLD, gen0), gen1, gen2)
