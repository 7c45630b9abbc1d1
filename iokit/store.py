"""The revisioned key/value store contract: bytes under string keys, CAS by revision, watch by prefix.

Owns the vocabulary every store adapter speaks: `Entry`, `WatchEvent`, the error tree and the
`KeyValueStore` protocol. The real adapter is `iokit.etcd_store.EtcdStore`, the in-memory twin is
`iokit.memory_store.MemoryStore`; both pass the same contract tests. It does not own resource
encoding (callers store bytes) nor list-then-watch (`iokit.syncer`).

Revisions follow etcd: one store-wide counter that every write bumps; an entry's ``mod_revision``
is the revision of its last write (the resourceVersion), ``create_revision`` that of its creation.
Every write returns the revision it committed at.

Error tree::

    StoreError                      anything the store refused or could not do
    ├── AlreadyExists(key)          create() on an existing key
    ├── NotFound(key)               replace()/delete() on an absent key
    ├── Conflict(key, expected, actual)   expected_revision did not match mod_revision
    ├── Compacted(compacted_revision)     watch/list/compact below the compaction point
    └── StoreUnavailable            connection lost or timed out; retrying may succeed

Invariants: a failed write changes nothing; watch events arrive in revision order with no gaps
for the watched prefix; a watch from a compacted revision raises `Compacted` (the caller relists).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored key with its value and revisions."""

    key: str
    value: bytes
    mod_revision: int
    create_revision: int


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A change under a watched prefix: ``value`` is None for a delete."""

    key: str
    value: bytes | None
    mod_revision: int


class StoreError(Exception):
    """Base of every error a store adapter raises."""


class AlreadyExists(StoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"{key}: already exists")
        self.key = key


class NotFound(StoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"{key}: not found")
        self.key = key


class Conflict(StoreError):
    def __init__(self, key: str, expected_revision: int, actual_revision: int) -> None:
        super().__init__(f"{key}: expected mod_revision {expected_revision}, store has {actual_revision}")
        self.key = key
        self.expected_revision = expected_revision
        self.actual_revision = actual_revision


class Compacted(StoreError):
    def __init__(self, compacted_revision: int) -> None:
        super().__init__(f"revision compacted: history before {compacted_revision} is gone")
        self.compacted_revision = compacted_revision


class StoreUnavailable(StoreError):
    """The store could not be reached or the stream broke; the operation may be retried."""


def check_key(key: str, *, field: str = "key") -> None:
    """Reject keys every adapter would refuse: empty ones."""
    if not key:
        raise ValueError(f"{field}: must be a non-empty string")


class KeyValueStore(Protocol):
    """What the controller needs from a datastore (see the module docstring for semantics)."""

    async def create(self, key: str, value: bytes) -> int:
        """Write a new key; raises `AlreadyExists`. Returns the commit revision."""
        ...

    async def replace(self, key: str, value: bytes, expected_revision: int | None = None) -> int:
        """Overwrite an existing key, optionally only at ``expected_revision``; `NotFound`, `Conflict`."""
        ...

    async def put(self, key: str, value: bytes) -> int:
        """Create or overwrite unconditionally."""
        ...

    async def delete(self, key: str, expected_revision: int | None = None) -> int:
        """Remove a key, optionally only at ``expected_revision``; `NotFound`, `Conflict`."""
        ...

    async def get(self, key: str) -> Entry | None:
        """The entry under ``key`` or None."""
        ...

    async def list(self, prefix: str) -> tuple[list[Entry], int]:
        """Every entry under ``prefix`` sorted by key, and the store revision of that snapshot."""
        ...

    def watch(self, prefix: str, start_revision: int) -> AsyncGenerator[WatchEvent, None]:
        """Changes under ``prefix`` from ``start_revision`` (inclusive) on; raises `Compacted`.

        The iterator is an async generator: close it with ``aclose()`` (or `contextlib.aclosing`).
        """
        ...

    async def compact(self, revision: int) -> None:
        """Drop history before ``revision``; raises `Compacted` if already compacted there."""
        ...

    async def close(self) -> None:
        """Release connections; further calls raise `StoreUnavailable`."""
        ...
