"""Store contract: MemoryStore and EtcdStore (real etcd, marked fv) behave the same.

Each test runs against both adapters under a fresh prefix. Revisions are compared relative to the
ones the test itself observed, because the shared etcd also serves other tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from iokit.etcd_store import EtcdStore
from iokit.memory_store import MemoryStore
from iokit.store import (
    AlreadyExists,
    Compacted,
    Conflict,
    KeyValueStore,
    NotFound,
    StoreUnavailable,
    WatchEvent,
)


@pytest.fixture(params=["memory", pytest.param("etcd", marks=pytest.mark.fv)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[KeyValueStore]:
    adapter: KeyValueStore
    if request.param == "memory":
        adapter = MemoryStore()
    else:
        adapter = EtcdStore.from_endpoint(request.getfixturevalue("etcd_endpoint"))
    yield adapter
    await adapter.close()


@pytest.fixture
def prefix() -> str:
    return f"/kaliko-test/{uuid.uuid4().hex}/"


async def next_events(watch: AsyncIterator[WatchEvent], count: int) -> list[WatchEvent]:
    async with asyncio.timeout(10):
        return [await anext(watch) for _ in range(count)]


async def test_create_then_get_and_create_again_fails(store: KeyValueStore, prefix: str) -> None:
    revision = await store.create(prefix + "a", b"one")
    entry = await store.get(prefix + "a")
    assert entry is not None
    assert (entry.key, entry.value, entry.mod_revision, entry.create_revision) == (
        prefix + "a",
        b"one",
        revision,
        revision,
    )
    with pytest.raises(AlreadyExists):
        await store.create(prefix + "a", b"two")
    assert await store.get(prefix + "a") == entry
    assert await store.get(prefix + "missing") is None


async def test_replace_is_compare_and_set_on_mod_revision(store: KeyValueStore, prefix: str) -> None:
    key = prefix + "k"
    with pytest.raises(NotFound):
        await store.replace(key, b"x")
    with pytest.raises(NotFound):
        await store.replace(key, b"x", expected_revision=1)
    first = await store.create(key, b"v1")
    second = await store.replace(key, b"v2", expected_revision=first)
    assert second > first
    with pytest.raises(Conflict) as conflict:
        await store.replace(key, b"v3", expected_revision=first)
    assert (conflict.value.expected_revision, conflict.value.actual_revision) == (first, second)
    third = await store.replace(key, b"v3")
    entry = await store.get(key)
    assert entry is not None
    assert (entry.value, entry.mod_revision, entry.create_revision) == (b"v3", third, first)


async def test_put_upserts_and_keeps_create_revision(store: KeyValueStore, prefix: str) -> None:
    created = await store.put(prefix + "p", b"1")
    updated = await store.put(prefix + "p", b"2")
    entry = await store.get(prefix + "p")
    assert entry is not None
    assert updated > created
    assert (entry.value, entry.mod_revision, entry.create_revision) == (b"2", updated, created)


async def test_delete_checks_existence_and_expected_revision(store: KeyValueStore, prefix: str) -> None:
    key = prefix + "d"
    with pytest.raises(NotFound):
        await store.delete(key)
    written = await store.create(key, b"x")
    with pytest.raises(Conflict):
        await store.delete(key, expected_revision=written + 1000)
    assert await store.get(key) is not None
    deleted = await store.delete(key, expected_revision=written)
    assert deleted > written
    assert await store.get(key) is None
    with pytest.raises(NotFound):
        await store.delete(key, expected_revision=written)


async def test_list_is_sorted_prefix_bounded_snapshot(store: KeyValueStore, prefix: str) -> None:
    for name in ["b", "a", "c/deep"]:
        await store.put(prefix + "dir/" + name, name.encode())
    last = await store.put(prefix + "dirt", b"outside the dir/ prefix")
    entries, revision = await store.list(prefix + "dir/")
    assert [entry.key for entry in entries] == [prefix + "dir/a", prefix + "dir/b", prefix + "dir/c/deep"]
    assert [entry.value for entry in entries] == [b"a", b"b", b"c/deep"]
    assert revision >= last
    assert all(entry.mod_revision < last for entry in entries)
    assert await store.list(prefix + "nothing/") == ([], (await store.list(prefix + "nothing/"))[1])


async def test_watch_delivers_changes_in_order_with_deletes(store: KeyValueStore, prefix: str) -> None:
    _, revision = await store.list(prefix)
    async with contextlib.aclosing(store.watch(prefix, revision + 1)) as watch:
        created = await store.create(prefix + "w", b"1")
        await store.put(prefix.rstrip("/") + "-sibling", b"not watched")
        replaced = await store.replace(prefix + "w", b"2", expected_revision=created)
        deleted = await store.delete(prefix + "w")
        events = await next_events(watch, 3)
    assert events == [
        WatchEvent(prefix + "w", b"1", created),
        WatchEvent(prefix + "w", b"2", replaced),
        WatchEvent(prefix + "w", None, deleted),
    ]


async def test_watch_replays_history_from_a_past_revision(store: KeyValueStore, prefix: str) -> None:
    first = await store.put(prefix + "h1", b"a")
    second = await store.put(prefix + "h2", b"b")
    async with contextlib.aclosing(store.watch(prefix, first)) as watch:
        events = await next_events(watch, 2)
    assert [(event.key, event.mod_revision) for event in events] == [
        (prefix + "h1", first),
        (prefix + "h2", second),
    ]


async def test_watch_below_compaction_raises_compacted(store: KeyValueStore, prefix: str) -> None:
    old = await store.put(prefix + "c", b"1")
    await store.put(prefix + "c", b"2")
    point = await store.put(prefix + "c", b"3")
    await store.compact(point)
    with pytest.raises(Compacted) as compacted:
        async with contextlib.aclosing(store.watch(prefix, old)) as watch:
            await next_events(watch, 1)
    assert compacted.value.compacted_revision >= point
    with pytest.raises(Compacted):
        await store.compact(point)
    async with contextlib.aclosing(store.watch(prefix, point)) as watch:
        assert await next_events(watch, 1) == [WatchEvent(prefix + "c", b"3", point)]
    entries, _ = await store.list(prefix)
    assert [entry.value for entry in entries] == [b"3"]


async def test_compact_in_the_future_is_rejected(store: KeyValueStore, prefix: str) -> None:
    _, revision = await store.list(prefix)
    with pytest.raises(ValueError, match="future"):
        await store.compact(revision + 1_000_000)


async def test_closed_store_is_unavailable(store: KeyValueStore, prefix: str) -> None:
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.put(prefix + "x", b"1")


@pytest.mark.fv
async def test_etcd_list_pages_are_one_snapshot(etcd_endpoint: str, prefix: str) -> None:
    store = EtcdStore.from_endpoint(etcd_endpoint, page_size=2)
    try:
        written = [await store.put(f"{prefix}{index:02d}", bytes([index])) for index in range(7)]
        entries, revision = await store.list(prefix)
        assert [entry.value for entry in entries] == [bytes([index]) for index in range(7)]
        assert [entry.mod_revision for entry in entries] == written
        assert revision >= written[-1]
    finally:
        await store.close()
