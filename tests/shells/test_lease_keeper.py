"""The lease keeper's verdicts, with a scripted etcd client in its thread (TTL 1 s, refresh every 1/3 s).

Proves: one failed refresh is retried and leadership kept; refreshes failing until the lease's
TTL has elapsed end the term (never earlier); a reply with TTL 0 and a leader key under another
lease end it at once; `stop` joins the thread and reports "resigned". Every ending revokes the
lease and closes the client.
"""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace
from typing import Any

import aetcd
import pytest

from controller.lease_keeper import LeaseKeeper

LEASE = 42
KEY = b"/t/v1/leader"


class ScriptedEtcd:
    """Answers refreshes from `script` (a TTL, or an exception to raise), then with TTL 1."""

    def __init__(self, *script: int | Exception, lease: int = LEASE) -> None:
        self.script = list(script)
        self.lease = lease
        self.refreshes = 0
        self.revoked: list[int] = []
        self.closed = False
        self.refreshed = threading.Event()  # set on every refresh answered

    async def refresh_lease(self, lease_id: int) -> Any:
        self.refreshes += 1
        step = self.script.pop(0) if self.script else 1
        if isinstance(step, Exception):
            raise step
        self.refreshed.set()
        return SimpleNamespace(TTL=step)

    async def get(self, key: bytes) -> Any:
        assert key == KEY
        return SimpleNamespace(value=b"me", lease=self.lease)

    async def revoke_lease(self, lease_id: int) -> None:
        self.revoked.append(lease_id)

    async def close(self) -> None:
        self.closed = True


def keeper(etcd: ScriptedEtcd, granted_at: float | None = None) -> LeaseKeeper:
    return LeaseKeeper(
        host="unused",
        port=0,
        lease_id=LEASE,
        ttl=1,
        granted_at=time.monotonic() if granted_at is None else granted_at,
        leader_key=KEY,
        identity="me",
        max_stall=30.0,
        connect=lambda: etcd,
    )


async def refreshes_answered(etcd: ScriptedEtcd, count: int) -> None:
    while etcd.refreshes < count:
        etcd.refreshed.clear()
        assert await asyncio.to_thread(etcd.refreshed.wait, 5), f"no refresh after {etcd.refreshes}"


async def test_one_failed_refresh_is_retried_and_leadership_kept() -> None:
    etcd = ScriptedEtcd(1, aetcd.ClientError("Deadline Exceeded"), 1)
    k = keeper(etcd)
    k.start()
    await refreshes_answered(etcd, 4)
    assert not k.lost.done()
    await k.stop()
    assert k.lost.result() == "resigned"
    assert not k.running
    assert etcd.revoked == [LEASE] and etcd.closed


async def test_refreshes_failing_until_the_ttl_elapsed_end_the_term_not_before() -> None:
    etcd = ScriptedEtcd(*[aetcd.ClientError("Internal error from Core")] * 100)
    granted_at = time.monotonic()
    k = keeper(etcd, granted_at)
    k.start()
    reason = await asyncio.wait_for(k.lost, 5)
    assert time.monotonic() - granted_at >= k.ttl
    assert etcd.refreshes >= 2, "a failed refresh was not retried within the TTL"
    assert reason.startswith("lease refresh failing past its TTL (1 s): Internal error from Core")
    await k.stop()
    assert etcd.revoked == [LEASE] and etcd.closed


@pytest.mark.parametrize(
    ("etcd", "reason"),
    [
        (ScriptedEtcd(0), "the lease expired"),
        (ScriptedEtcd(lease=LEASE + 1), "the leader key is no longer ours"),
    ],
)
async def test_an_expired_lease_or_a_key_not_ours_ends_the_term_at_once(
    etcd: ScriptedEtcd, reason: str
) -> None:
    k = keeper(etcd)
    k.start()
    assert await asyncio.wait_for(k.lost, 5) == reason
    assert etcd.refreshes == 1
    await k.stop()
    assert not k.running
    assert etcd.revoked == [LEASE] and etcd.closed
