"""Benchmark of the controller engine's cold start, in one process: how long the loop is held.

Owns `LagProbe`, `run` and `main`. It feeds a real `controller.engine.Engine` (with the
controller process's garbage-collector handling) the initial list a syncer would give it: every
resource of the cluster `loadtest cold-start` writes (`loadtest.workload`), or with ``--source
core`` `loadtest.bench_core.generate`'s, encoded as etcd stores them, in that order, then
`InSync`, through the engine's bounded queue, with a publish that only encodes (no broker). Then
every node asks for its snapshot at once (the herd that follows an epoch start). A probe task
measures the loop's lag throughout. A benchmark, not a test: it prints one JSON document.

Measured, for the list (until the epoch markers are out) and for the snapshot herd: wall and CPU
seconds, the longest stretch the loop was held (``max_lag_ms``: how late the probe's 1 ms sleep
woke — what a lease refresh or an MQTT keep-alive would have waited; a timer can wait behind two
stretches, the one running and the one already scheduled), the number of waits over 50 / 200 ms,
and the garbage collector's share; plus decode microseconds per pod
(`controller.resource_store.decode` on every pod value, alone, best of three).

Run: ``.venv/bin/python -m loadtest.bench_cold_start [--pods N ...] [--source core] [--herd N]
[--step-ms MS]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from dataclasses import asdict
from typing import Any

from prometheus_client import CollectorRegistry

from controller.engine import Engine
from controller.metrics import ControllerMetrics
from controller.resource_store import KeyLayout, decode, encode
from iokit.syncer import InSync, Update
from loadtest.bench_core import Shape, _GcClock, generate
from loadtest.workload import Workload, WorkloadSpec
from policycore.convergence import ConvergenceTracker
from policycore.diff import NodeDiff
from policycore.model import Resource, key_of, parse_resource
from policycore.model.kube import Pod
from wire.codec import diff_to_pb, encode_diff

PROBE_INTERVAL = 0.001


class LagProbe:
    """A task that sleeps `PROBE_INTERVAL` in a loop and records how late each wake-up was."""

    def __init__(self) -> None:
        self._lags: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._asleep_since = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="lag-probe")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._asleep_since = loop.time()
            await asyncio.sleep(PROBE_INTERVAL)
            self._lags.append(loop.time() - self._asleep_since - PROBE_INTERVAL)

    def take(self) -> dict[str, Any]:
        """The lags since the last call, the current sleep's so far included (when the loop has
        just been held, the probe has not run yet to record it)."""
        now = asyncio.get_running_loop().time()
        lags, self._lags = [*self._lags, now - self._asleep_since - PROBE_INTERVAL], []
        return {
            "max_lag_ms": round(max(lags, default=0.0) * 1e3, 1),
            "over_50ms": sum(1 for lag in lags if lag > 0.05),
            "over_200ms": sum(1 for lag in lags if lag > 0.2),
        }

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _resources(source: str, shape: Shape, seed: int) -> list[Resource]:
    if source == "core":
        return generate(shape, seed)
    spec = WorkloadSpec(shape.nodes, shape.pods, shape.policies, shape.namespaces, seed)
    return [parse_resource(doc) for doc in Workload(spec).initial_documents()]


def _updates(source: str, shape: Shape, seed: int) -> tuple[list[Update], list[str]]:
    layout = KeyLayout()
    resources = _resources(source, shape, seed)
    updates = [
        Update(layout.etcd_key(key_of(r)), encode(r), revision)
        for revision, r in enumerate(resources, start=1)
    ]
    pods = [u.key for u, r in zip(updates, resources, strict=True) if isinstance(r, Pod)]
    return updates, pods


def _decode_us_per_pod(updates: list[Update], pod_keys: list[str]) -> float:
    layout, wanted = KeyLayout(), set(pod_keys)
    pods = [u for u in updates if u.key in wanted]
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for u in pods:
            assert u.value is not None
            decode(layout, u.key, u.value, u.revision)
        best = min(best, time.perf_counter() - started)
    return round(best / len(pods) * 1e6, 1)


class _Span:
    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def take(self) -> dict[str, float]:
        return {
            "wall_s": round(time.perf_counter() - self.wall, 2),
            "cpu_s": round(time.process_time() - self.cpu, 2),
        }


async def _cold_start(updates: list[Update], herd: int, step_s: float | None) -> dict[str, Any]:
    published: list[int] = []

    async def publish(diff: NodeDiff) -> None:  # what the controller does, minus the broker
        published.append(len(encode_diff(diff)))

    options: dict[str, Any] = {} if step_s is None else {"list_batch_seconds": step_s}
    engine = Engine(
        epoch=1,
        publish=publish,
        tracker=ConvergenceTracker(1),
        metrics=ControllerMetrics(CollectorRegistry()),
        settle_gc=True,  # as the controller process does
        **options,
    )

    probe, gc_clock = LagProbe(), _GcClock()
    probe.start()
    running = asyncio.create_task(engine.run(), name="engine")
    span = _Span()
    for update in updates:
        await engine.queue.put(update)
    await engine.queue.put(InSync(updates[-1].revision))
    while not engine.in_sync or not published:  # the first flush after InSync sends the markers
        engine.changed.clear()
        await engine.changed.wait()
    cold = {**span.take(), **probe.take(), "gc": gc_clock.take(), "nodes": len(published)}

    nodes = sorted(engine.graph.nodes())[:herd]
    await asyncio.sleep(PROBE_INTERVAL * 2)  # the probe wakes up: its next sleep begins after the cold start
    probe.take()
    span = _Span()

    async def fetch(node: str) -> int:
        return len(diff_to_pb(await engine.snapshot(node)).SerializeToString())

    sizes = await asyncio.gather(*(fetch(node) for node in nodes))
    snapshots = {
        **span.take(),
        **probe.take(),
        "gc": gc_clock.take(),
        "count": len(nodes),
        "mean_kib": round(sum(sizes) / max(1, len(sizes)) / 1024, 1),
    }
    probe.stop()
    gc_clock.stop()
    running.cancel()
    return {"cold_start": cold, "snapshot_herd": snapshots}


def run(source: str, shape: Shape, seed: int, herd: int, step_s: float | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    updates, pod_keys = _updates(source, shape, seed)
    generated = time.perf_counter()
    decode_us = _decode_us_per_pod(updates, pod_keys)
    gc.collect()
    result = asyncio.run(_cold_start(updates, herd, step_s))
    return {
        "source": source,
        "shape": asdict(shape),
        "generate_s": round(generated - started, 1),
        "decode_us_per_pod": decode_us,
        **result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Shape()
    for field in ("pods", "policies", "namespaces", "nodes"):
        parser.add_argument(f"--{field}", type=int, default=getattr(defaults, field))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--source",
        choices=("workload", "core"),
        default="workload",
        help="the loadtest's cluster (`loadtest.workload`, as `loadtest cold-start` writes it) or "
        "`loadtest.bench_core`'s (named ports: cluster-wide ip sets, MB-sized snapshots)",
    )
    parser.add_argument("--herd", type=int, default=defaults.nodes, help="snapshots asked for at once")
    parser.add_argument(
        "--step-ms",
        type=float,
        help="feeding per compile step of the initial list (`Engine(list_batch_seconds=)`)",
    )
    args = parser.parse_args()
    shape = Shape(pods=args.pods, policies=args.policies, namespaces=args.namespaces, nodes=args.nodes)
    step_s = None if args.step_ms is None else args.step_ms / 1e3
    print(json.dumps(run(args.source, shape, args.seed, args.herd, step_s), indent=2))


if __name__ == "__main__":
    main()
