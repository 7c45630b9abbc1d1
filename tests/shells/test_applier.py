"""The agent's applier over a memory data plane: snapshots on start, gaps and new epochs; reports
only what is programmed; a throttled applier coalesces a burst of diffs into few transactions.

Proves: nothing is ready before the first snapshot is programmed (a refused first transaction keeps
the agent unready, reports the error, and is retried); a gap or a new epoch fetches a snapshot and
a duplicate is ignored; every report's position is one the data plane accepted; with
``min_apply_interval`` the stream is never blocked by the throttle, a burst of 50 diffs is
programmed in a handful of transactions, and the final programmed state is the newest desired one.
"""

from __future__ import annotations

import asyncio

from node_agent.applier import AgentStatus, Applier
from node_agent.dataplane.memory import MemoryDataPlane
from node_agent.dataplane.protocol import DataPlaneError
from policycore.diff import IpSetDelta, IpSetReplace, NodeDiff, StreamPosition
from policycore.ir import IpSet, NodeState

NODE = "node-1"
SET = "s:web"


def delta(epoch: int, seq: int, member: str) -> NodeDiff:
    op = IpSetDelta(SET, frozenset({member}), frozenset())
    return NodeDiff(NODE, StreamPosition(epoch, seq, 100 + seq), (op,))


class Controller:
    """Serves snapshots of a state it keeps, like the controller's NodeSync."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch, self.seq = epoch, 0
        self.members: set[str] = {"10.0.0.1"}
        self.fetches = 0

    async def snapshot(self, node: str) -> NodeDiff:
        self.fetches += 1
        ipset = IpSet(SET, "ip", frozenset(self.members))
        return NodeDiff(
            node, StreamPosition(self.epoch, self.seq, 100 + self.seq), (IpSetReplace(ipset),), True
        )


class Reports:
    def __init__(self) -> None:
        self.seen: list[AgentStatus] = []
        self.changed = asyncio.Event()

    async def __call__(self, status: AgentStatus) -> None:
        self.seen.append(status)
        self.changed.set()

    async def until(self, seq: int) -> None:
        async with asyncio.timeout(10):
            while not (self.seen and self.seen[-1].seq >= seq and self.seen[-1].last_error is None):
                self.changed.clear()
                await self.changed.wait()


def members(dataplane: MemoryDataPlane) -> set[str]:
    ipset = dataplane.programmed().ipsets.get(SET)
    return set(ipset.members) if ipset else set()


async def test_ready_only_after_the_first_snapshot_is_programmed() -> None:
    controller, reports = Controller(), Reports()
    refusals = [DataPlaneError("nft: transaction refused")]

    def refuse_once(_: NodeState) -> None:
        if refusals:
            raise refusals.pop()

    dataplane = MemoryDataPlane(fail_apply=refuse_once)
    applier = Applier(NODE, dataplane, fetch_snapshot=controller.snapshot, report=reports)
    assert not applier.ready
    await applier.resync_from_snapshot()
    assert applier.ready and members(dataplane) == {"10.0.0.1"}
    first, last = reports.seen[0], reports.seen[-1]
    assert not first.ready and first.last_error == "nft: transaction refused" and first.seq == 0
    assert last.ready and last.last_error is None and (last.epoch, last.seq) == (1, 0)


async def test_gap_and_new_epoch_fetch_a_snapshot_and_a_duplicate_is_ignored() -> None:
    controller, reports = Controller(), Reports()
    dataplane = MemoryDataPlane()
    applier = Applier(NODE, dataplane, fetch_snapshot=controller.snapshot, report=reports)
    await applier.resync_from_snapshot()
    await applier.offer(delta(1, 1, "10.0.0.2"))
    await applier.offer(delta(1, 1, "10.0.0.2"))  # a duplicate
    assert controller.fetches == 1 and members(dataplane) == {"10.0.0.1", "10.0.0.2"}

    controller.seq, controller.members = 3, {"10.0.0.1", "10.0.0.2", "10.0.0.3"}
    await applier.offer(delta(1, 4, "10.0.0.4"))  # seq 2 and 3 were lost: a gap
    assert controller.fetches == 2 and applier.out_of_order == 1
    assert members(dataplane) == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}  # the snapshot (seq 3), not seq 4

    controller.epoch, controller.seq, controller.members = 2, 1, {"10.0.0.9"}
    await applier.offer(NodeDiff(NODE, StreamPosition(2, 1, 200), ()))  # a new leader's epoch marker
    assert controller.fetches == 3 and members(dataplane) == {"10.0.0.9"}
    assert (reports.seen[-1].epoch, reports.seen[-1].seq) == (2, 1)


async def test_reports_carry_only_programmed_positions() -> None:
    controller, reports = Controller(), Reports()
    refuse = {"on": False}

    def maybe_refuse(_: NodeState) -> None:
        if refuse["on"]:
            refuse["on"] = False
            raise DataPlaneError("busy")

    dataplane = MemoryDataPlane(fail_apply=maybe_refuse)
    applier = Applier(NODE, dataplane, fetch_snapshot=controller.snapshot, report=reports)
    await applier.resync_from_snapshot()
    refuse["on"] = True
    await applier.offer(delta(1, 1, "10.0.0.2"))
    refused = next(r for r in reports.seen if r.last_error == "busy")
    assert (refused.seq, refused.ready) == (0, True), "the refused diff is not reported as applied"
    assert reports.seen[-1].seq == 1 and members(dataplane) == {"10.0.0.1", "10.0.0.2"}


async def test_a_throttled_applier_coalesces_a_burst_without_blocking_the_stream() -> None:
    controller, reports = Controller(), Reports()
    dataplane = MemoryDataPlane()
    applier = Applier(
        NODE, dataplane, fetch_snapshot=controller.snapshot, report=reports, min_apply_interval=0.05
    )
    programming = asyncio.create_task(applier.program_forever())
    try:
        await applier.resync_from_snapshot()
        await reports.until(0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for seq in range(1, 51):
            await applier.offer(delta(1, seq, f"10.0.1.{seq}"))
        assert loop.time() - started < 0.05, "offer waited for the throttle"
        await reports.until(50)
    finally:
        programming.cancel()
    assert dataplane.applies <= 4, f"{dataplane.applies} transactions for a burst of 50 diffs"
    assert members(dataplane) == {"10.0.0.1"} | {f"10.0.1.{seq}" for seq in range(1, 51)}
    programmed = [r.seq for r in reports.seen]
    assert programmed == sorted(programmed) and programmed[-1] == 50


async def test_a_batch_applies_its_runs_as_one_and_still_snapshots_at_a_gap() -> None:
    controller, reports = Controller(), Reports()
    dataplane = MemoryDataPlane()
    applier = Applier(NODE, dataplane, fetch_snapshot=controller.snapshot, report=reports)
    await applier.resync_from_snapshot()
    run = [delta(1, seq, f"10.0.1.{seq}") for seq in range(1, 6)]
    await applier.offer_batch([*run, delta(1, 3, "10.0.9.9")])  # a run of five, then a duplicate
    assert applier.desired.position == StreamPosition(1, 5, 105) and controller.fetches == 1
    assert members(dataplane) == {"10.0.0.1"} | {f"10.0.1.{seq}" for seq in range(1, 6)}
    assert dataplane.applies == 2 and reports.seen[-1].seq == 5  # the snapshot, then one for the batch

    controller.seq, controller.members = 8, {"10.0.0.1", "10.0.7.7", "10.0.8.8"}
    await applier.offer_batch([delta(1, 6, "10.0.1.6"), delta(1, 8, "10.0.8.8"), delta(1, 9, "10.0.8.9")])
    assert controller.fetches == 2 and applier.out_of_order == 1  # seq 7 was lost: a snapshot at 8
    assert members(dataplane) == {"10.0.0.1", "10.0.7.7", "10.0.8.8", "10.0.8.9"}
    assert applier.desired.position == StreamPosition(1, 9, 109)
