"""Leader election between controllers through an etcd lease, and the epoch each leader takes.

Owns `EtcdElection` (the real one) and `LocalElection` (the embedded cluster's single controller).
A controller campaigns by creating its cluster's leader key (`KeyLayout.leader`,
``/<cluster>/v1/leader``) under its own lease (a transaction that succeeds only if the key is
absent); the winner takes the next epoch with a compare-and-swap on the cluster's epoch key
(``/<cluster>/v1/epoch``), so epochs strictly increase across leaders. Controllers of different
clusters on one etcd never contend: each campaigns on its own cluster's key. A standby watches
the key and campaigns again when it disappears (lease expired or resigned) — within about one
lease TTL. The leader refreshes its lease every TTL/3 and raises `LeadershipLost` the moment a
refresh fails or the key is no longer ours; the controller then stops publishing (its supervisor
restarts it as a standby). It does not own what a leader does (`controller.app`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import aetcd

from controller.resource_store import KeyLayout

log = logging.getLogger(__name__)


class LeadershipLost(RuntimeError):
    """This controller is no longer the leader; stop acting as one."""


class Election(Protocol):
    async def campaign(self) -> int:
        """Block until this controller leads; return its new epoch."""
        ...

    async def hold(self) -> None:
        """Keep leadership; returns never, raises `LeadershipLost`."""
        ...

    async def resign(self) -> None: ...


class LocalElection:
    """A single controller in one process: always the leader, epochs counted in memory."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch
        self._lost = asyncio.Event()

    async def campaign(self) -> int:
        self.epoch += 1
        self._lost.clear()
        return self.epoch

    async def hold(self) -> None:
        await self._lost.wait()
        raise LeadershipLost("resigned")

    async def resign(self) -> None:
        self._lost.set()


class EtcdElection:
    def __init__(
        self, host: str, port: int, identity: str, ttl: int = 3, layout: KeyLayout = KeyLayout()
    ) -> None:
        self.identity = identity
        self.ttl = ttl
        self._leader_key = layout.leader.encode()
        self._epoch_key = layout.epoch.encode()
        self._client = aetcd.Client(host=host, port=port, timeout=5)
        self._lease: Any = None
        self.epoch = 0

    async def campaign(self) -> int:
        client = self._client
        while True:
            self._lease = await client.lease(self.ttl)
            won, _ = await client.transaction(
                compare=[client.transactions.create(self._leader_key) == 0],
                success=[
                    client.transactions.put(self._leader_key, self.identity.encode(), lease=self._lease)
                ],
                failure=[],
            )
            if won:
                self.epoch = await self._next_epoch()
                log.info("%s is the leader with epoch %d", self.identity, self.epoch)
                return self.epoch
            await self._lease.revoke()
            self._lease = None
            await self._wait_for_vacancy()

    async def _next_epoch(self) -> int:
        client = self._client
        while True:
            current = await client.get(self._epoch_key)
            value = int(current.value) if current is not None else 0
            compare = (
                client.transactions.version(self._epoch_key) == 0
                if current is None
                else client.transactions.mod(self._epoch_key) == current.mod_revision
            )
            ok, _ = await client.transaction(
                compare=[compare],
                success=[client.transactions.put(self._epoch_key, str(value + 1).encode())],
                failure=[],
            )
            if ok:
                return value + 1

    async def _wait_for_vacancy(self) -> None:
        client = self._client
        current = await client.get(self._leader_key)
        if current is None:
            return
        holder = current.value.decode(errors="replace")
        log.info(
            "%s is a standby: %s holds %s; waiting for it to go",
            self.identity,
            holder,
            self._leader_key.decode(),
        )
        watch = await client.watch(self._leader_key, start_revision=current.mod_revision + 1)
        try:
            async for event in watch:
                if event.kind == aetcd.EventKind.DELETE:
                    return
        finally:
            await watch.cancel()

    async def hold(self) -> None:
        client = self._client
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                remaining = await self._lease.refresh()
                holder = await client.get(self._leader_key)
            except aetcd.ClientError as err:
                raise LeadershipLost(f"lease refresh failed: {err}") from err
            if holder is None or holder.value != self.identity.encode() or _ttl_of(remaining) <= 0:
                raise LeadershipLost("the leader key is no longer ours")

    async def resign(self) -> None:
        if self._lease is not None:
            with contextlib.suppress(aetcd.ClientError):
                await self._lease.revoke()
            self._lease = None

    async def close(self) -> None:
        await self.resign()
        await self._client.close()


def _ttl_of(refresh_reply: Any) -> int:
    """aetcd's refresh returns the keep-alive reply(s); TTL <= 0 means the lease expired."""
    replies = refresh_reply if isinstance(refresh_reply, list) else [refresh_reply]
    return min((int(getattr(r, "TTL", 1)) for r in replies), default=1)
