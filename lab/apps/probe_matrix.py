"""Probe matrices: run reachability probes from many source pods at once, from the host.

Owns the host side of `kalikoctl lab probe`: it groups (source pod, target) pairs by the source's
network namespace, starts one `ip netns exec <netns> python -m lab.apps.probe connect` per source
(which probes all that source's targets in parallel, from inside the pod) and puts the answers back
in the caller's order. It does not own what a probe is (`lab.apps.probe`) nor which pods exist
(`lab.topology`).

Invariants: results come back in the order of the pairs; a source that cannot be probed from
(missing netns, crashed process, wrong answer) raises `ProbeRunError`, never a silent "blocked".
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from lab.apps.probe import DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT, Result, Target, probe_many


class ProbeRunError(RuntimeError):
    """The probes from one source could not be run (missing netns, crashed process, bad answer)."""


@dataclass(frozen=True)
class Pair:
    """A probe in a matrix: from the pod whose network namespace is `source` (None: this process)."""

    source: str | None
    target: Target


def netns_command(netns: str, timeout: float, concurrency: int) -> list[str]:
    """The argv that runs the one-shot `connect` CLI inside `netns`, reading targets from stdin."""
    return [
        "ip", "netns", "exec", netns, sys.executable, "-m", "lab.apps.probe", "connect",
        "--targets", "-", "--timeout", str(timeout), "--concurrency", str(concurrency),
    ]  # fmt: skip


async def _probe_from(netns: str, targets: list[Target], timeout: float, concurrency: int) -> list[Result]:
    process = await asyncio.create_subprocess_exec(
        *netns_command(netns, timeout, concurrency),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    payload = json.dumps([asdict(target) for target in targets]).encode()
    rounds = -(-len(targets) // concurrency)
    try:
        async with asyncio.timeout(10.0 + rounds * timeout * 2):
            stdout, stderr = await process.communicate(payload)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise ProbeRunError(f"probes from netns {netns!r} did not finish in time") from None
    if process.returncode != 0:
        reason = stderr.decode(errors="replace").strip()
        raise ProbeRunError(f"probes from netns {netns!r} failed (exit {process.returncode}): {reason}")
    results = [Result(**item) for item in json.loads(stdout)]
    if [Target(r.ip, r.port, r.protocol) for r in results] != targets:
        raise ProbeRunError(f"probes from netns {netns!r} answered for other targets than asked")
    return results


async def probe_matrix(
    pairs: Sequence[Pair], timeout: float = DEFAULT_TIMEOUT, concurrency: int = 8
) -> list[Result]:
    """Run every pair from its source pod's netns; results keep the order of `pairs`.

    Targets are grouped by source: one `ip netns exec` process per source probes all of its targets
    in parallel; at most `concurrency` sources run at once. `source=None` probes from this process.
    Raises `ProbeRunError` if a source cannot be probed from, rather than reporting "blocked".
    """
    by_source: dict[str | None, list[Target]] = {}
    for pair in pairs:
        by_source.setdefault(pair.source, []).append(pair.target)
    gate = asyncio.Semaphore(concurrency)

    async def run(source: str | None, targets: list[Target]) -> tuple[str | None, list[Result]]:
        async with gate:
            if source is None:
                return source, await probe_many(targets, timeout)
            return source, await _probe_from(source, targets, timeout, DEFAULT_CONCURRENCY)

    answers = dict(await asyncio.gather(*(run(src, tgts) for src, tgts in by_source.items())))
    cursor = dict.fromkeys(answers, 0)
    ordered: list[Result] = []
    for pair in pairs:
        ordered.append(answers[pair.source][cursor[pair.source]])
        cursor[pair.source] += 1
    return ordered
