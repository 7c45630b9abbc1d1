"""In-memory twin of the etcd store: same revisions, CAS, prefix watches and compaction, no I/O.

Owns a dict of entries, the store-wide revision counter and the event history since the last
compaction. It passes the same contract tests as `iokit.etcd_store.EtcdStore`, and adds fault knobs
the shell tests need: `break_watches()` (every open watch fails with `StoreUnavailable`, as when the
connection drops) and `set_unavailable()` (every call fails until cleared). It does not persist
anything and does not model leases, auth or request size limits.

Invariants (mirroring etcd 3.4): the revision starts at 1 and every committed write adds one; a
write that raises changes nothing; history keeps every event with revision >= the compaction point;
a watch whose next revision falls below the compaction point (at start, or because it lagged while
compaction happened) raises `Compacted(compacted_revision)`; watch events come in revision order.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncGenerator

from iokit.store import (
    AlreadyExists,
    Compacted,
    Conflict,
    Entry,
    NotFound,
    StoreUnavailable,
    WatchEvent,
    check_key,
)


class MemoryStore:
    """A `KeyValueStore` held in process memory, for shell and system tests."""

    def __init__(self) -> None:
        self._data: dict[str, Entry] = {}
        self._revision = 1
        self._compacted = 0
        self._history: list[WatchEvent] = []
        self._wakeup = asyncio.Event()
        self._watch_generation = 0
        self._unavailable = False
        self._closed = False

    # -- inspection and fault knobs (not part of the store protocol) --------------------------

    @property
    def revision(self) -> int:
        """The current store revision."""
        return self._revision

    @property
    def compacted_revision(self) -> int:
        """The compaction point (0 before any compaction)."""
        return self._compacted

    def break_watches(self) -> None:
        """Make every open watch raise `StoreUnavailable`, as a dropped connection would."""
        self._watch_generation += 1
        self._wake()

    def set_unavailable(self, unavailable: bool) -> None:
        """While set, every operation and every open watch raises `StoreUnavailable`."""
        self._unavailable = unavailable
        if unavailable:
            self.break_watches()

    # -- the store protocol --------------------------------------------------------------------

    async def create(self, key: str, value: bytes) -> int:
        self._check(key)
        if key in self._data:
            raise AlreadyExists(key)
        return self._commit(key, value)

    async def replace(self, key: str, value: bytes, expected_revision: int | None = None) -> int:
        self._check(key)
        self._expect(key, expected_revision)
        return self._commit(key, value)

    async def put(self, key: str, value: bytes) -> int:
        self._check(key)
        return self._commit(key, value)

    async def delete(self, key: str, expected_revision: int | None = None) -> int:
        self._check(key)
        self._expect(key, expected_revision)
        return self._commit(key, None)

    async def get(self, key: str) -> Entry | None:
        self._check(key)
        return self._data.get(key)

    async def list(self, prefix: str) -> tuple[list[Entry], int]:
        self._check(prefix, field="prefix")
        entries = [entry for key, entry in sorted(self._data.items()) if key.startswith(prefix)]
        return entries, self._revision

    async def watch(self, prefix: str, start_revision: int) -> AsyncGenerator[WatchEvent, None]:
        self._check(prefix, field="prefix")
        if start_revision < 1:
            raise ValueError(f"start_revision: must be >= 1, got {start_revision}")
        generation = self._watch_generation
        next_revision = start_revision
        while True:
            wakeup = self._wakeup
            if self._unavailable or self._closed or generation != self._watch_generation:
                raise StoreUnavailable("watch lost: connection to the store broke")
            if next_revision < self._compacted:
                raise Compacted(self._compacted)
            start = bisect.bisect_left(self._history, next_revision, key=lambda event: event.mod_revision)
            batch = [event for event in self._history[start:] if event.key.startswith(prefix)]
            next_revision = self._revision + 1
            if not batch:
                await wakeup.wait()
            for event in batch:
                yield event

    async def compact(self, revision: int) -> None:
        self._check_available()
        if revision <= self._compacted:
            raise Compacted(revision)
        if revision > self._revision:
            raise ValueError(f"revision: {revision} is in the future (store is at {self._revision})")
        self._compacted = revision
        start = bisect.bisect_left(self._history, revision, key=lambda event: event.mod_revision)
        del self._history[:start]

    async def close(self) -> None:
        self._closed = True
        self._wake()

    # -- internals -----------------------------------------------------------------------------

    def _check_available(self) -> None:
        if self._closed:
            raise StoreUnavailable("store closed")
        if self._unavailable:
            raise StoreUnavailable("store unavailable (fault injected)")

    def _check(self, key: str, *, field: str = "key") -> None:
        self._check_available()
        check_key(key, field=field)

    def _expect(self, key: str, expected_revision: int | None) -> None:
        entry = self._data.get(key)
        if entry is None:
            raise NotFound(key)
        if expected_revision is not None and entry.mod_revision != expected_revision:
            raise Conflict(key, expected_revision, entry.mod_revision)

    def _commit(self, key: str, value: bytes | None) -> int:
        self._revision += 1
        revision = self._revision
        if value is None:
            del self._data[key]
        else:
            previous = self._data.get(key)
            created = previous.create_revision if previous is not None else revision
            self._data[key] = Entry(key, bytes(value), revision, created)
        self._history.append(WatchEvent(key, None if value is None else bytes(value), revision))
        self._wake()
        return revision

    def _wake(self) -> None:
        wakeup, self._wakeup = self._wakeup, asyncio.Event()
        wakeup.set()
