"""The applier: owns a node's desired state and programs it into the data plane, then reports.

Owns the agent's `DesiredState`, the snapshot-on-gap logic and the throttled data-plane apply.
Transport-agnostic: diffs come in through `offer`, snapshots through the injected
``fetch_snapshot``, reports go out through the injected ``report`` — so the real agent and the
load harness's simulated agents run this same code. It does not own decoding (`wire`), the bus
or MQTT (`iokit`).

Invariants:
* A batch (`offer_batch`: the diffs already waiting, in stream order) is offered to the desired
  state diff by diff — the same verdicts, snapshots on gaps and stale diffs ignored as one by one
  — and programmed and reported once at its end (Felix's batched apply). A snapshot fetched for
  a gap inside a batch replaces the state; the batch's later diffs continue from it. Runs of
  consecutive next deltas are applied as one (`DesiredState.offer_run`): a backlog costs one copy
  of each touched set, not one per diff.
* Reports say only what is programmed: the position in a report is the desired position at the
  moment the data plane accepted it, never one merely received.
* Ready only after the first full snapshot has been programmed.
* ``hash_reports=False`` (the load harness's many simulated agents) leaves the state hash out of
  reports; it costs a canonical dump of the whole state per apply.
* A data-plane failure keeps the old programmed state, records ``last_error`` and retries with
  backoff (with the newest desired state); the report keeps the last *programmed* position.
* Throttled (``min_apply_interval`` > 0): `offer` only updates the desired state and marks it
  dirty, never blocking the stream; `program_forever` (run beside the stream by
  `NodeAgent.run`) programs the newest desired state at most once per interval, so a burst of
  diffs costs one transaction (Felix's cheap "mark dirty", throttled batched apply).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from iokit.backoff import Backoff
from iokit.throttle import CoalescingThrottle, Throttle
from node_agent.dataplane.protocol import DataPlane, DataPlaneError
from policycore.desired import DesiredState, Verdict
from policycore.diff import NodeDiff, StreamPosition

log = logging.getLogger(__name__)

FetchSnapshot = Callable[[str], Awaitable[NodeDiff]]


@dataclass(frozen=True, slots=True)
class AgentStatus:
    node: str
    online: bool
    ready: bool
    epoch: int
    seq: int
    revision: int
    last_error: str | None
    state_hash: str | None

    def to_json(self) -> dict[str, object]:
        return {
            "node": self.node,
            "online": self.online,
            "ready": self.ready,
            "epoch": self.epoch,
            "seq": self.seq,
            "revision": self.revision,
            "last_error": self.last_error,
            "state_hash": self.state_hash,
        }


Report = Callable[[AgentStatus], Awaitable[None]]


class Applier:
    def __init__(
        self,
        node: str,
        dataplane: DataPlane,
        *,
        fetch_snapshot: FetchSnapshot,
        report: Report,
        min_apply_interval: float = 0.0,
        backoff: Backoff | None = None,
        hash_reports: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.desired = DesiredState(node)
        self.dataplane = dataplane
        self.programmed_position: StreamPosition | None = None
        self.programmed_hash: str | None = None
        self.last_error: str | None = None
        self.snapshots = 0
        self.snapshot_received_at = 0.0
        """Wall time (``clock``) the newest snapshot was asked for: anything published before it is
        covered by that snapshot."""
        self.applies = 0
        self.out_of_order = 0
        self._fetch_snapshot = fetch_snapshot
        self._report = report
        self._throttle = (
            CoalescingThrottle(Throttle(min_apply_interval, burst=1)) if min_apply_interval else None
        )
        self._backoff = backoff or Backoff(initial=0.05, maximum=5.0)
        self._lock = asyncio.Lock()
        self._hash_reports = hash_reports
        self._clock = clock

    @property
    def ready(self) -> bool:
        return self.programmed_position is not None

    @property
    def throttled(self) -> bool:
        """Whether programming is throttled; then `program_forever` must run beside the stream."""
        return self._throttle is not None

    async def offer(self, diff: NodeDiff) -> None:
        """Take one message from the stream; fetch a snapshot if the stream cannot continue."""
        await self.offer_batch((diff,))

    async def offer_batch(self, diffs: Sequence[NodeDiff], *, resync: bool = False) -> None:
        """Take the diffs already waiting, in stream order, then program once; ``resync``: fetch a
        snapshot first (the messages before these were dropped)."""
        changed = await self._take_snapshot() if resync else False
        index = 0
        while index < len(diffs):
            if run := self.desired.offer_run(diffs[index:]):
                changed, index = True, index + run
                continue
            diff = diffs[index]
            index += 1
            verdict = self.desired.offer(diff)
            if verdict is Verdict.NEEDS_SNAPSHOT:
                if self.desired.synced:
                    self.out_of_order += 1
                    log.info("%s: %s; fetching a snapshot", self.node, self.desired.last_error or "new epoch")
                changed = await self._take_snapshot() or changed
            elif verdict is Verdict.APPLIED:
                changed = True
        if changed:
            await self._request_program()

    async def resync_from_snapshot(self) -> None:
        if await self._take_snapshot():
            await self._request_program()

    async def _take_snapshot(self) -> bool:
        """Fetch a snapshot into the desired state (not programmed yet); whether it was applied."""
        snapshot = await self._fetch_snapshot(self.node)
        # What was published before the answer arrived is covered by it or applied after it: it
        # must not trigger a cut-off (a herd waiting seconds for snapshots would resync twice).
        self.snapshot_received_at = self._clock()
        self.snapshots += 1
        return self.desired.offer(snapshot) is Verdict.APPLIED

    async def _request_program(self) -> None:
        """Unthrottled: program now. Throttled: mark the desired state dirty and return at once;
        `program_forever` programs the newest desired state when the throttle allows, so any
        number of diffs arriving in between cost one data-plane transaction."""
        if self._throttle is None:
            await self._program()
        else:
            self._throttle.request()

    async def program_forever(self) -> None:
        """The throttled programming loop (forever); a no-op loop for an unthrottled applier."""
        throttle = self._throttle
        if throttle is None:
            return
        while True:
            await throttle.wait()
            await self._program()

    async def _program(self) -> None:
        async with self._lock:
            while True:
                state, position = self.desired.state, self.desired.position  # read together
                if position is None or position == self.programmed_position:
                    return
                try:
                    self.dataplane.apply(state)
                    break
                except DataPlaneError as err:
                    self.last_error = str(err)
                    log.warning("%s: data plane refused the transaction: %s", self.node, err)
                    await self._report(self.status())
                    await asyncio.sleep(self._backoff.next_delay())
            self._backoff.reset()
            self.applies += 1
            self.last_error = None
            self.programmed_position = position
            self.programmed_hash = state.content_hash() if self._hash_reports else None
        await self._report(self.status())

    def status(self, *, online: bool = True) -> AgentStatus:
        p = self.programmed_position
        return AgentStatus(
            node=self.node,
            online=online,
            ready=self.ready,
            epoch=p.epoch if p else 0,
            seq=p.seq if p else 0,
            revision=p.revision if p else 0,
            last_error=self.last_error,
            state_hash=self.programmed_hash,
        )
