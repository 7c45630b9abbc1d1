"""Store contract: MemoryStore and EtcdStore (real etcd, marked fv) behave the same.

Each test runs against both adapters under a fresh prefix. Revisions are compared relative to the
ones the test itself observed, because the shared etcd also serves other tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from iokit.backoff import Backoff
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
from iokit.syncer import InSync, ListWatchSyncer, SyncEvent, Update


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


class PrivateEtcd:
    """A throwaway etcd on free loopback ports with its data under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.client_port, self.peer_port = free_port(), free_port()
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        binary = shutil.which("etcd")
        if binary is None:
            pytest.fail("the etcd binary is not installed (apt-get install etcd-server); run `make services`")
        client, peer = f"http://127.0.0.1:{self.client_port}", f"http://127.0.0.1:{self.peer_port}"
        self.process = await asyncio.create_subprocess_exec(
            binary,
            "--name=iokit-test",
            f"--data-dir={self.directory / 'data'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=iokit-test={peer}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=(self.directory / "etcd.log").open("ab"),
        )
        probe = EtcdStore("127.0.0.1", self.client_port, timeout=1.0)
        try:
            async with asyncio.timeout(30):
                while True:  # polling an external process: there is no event to await
                    with contextlib.suppress(StoreUnavailable):
                        await probe.list("/")
                        return
                    await asyncio.sleep(0.1)
        finally:
            await probe.close()

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.fv
async def test_syncer_relists_after_etcd_is_killed_and_restarted(tmp_path: Path) -> None:
    etcd = PrivateEtcd(tmp_path)
    await etcd.start()
    store = EtcdStore("127.0.0.1", etcd.client_port, timeout=2.0)
    syncer = ListWatchSyncer(store, "/r/", backoff=Backoff(0.05, 0.5, seed=1))
    events = syncer.events()
    try:
        await store.put("/r/a", b"1")
        async with asyncio.timeout(10):
            assert [await anext(events), await anext(events)][1] == InSync(await first_revision(store))
            live = await store.put("/r/a", b"2")
            assert await anext(events) == Update("/r/a", b"2", live)  # the watch is open now
        await etcd.kill()
        pending = asyncio.ensure_future(anext(events))  # the syncer notices, backs off, relists
        await etcd.start()
        written = await store.put("/r/b", b"2")
        seen: list[SyncEvent] = [await asyncio.wait_for(pending, 30)]
        async with asyncio.timeout(30):
            while Update("/r/b", b"2", written) not in seen or not any(isinstance(e, InSync) for e in seen):
                seen.append(await anext(events))
        assert syncer.retries >= 1 and syncer.lists >= 2
        assert not any(isinstance(event, Update) and event.key == "/r/a" for event in seen)
    finally:
        await events.aclose()
        await store.close()
        await etcd.kill()


async def first_revision(store: EtcdStore) -> int:
    return (await store.list("/r/"))[1]


@pytest.mark.fv
async def test_syncer_relists_after_a_real_compaction(tmp_path: Path) -> None:
    etcd = PrivateEtcd(tmp_path)  # private: compacting the shared etcd would disturb other tests
    await etcd.start()
    store = EtcdStore("127.0.0.1", etcd.client_port, timeout=2.0)
    syncer = ListWatchSyncer(store, "/r/", backoff=Backoff(0.05, 0.5, seed=1))
    events = syncer.events()
    try:
        for key in ["gone", "kept", "changed"]:
            await store.put("/r/" + key, b"1")
        async with asyncio.timeout(10):
            assert isinstance([await anext(events) for _ in range(4)][-1], InSync)
            await store.delete("/r/gone")
            changed = await store.put("/r/changed", b"2")
            point = await store.put("/elsewhere", b"x")
            await store.compact(point)
            resync = [await anext(events) for _ in range(3)]
        assert resync == [Update("/r/changed", b"2", changed), Update("/r/gone", None, point), InSync(point)]
        assert syncer.compactions == 1
    finally:
        await events.aclose()
        await store.close()
        await etcd.kill()
