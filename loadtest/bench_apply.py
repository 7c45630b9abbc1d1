"""Benchmark of the agent's desired state: the cost of a diff by set size and by batch size.

Owns a synthetic node (one ip set of ``--sizes`` members and one of 50) and a stream of diffs, each
adding a member to the large set and removing one from the small one: the shape of pod churn on a
node whose policies reference a large set. Each batch of ``--batches`` diffs is offered one by one
(`DesiredState.offer`) or as the agent does (`DesiredState.offer_run`, then one by one for what
is left), and the time per diff printed. It does not measure decoding, the data plane or the bus
(`python -m loadtest` measures the whole path)::

    .venv/bin/python -m loadtest.bench_apply [--sizes 500 3000 20000 --batches 1 2 4 8 --diffs 4000]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

from policycore.desired import DesiredState
from policycore.diff import IpSetDelta, IpSetReplace, NodeDiff, StreamPosition
from policycore.ir import IpSet

NODE = "bench-node"


def synced_node(size: int) -> DesiredState:
    large = IpSet("s:large", "ip", frozenset(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}" for i in range(size)))
    small = IpSet("s:small", "ip", frozenset(f"11.0.0.{i}" for i in range(50)))
    desired = DesiredState(NODE)
    desired.offer(NodeDiff(NODE, StreamPosition(1, 1, 1), (IpSetReplace(large), IpSetReplace(small)), True))
    return desired


def churn_diff(seq: int) -> NodeDiff:
    added = IpSetDelta("s:large", frozenset({f"12.0.{(seq >> 8) & 255}.{seq & 255}"}), frozenset())
    removed = IpSetDelta("s:small", frozenset(), frozenset({f"11.0.0.{seq % 50}"}))
    return NodeDiff(NODE, StreamPosition(1, seq, seq), (added, removed))


def us_per_diff(size: int, batch: int, diffs: int, *, as_runs: bool) -> float:
    desired, seq, done = synced_node(size), 1, 0
    began = time.perf_counter()
    while done < diffs:
        pending = [churn_diff(seq + i) for i in range(1, batch + 1)]
        seq, done = seq + batch, done + batch
        taken = desired.offer_run(pending) if as_runs else 0
        for diff in pending[taken:]:
            desired.offer(diff)
    assert desired.position is not None and desired.position.seq == seq  # every diff applied
    return (time.perf_counter() - began) / done * 1e6


def run(sizes: Sequence[int], batches: Sequence[int], diffs: int) -> list[dict[str, float]]:
    rows = []
    for size in sizes:
        for batch in batches:
            one_by_one = us_per_diff(size, batch, diffs, as_runs=False)
            as_runs = us_per_diff(size, batch, diffs, as_runs=True)
            rows.append(
                {"set_size": size, "batch": batch, "one_by_one_us": one_by_one, "as_runs_us": as_runs}
            )
            print(
                f"set {size:>6} batch {batch:>2}: one by one {one_by_one:7.1f} us, as runs {as_runs:7.1f} us"
            )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_apply", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 3000, 20000])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--diffs", type=int, default=4000, help="diffs per measurement")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.sizes, args.batches, args.diffs)))


if __name__ == "__main__":
    main()
