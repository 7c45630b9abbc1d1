"""ListWatchSyncer on the memory store: list/InSync ordering, relist after compaction and outages.

No sleeps: the syncer's sleep is replaced by a recorder (that can also end an injected outage), and
the memory store's fault knobs make the watch fail at chosen points.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable

import pytest

from iokit.backoff import Backoff
from iokit.memory_store import MemoryStore
from iokit.syncer import InSync, ListWatchSyncer, SyncEvent, Update

P = "/r/"


class Consumer:
    """Applies the stream to a dict and checks the stream invariants as it goes."""

    def __init__(self, events: AsyncGenerator[SyncEvent, None]) -> None:
        self.events = events
        self.view: dict[str, bytes] = {}
        self.seen: list[SyncEvent] = []
        self.key_revisions: dict[str, int] = {}
        self.last_revision = 0

    async def take(self, count: int) -> list[SyncEvent]:
        taken = []
        async with asyncio.timeout(5):
            for _ in range(count):
                event = await anext(self.events)
                assert event.revision >= self.last_revision, f"revision went back: {event}"
                self.last_revision = event.revision
                if isinstance(event, Update):
                    assert event.revision > self.key_revisions.get(event.key, 0), f"duplicate {event}"
                    self.key_revisions[event.key] = event.revision
                    if event.value is None:
                        assert event.key in self.view, f"delete of unknown key {event}"
                        del self.view[event.key]
                    else:
                        self.view[event.key] = event.value
                taken.append(event)
        self.seen.extend(taken)
        return taken

    async def until_in_sync(self) -> list[SyncEvent]:
        taken: list[SyncEvent] = []
        while not taken or not isinstance(taken[-1], InSync):
            taken += await self.take(1)
        return taken


async def contents(store: MemoryStore) -> dict[str, bytes]:
    entries, _ = await store.list(P)
    return {entry.key: entry.value for entry in entries}


def recorder(
    on_sleep: Callable[[], None] = lambda: None,
) -> tuple[list[float], Callable[[float], Awaitable[None]]]:
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        on_sleep()

    return delays, sleep


def make_syncer(store: MemoryStore, sleep: Callable[[float], Awaitable[None]]) -> ListWatchSyncer:
    return ListWatchSyncer(store, P, backoff=Backoff(0.5, 8.0, seed=1), sleep=sleep)


async def test_first_list_is_emitted_in_revision_order_before_in_sync() -> None:
    store = MemoryStore()
    rb = await store.put(P + "b", b"1")
    ra = await store.put(P + "a", b"2")
    await store.put("/elsewhere", b"x")
    _, sleep = recorder()
    syncer = make_syncer(store, sleep)
    consumer = Consumer(syncer.events())
    assert not syncer.in_sync
    events = await consumer.take(3)
    assert events == [Update(P + "b", b"1", rb), Update(P + "a", b"2", ra), InSync(store.revision)]
    assert syncer.in_sync
    await consumer.events.aclose()


async def test_empty_prefix_still_reports_in_sync() -> None:
    store = MemoryStore()
    _, sleep = recorder()
    consumer = Consumer(make_syncer(store, sleep).events())
    assert await consumer.take(1) == [InSync(1)]
    await consumer.events.aclose()


async def test_watch_events_follow_in_sync() -> None:
    store = MemoryStore()
    _, sleep = recorder()
    consumer = Consumer(make_syncer(store, sleep).events())
    await consumer.until_in_sync()
    created = await store.create(P + "x", b"1")
    deleted = await store.delete(P + "x")
    assert await consumer.take(2) == [Update(P + "x", b"1", created), Update(P + "x", None, deleted)]
    await consumer.events.aclose()


async def test_relist_after_compaction_synthesizes_deletes_without_duplicates() -> None:
    store = MemoryStore()
    for key in ["gone", "changed", "same"]:
        await store.put(P + key, b"v1")
    delays, sleep = recorder()
    syncer = make_syncer(store, sleep)
    consumer = Consumer(syncer.events())
    await consumer.until_in_sync()

    # While the syncer is between its list and its watch, history it needs is compacted away.
    await store.delete(P + "gone")
    changed = await store.put(P + "changed", b"v2")
    new = await store.put(P + "new", b"v1")
    await store.compact(store.revision)

    resync = await consumer.until_in_sync()
    assert resync == [
        Update(P + "changed", b"v2", changed),
        Update(P + "new", b"v1", new),
        Update(P + "gone", None, store.revision),
        InSync(store.revision),
    ]
    assert consumer.view == await contents(store)
    assert syncer.compactions == 1 and syncer.lists == 2 and len(delays) == 1
    await consumer.events.aclose()


async def test_lost_watch_relists_and_resumes_without_repeating_delivered_events() -> None:
    store = MemoryStore()
    await store.put(P + "a", b"1")
    _, sleep = recorder()
    syncer = make_syncer(store, sleep)
    consumer = Consumer(syncer.events())
    await consumer.until_in_sync()
    first = await store.put(P + "a", b"2")
    assert await consumer.take(1) == [Update(P + "a", b"2", first)]

    store.break_watches()
    await store.put(P + "b", b"1")
    await store.delete(P + "a")
    resync = await consumer.until_in_sync()
    assert [(e.key, e.value) for e in resync if isinstance(e, Update)] == [(P + "b", b"1"), (P + "a", None)]
    assert consumer.view == await contents(store)

    later = await store.put(P + "c", b"1")
    assert await consumer.take(1) == [Update(P + "c", b"1", later)]
    assert sum(isinstance(event, InSync) for event in consumer.seen) == 2
    await consumer.events.aclose()


async def test_outage_backs_off_growing_then_relists_once_available() -> None:
    store = MemoryStore()
    await store.put(P + "a", b"1")
    failures_left = [3]

    def recover_after_three() -> None:
        failures_left[0] -= 1
        if failures_left[0] == 0:
            store.set_unavailable(False)

    delays, sleep = recorder(recover_after_three)
    syncer = make_syncer(store, sleep)
    consumer = Consumer(syncer.events())
    await consumer.until_in_sync()
    store.set_unavailable(True)  # the watch fails, then two lists fail, then the store is back
    resync = await consumer.take(1)
    assert resync == [InSync(store.revision)]  # nothing changed: no updates, just InSync again
    assert len(delays) == 3
    assert delays[0] < delays[2]
    assert 0.25 <= delays[0] <= 0.5 and 1.0 <= delays[2] <= 2.0
    assert syncer.retries == 3
    await consumer.events.aclose()


async def test_backoff_resets_after_the_watch_delivers() -> None:
    store = MemoryStore()
    delays, sleep = recorder()
    syncer = make_syncer(store, sleep)
    consumer = Consumer(syncer.events())
    await consumer.until_in_sync()
    for round_ in range(3):
        await store.put(P + "k", str(round_).encode())
        await consumer.take(1)
        store.break_watches()
        await consumer.until_in_sync()
    assert len(delays) == 3 and all(delay <= 0.5 for delay in delays)
    await consumer.events.aclose()


async def test_run_feeds_a_bounded_queue_in_order() -> None:
    store = MemoryStore()
    for index in range(5):
        await store.put(f"{P}{index}", b"x")
    _, sleep = recorder()
    queue: asyncio.Queue[SyncEvent] = asyncio.Queue(maxsize=1)
    task = asyncio.create_task(make_syncer(store, sleep).run(queue))
    got: list[SyncEvent] = []
    async with asyncio.timeout(5):
        while not got or not isinstance(got[-1], InSync):
            got.append(await queue.get())
            assert queue.qsize() <= 1
    assert [event.key for event in got[:-1] if isinstance(event, Update)] == [f"{P}{i}" for i in range(5)]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
