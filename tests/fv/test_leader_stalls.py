"""A leader keeps its lease through event-loop stalls, and lets it go when its loop is wedged.

Proves, against the real etcd (127.0.0.1:2379, ``KALIKO_ETCD``), with `EtcdElection` on the
test's event loop and a standby campaigning from a second thread with its own loop:

- the test's loop blocked synchronously for 6 s — longer than the aetcd deadline (5 s) and three
  lease TTLs (2 s), less than ``max_stall`` — the leader key is still ours under the same lease,
  `hold()` has not raised and the standby has not won (the lease keeper refreshed from its thread);
- the loop blocked past ``max_stall`` (3 s, TTL 1 s): the standby wins, not before ``max_stall``,
  with a higher epoch, and the old leader's `hold()` raises `LeadershipLost` naming the stall.

Isolation: every test campaigns on its own cluster name (``fv-stall-<hex>``), so its leader and
epoch keys are its own; they are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

import aetcd
import pytest

from controller.leader import EtcdElection, LeadershipLost
from controller.resource_store import KeyLayout

pytestmark = pytest.mark.fv
T = TypeVar("T")


@pytest.fixture
async def etcd(etcd_endpoint: str) -> AsyncIterator[aetcd.Client]:
    host, _, port = etcd_endpoint.rpartition(":")
    async with aetcd.Client(host=host, port=int(port), timeout=5) as client:
        yield client


@pytest.fixture
async def layout(etcd: aetcd.Client) -> AsyncIterator[KeyLayout]:
    layout = KeyLayout(f"fv-stall-{uuid.uuid4().hex[:8]}")
    yield layout
    await etcd.delete_prefix(f"/{layout.cluster}/".encode())


@pytest.fixture
def side_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop in a thread of its own: the standby runs there while the test's loop is blocked."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="standby-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def elections(
    etcd_endpoint: str, layout: KeyLayout, ttl: int, max_stall: float
) -> tuple[EtcdElection, EtcdElection]:
    host, _, port = etcd_endpoint.rpartition(":")
    leader = EtcdElection(host, int(port), "leader", ttl, layout, max_stall)
    return leader, EtcdElection(host, int(port), "standby", ttl, layout, max_stall)


def on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
    """Run `coro` on `loop` (another thread) and wait for its result, blocking this thread."""
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


async def test_a_stall_longer_than_the_ttl_and_the_rpc_deadline_keeps_leadership(
    etcd_endpoint: str, etcd: aetcd.Client, layout: KeyLayout, side_loop: asyncio.AbstractEventLoop
) -> None:
    leader, standby = elections(etcd_endpoint, layout, ttl=2, max_stall=10)
    await leader.campaign()
    before = await etcd.get(layout.leader.encode())
    assert before is not None and before.value == b"leader"
    hold = asyncio.create_task(leader.hold())
    await asyncio.sleep(0)  # hold() ticks once
    standby_won = asyncio.run_coroutine_threadsafe(standby.campaign(), side_loop)
    try:
        time.sleep(6)  # the stall under test: synchronous work holding the event loop
        await asyncio.sleep(0)  # whatever the keeper signalled meanwhile is delivered now
        assert not hold.done()
        assert not standby_won.done(), "the standby won while the leader's loop was stalled"
        after = await etcd.get(layout.leader.encode())
        assert after is not None and after.value == b"leader" and after.lease == before.lease
        assert (await etcd.get_lease_info(before.lease, keys=False)).TTL > 0
    finally:
        standby_won.cancel()
        hold.cancel()
        await leader.close()
        on(side_loop, standby.close())
    assert await etcd.get(layout.leader.encode()) is None  # close() revoked the lease


async def test_a_stall_past_max_stall_hands_leadership_to_the_standby(
    etcd_endpoint: str, etcd: aetcd.Client, layout: KeyLayout, side_loop: asyncio.AbstractEventLoop
) -> None:
    max_stall = 3.0
    leader, standby = elections(etcd_endpoint, layout, ttl=1, max_stall=max_stall)
    epoch = await leader.campaign()
    hold = asyncio.create_task(leader.hold())
    await asyncio.sleep(0)  # hold() ticks once, then the loop is wedged
    blocked_at = time.monotonic()
    try:
        standby_epoch = on(side_loop, standby.campaign(), timeout=12)  # blocks the loop until it wins
        stalled = time.monotonic() - blocked_at
        assert stalled >= max_stall - 0.1, f"the standby won after {stalled:.2f} s of stall"
        assert standby_epoch > epoch
        with pytest.raises(LeadershipLost, match="main event loop has not run"):
            await asyncio.wait_for(hold, 5)
        holder = await etcd.get(layout.leader.encode())
        assert holder is not None and holder.value == b"standby"
    finally:
        hold.cancel()
        await leader.close()
        on(side_loop, standby.close())
