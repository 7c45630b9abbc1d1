"""Recorders: thin wrappers around the real parts that observe the pipeline without changing it.

Owns the `RecordSink` protocol (what the `ConvergenceLedger` is fed; a worker process ships the
same calls over a pipe with `BatchingSink`) and the wrappers that feed it, all stamping
``time.time()`` (one wall clock for every process on the machine):

* `RecordingPublisher` — around the controller's `DiffPublisher`: node, bytes and the engine's
  compiled revision of every published message. The engine publishes from inside its flush, so
  ``revision_of()`` read there is the message's revision.
* `observe_flushes` — follows ``engine.changed`` and records each compiled revision, so changes
  that affect no node still get a time (the controller's own forwarding task clears the event).
* `RecordingSubscriber` — around a node's subscription: Kafka hop (producer timestamp → consumer receipt)
  and the size of the message about to be applied.
* `measure_lag`, `watch_ready` — event-loop lag of a process, and when the controller got in sync.
* `RecordingStatus` + `RecordingDataPlane` — around the agent's status publisher and in-memory
  data plane: when a position was programmed (the applier reports right after the data plane
  accepted it) and whether that apply changed nothing (its bytes went to an unaffected node).

It does not own the parts themselves or decide what the records mean.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from iokit.bus import DiffMessage, DiffPublisher
from iokit.status import StatusPublisher
from node_agent.dataplane.memory import MemoryDataPlane
from policycore.ir import NodeState

if TYPE_CHECKING:  # agent worker processes import this module too: no controller at run time
    from controller.controller import Controller


class RecordSink(Protocol):
    def published(self, node: str, revision: int, nbytes: int, t: float) -> None: ...

    def flushed(self, revision: int, t: float) -> None: ...

    def applied(self, node: str, revision: int, t: float) -> None: ...

    def unaffected(self, node: str, revision: int, nbytes: int) -> None: ...

    def hop(self, t: float, ms: float) -> None: ...

    def snapshot(self, node: str, cause: str) -> None: ...

    def restarted(self, node: str, started: float, ready: float) -> None: ...

    def lag(self, role: str, t: float, ms: float) -> None: ...

    def milestone(self, name: str, t: float) -> None: ...


RECORD_KINDS = (
    "published",
    "flushed",
    "applied",
    "unaffected",
    "hop",
    "snapshot",
    "restarted",
    "lag",
    "milestone",
)


class BatchingSink:
    """A `RecordSink` that buffers calls as ``(kind, args)`` and hands batches to ``ship``."""

    def __init__(self, ship: Callable[[list[tuple[str, tuple[Any, ...]]]], None], limit: int = 2000) -> None:
        self._ship = ship
        self._limit = limit
        self._buffer: list[tuple[str, tuple[Any, ...]]] = []

    def _add(self, kind: str, *args: Any) -> None:
        self._buffer.append((kind, args))
        if len(self._buffer) >= self._limit:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            batch, self._buffer = self._buffer, []
            self._ship(batch)

    def published(self, node: str, revision: int, nbytes: int, t: float) -> None:
        self._add("published", node, revision, nbytes, t)

    def flushed(self, revision: int, t: float) -> None:
        self._add("flushed", revision, t)

    def applied(self, node: str, revision: int, t: float) -> None:
        self._add("applied", node, revision, t)

    def unaffected(self, node: str, revision: int, nbytes: int) -> None:
        self._add("unaffected", node, revision, nbytes)

    def hop(self, t: float, ms: float) -> None:
        self._add("hop", t, ms)

    def snapshot(self, node: str, cause: str) -> None:
        self._add("snapshot", node, cause)

    def restarted(self, node: str, started: float, ready: float) -> None:
        self._add("restarted", node, started, ready)

    def lag(self, role: str, t: float, ms: float) -> None:
        self._add("lag", role, t, ms)

    def milestone(self, name: str, t: float) -> None:
        self._add("milestone", name, t)


def replay(batch: list[tuple[str, tuple[Any, ...]]], sink: RecordSink) -> None:
    """Feed a shipped batch into ``sink`` (the driver side of `BatchingSink`)."""
    for kind, args in batch:
        if kind not in RECORD_KINDS:
            raise ValueError(f"record kind: unknown {kind!r}")
        getattr(sink, kind)(*args)


class RecordingPublisher:
    """A `DiffPublisher` that records every message after handing it to ``inner``."""

    def __init__(self, inner: DiffPublisher, sink: RecordSink) -> None:
        self.inner = inner
        self.sink = sink
        self.revision_of: Callable[[], int] = lambda: 0
        self.partitions = 0

    async def start(self) -> None:
        await self.inner.start()
        self.partitions = self.inner.partitions

    async def publish(self, node: str, payload: bytes) -> None:
        await self.inner.publish(node, payload)
        self.sink.published(node, self.revision_of(), len(payload), time.time())

    async def flush(self) -> None:
        await self.inner.flush()

    async def stop(self) -> None:
        await self.inner.stop()


def record_controller(controller: Controller, publisher: RecordingPublisher) -> None:
    """Let ``publisher`` read the revision of the flush it is called from."""
    publisher.revision_of = lambda: controller.engine.revision if controller.engine is not None else 0


async def observe_flushes(controller: Controller, sink: RecordSink, poll: float = 0.01) -> None:
    """Record the compiled revision after every flush (forever)."""
    last = 0
    while True:
        engine = controller.engine
        if engine is None:
            await asyncio.sleep(poll)  # no engine yet (campaigning): nothing to wait on
            continue
        await engine.changed.wait()
        revision = engine.tracker.compiled_revision
        if revision > last:
            last = revision
            sink.flushed(revision, time.time())
        await asyncio.sleep(0)  # let the controller's forwarding task clear the event


async def measure_lag(sink: RecordSink, role: str, interval: float = 0.1) -> None:
    """Event-loop lag of this process: how late a ``interval`` sleep wakes up (forever)."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        sink.lag(role, time.time(), max(0.0, (loop.time() - due) * 1000.0))


async def watch_ready(controller: Controller, sink: RecordSink, poll: float = 0.02) -> None:
    """Record when the controller first is the leader and in sync (readiness has no event)."""
    while not controller.ready:
        await asyncio.sleep(poll)
    sink.milestone("controller_in_sync", time.time())


class RecordingSubscriber:
    """A `DiffSubscriber` over a shared subscription (``own=False``) or a dedicated subscriber."""

    def __init__(
        self, node: str, source: Any, on_message: Callable[[DiffMessage], None], *, own: bool
    ) -> None:
        self.node = node
        self.partition = getattr(source, "partition", -1)
        self._source = source
        self._on_message = on_message
        self._own = own

    async def start(self) -> None:
        if self._own:
            await self._source.start()
            self.partition = self._source.partition

    def __aiter__(self) -> AsyncIterator[DiffMessage]:
        return self._messages()

    async def _messages(self) -> AsyncGenerator[DiffMessage, None]:
        async for message in self._source:
            if not message.resync:
                self._on_message(message)
            yield message

    async def batches(self) -> AsyncGenerator[list[DiffMessage], None]:
        async for batch in self._source.batches():
            for message in batch:
                if not message.resync:
                    self._on_message(message)
            yield batch

    async def skip_to_end(self) -> None:
        await self._source.skip_to_end()

    async def position(self) -> int:
        return int(await self._source.position()) if self._own else -1

    async def stop(self) -> None:
        if self._own:
            await self._source.stop()


class RecordingStatus:
    """A `StatusPublisher` that tells ``on_status`` about every status before passing it on."""

    def __init__(self, inner: StatusPublisher, on_status: Callable[[Mapping[str, Any]], None]) -> None:
        self.node = inner.node
        self.inner = inner
        self._on_status = on_status

    async def start(self) -> None:
        await self.inner.start()

    def offer(self, status: Mapping[str, Any]) -> None:
        self._on_status(status)
        self.inner.offer(status)

    async def publish(self, status: Mapping[str, Any]) -> None:
        self._on_status(status)
        await self.inner.publish(status)

    async def stop(self, graceful: bool = True) -> None:
        await self.inner.stop(graceful)


class RecordingDataPlane:
    """A `MemoryDataPlane` wrapper noting whether the last apply changed the programmed state."""

    def __init__(self, inner: MemoryDataPlane | None = None) -> None:
        self.inner = inner if inner is not None else MemoryDataPlane()
        self.last_noop = False
        self._last: NodeState | None = None

    def apply(self, desired: NodeState) -> None:
        noop = self._last is not None and desired == self._last
        self.inner.apply(desired)
        self._last = desired  # desired states are replaced, never mutated, by the applier
        self.last_noop = noop

    def programmed(self) -> NodeState:
        return self.inner.programmed()

    def resync(self) -> int:
        return self.inner.resync()

    def close(self) -> None:
        self.inner.close()
