"""List-then-watch syncer: turns a store prefix into a duplicate-free stream of Updates and InSyncs.

Owns the syncer's view of the prefix (key → mod_revision last emitted) and the resync loop:

    list(prefix) at R ──► Updates for new/changed keys, synthesized deletes for vanished keys
         ▲                └─► InSync(R)
         │                       │
    backoff ◄── Compacted / StoreUnavailable ◄── watch(prefix, R + 1) ──► Update per event

It does not decode values (the controller's engine does) and does not own the consumer: events are
yielded (``async for event in syncer``) or put on a bounded queue (`run`), so a slow consumer slows
the syncer instead of growing memory.

Invariants:
- no `InSync` before the first list has been fully emitted; exactly one `InSync` per completed
  (re)list, carrying the list revision;
- an `Update` never repeats what was already emitted for that key (same mod_revision, or a delete
  of a key that was never emitted or is already deleted); existence is the value: None = absent;
- revisions in the stream never decrease: a list emits its entries in mod_revision order, then
  synthesized deletes at the list revision; watch events follow in store order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

from iokit.backoff import Backoff
from iokit.store import Compacted, Entry, KeyValueStore, StoreUnavailable, WatchEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Update:
    """The current value of ``key`` as of ``revision``; ``value`` None means the key is absent."""

    key: str
    value: bytes | None
    revision: int


@dataclass(frozen=True, slots=True)
class InSync:
    """Everything under the prefix up to ``revision`` has been emitted."""

    revision: int


SyncEvent = Update | InSync


class ListWatchSyncer:
    """Keeps a consumer in step with every key under one store prefix, across compaction and outages."""

    def __init__(
        self,
        store: KeyValueStore,
        prefix: str,
        *,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        stable_after: float = 30.0,
    ) -> None:
        self._store = store
        self._prefix = prefix
        self._backoff = backoff if backoff is not None else Backoff(initial=0.5, maximum=10.0)
        self._sleep = sleep
        self._clock = clock
        self._stable_after = stable_after
        self._known: dict[str, int] = {}
        self.in_sync = False
        self.revision = 0
        self.lists = 0
        self.compactions = 0
        self.retries = 0

    def __aiter__(self) -> AsyncIterator[SyncEvent]:
        return self.events()

    async def run(self, queue: asyncio.Queue[SyncEvent]) -> None:
        """Put every event on ``queue`` (bounded: a full queue pauses the syncer); runs forever."""
        async with contextlib.aclosing(self.events()) as events:
            async for event in events:
                await queue.put(event)

    async def events(self) -> AsyncGenerator[SyncEvent, None]:
        """The event stream; runs until closed or a non-retriable store error is raised."""
        while True:
            try:
                entries, revision = await self._store.list(self._prefix)
            except StoreUnavailable as error:
                await self._pause("list failed", error)
                continue
            self.lists += 1
            for update in self._reconcile(entries, revision):
                yield update
            self.revision = revision
            self.in_sync = True
            yield InSync(revision)
            opened = self._clock()
            try:
                async with contextlib.aclosing(self._store.watch(self._prefix, revision + 1)) as watch:
                    async for event in watch:
                        self._backoff.reset()
                        change = self._from_event(event)
                        if change is not None:
                            yield change
            except Compacted as error:
                self.compactions += 1
                self._after_watch(opened)
                await self._pause("watch compacted, relisting", error)
            except StoreUnavailable as error:
                self._after_watch(opened)
                await self._pause("watch lost, relisting", error)

    def _reconcile(self, entries: list[Entry], revision: int) -> Iterator[Update]:
        """Updates that bring the consumer from what it was sent to this list (mark and sweep)."""
        listed = {entry.key for entry in entries}
        for entry in sorted(entries, key=lambda item: (item.mod_revision, item.key)):
            if self._known.get(entry.key) != entry.mod_revision:
                self._known[entry.key] = entry.mod_revision
                yield Update(entry.key, entry.value, entry.mod_revision)
        for key in sorted(self._known.keys() - listed):
            del self._known[key]
            yield Update(key, None, revision)

    def _from_event(self, event: WatchEvent) -> Update | None:
        self.revision = max(self.revision, event.mod_revision)
        if event.value is None:
            if self._known.pop(event.key, None) is None:
                return None
        else:
            if self._known.get(event.key, 0) >= event.mod_revision:
                return None
            self._known[event.key] = event.mod_revision
        return Update(event.key, event.value, event.mod_revision)

    def _after_watch(self, opened: float) -> None:
        self.in_sync = False
        if self._clock() - opened >= self._stable_after:
            self._backoff.reset()

    async def _pause(self, what: str, error: Exception) -> None:
        self.retries += 1
        delay = self._backoff.next_delay()
        log.warning("syncer %s: %s: %s; retrying in %.2fs", self._prefix, what, error, delay)
        await self._sleep(delay)
