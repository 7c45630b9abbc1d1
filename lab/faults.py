"""Fault injection and observation around a node agent's bus and status: drop, duplicate, record.

Owns two thin wrappers that the embedded cluster and the fault tests put around an agent's real
parts, and the bookkeeping of what an agent applied:

* `FaultySubscriber` wraps any `DiffSubscriber` (memory or Kafka). ``drop_next(n)`` loses the next
  ``n`` messages in transit, ``duplicate_next(n)`` delivers the next ``n`` twice (in one batch).
  It also counts messages the agent has *finished* with (it asked for the next batch), so a test
  awaits "the agent has handled the duplicate" instead of sleeping.
* `RecordingStatus` wraps any `StatusPublisher` and appends every successful report's position to
  an `AppliedLog` before passing it on. A report is what the applier says it has *programmed*.
* `AppliedLog.violations()` names every report that broke the stream order: within one epoch the
  seq must strictly increase; epochs and revisions must never go back.

It does not decide when to inject a fault (tests do) and changes nothing it forwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from iokit.bus import DiffMessage, DiffSubscriber, one_by_one
from iokit.status import StatusPublisher


class FaultySubscriber:
    """A `DiffSubscriber` that can lose or repeat messages on their way to the agent."""

    def __init__(self, inner: DiffSubscriber) -> None:
        self.inner = inner
        self.node = inner.node
        self.partition = inner.partition
        self.dropped: list[DiffMessage] = []
        self.duplicated: list[DiffMessage] = []
        self.consumed = 0
        self._drop = 0
        self._duplicate = 0
        self._wakeup = asyncio.Event()

    @property
    def pending_faults(self) -> int:
        """Drops and duplications asked for that no message has taken yet."""
        return self._drop + self._duplicate

    def drop_next(self, count: int = 1) -> None:
        """Lose the next ``count`` messages (the agent never sees them)."""
        self._drop += count

    def duplicate_next(self, count: int = 1) -> None:
        """Deliver each of the next ``count`` messages twice in a row."""
        self._duplicate += count

    async def start(self) -> None:
        await self.inner.start()
        self.partition = self.inner.partition

    def __aiter__(self) -> AsyncIterator[DiffMessage]:
        return one_by_one(self.batches())

    async def batches(self) -> AsyncGenerator[list[DiffMessage], None]:
        async for batch in self.inner.batches():
            delivered: list[DiffMessage] = []
            for message in batch:
                if self._drop:
                    self._drop -= 1
                    self.dropped.append(message)
                    continue
                delivered.append(message)
                if self._duplicate:
                    self._duplicate -= 1
                    self.duplicated.append(message)
                    delivered.append(message)
            if delivered:
                yield delivered
                self._consumed(len(delivered))

    async def skip_to_end(self) -> None:
        await self.inner.skip_to_end()

    def _consumed(self, count: int) -> None:
        self.consumed += count
        wakeup, self._wakeup = self._wakeup, asyncio.Event()
        wakeup.set()

    async def wait_consumed(self, count: int) -> None:
        """Until the agent has finished handling ``count`` delivered messages in total."""
        while self.consumed < count:
            await self._wakeup.wait()

    async def position(self) -> int:
        return await self.inner.position()

    async def stop(self) -> None:
        await self.inner.stop()


@dataclass(frozen=True, slots=True)
class Applied:
    """One report of a programmed position."""

    epoch: int
    seq: int
    revision: int


@dataclass(slots=True)
class AppliedLog:
    """Every position one agent incarnation reported as programmed, in report order."""

    node: str
    positions: list[Applied] = field(default_factory=list)

    def record(self, status: Mapping[str, Any]) -> None:
        if status.get("ready") and status.get("online", True) and not status.get("last_error"):
            self.positions.append(Applied(int(status["epoch"]), int(status["seq"]), int(status["revision"])))

    def violations(self) -> list[str]:
        """Why each out-of-order report is out of order (empty: the stream was applied in order)."""
        problems = []
        for before, after in zip(self.positions, self.positions[1:], strict=False):
            if after.epoch < before.epoch:
                problems.append(f"{self.node}: epoch went back from {before} to {after}")
            elif after.epoch == before.epoch and after.seq <= before.seq:
                problems.append(f"{self.node}: seq did not increase within epoch: {before} then {after}")
            if after.revision < before.revision:
                problems.append(f"{self.node}: revision went back from {before} to {after}")
        return problems


class RecordingStatus:
    """A `StatusPublisher` that records each programmed position in an `AppliedLog`, then forwards."""

    def __init__(self, inner: StatusPublisher, log: AppliedLog | None = None) -> None:
        self.inner = inner
        self.node = inner.node
        self.log = log if log is not None else AppliedLog(inner.node)

    async def start(self) -> None:
        await self.inner.start()

    def offer(self, status: Mapping[str, Any]) -> None:
        self.log.record(status)
        self.inner.offer(status)

    async def publish(self, status: Mapping[str, Any]) -> None:
        self.log.record(status)
        await self.inner.publish(status)

    async def stop(self, graceful: bool = True) -> None:
        await self.inner.stop(graceful)
