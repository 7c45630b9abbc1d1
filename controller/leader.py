"""Leader election between controllers through an etcd lease, and the epoch each leader takes.

Owns `EtcdElection` (the real one) and `LocalElection` (the embedded cluster's single controller).
A controller campaigns by creating its cluster's leader key (`KeyLayout.leader`,
``/<cluster>/v1/leader``) under its own lease (a transaction that succeeds only if the key is
absent); the winner takes the next epoch with a compare-and-swap on the cluster's epoch key
(``/<cluster>/v1/epoch``), so epochs strictly increase across leaders. Controllers of different
clusters on one etcd never contend: each campaigns on its own cluster's key. A standby watches
the key and campaigns again when it disappears (lease expired or resigned) — within about one
lease TTL. Campaign and epoch run on the main event loop.

Once won, the lease is kept by a `controller.lease_keeper.LeaseKeeper`: a thread with its own
event loop and etcd client that refreshes it every TTL/3 and checks the key is still ours, so
synchronous compile work holding the main loop for seconds (longer than the TTL or an RPC
deadline) does not end the term. `hold` is the main loop's heartbeat: it ticks the keeper every
`HEARTBEAT_S`, and the keeper refreshes only while the last tick is within ``max_stall`` seconds
(default the larger of `DEFAULT_MAX_STALL_S` and twice the TTL; it must exceed the TTL, a stall
the bare lease would already survive). A controller whose loop is wedged past ``max_stall`` lets
its lease go, so a standby takes over within ``max_stall + TTL``. `hold` raises `LeadershipLost`
with the keeper's reason (loop stalled, lease expired, key no longer ours, refreshes failing past
the TTL, resigned); the controller then stops publishing and its process exits to restart as a
standby. `resign`/`close` stop and join the keeper, which revokes the lease. It does not own what
a leader does (`controller.app`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

import aetcd

from controller.lease_keeper import LeaseKeeper
from controller.resource_store import KeyLayout

log = logging.getLogger(__name__)

HEARTBEAT_S = 0.5
"""How often `EtcdElection.hold` tells the lease keeper that the main event loop runs."""
DEFAULT_MAX_STALL_S = 30.0
"""The longest main-loop stall a leader survives by default (at least twice the TTL)."""


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
        self,
        host: str,
        port: int,
        identity: str,
        ttl: int = 3,
        layout: KeyLayout = KeyLayout(),
        max_stall: float | None = None,
    ) -> None:
        self.max_stall = max(DEFAULT_MAX_STALL_S, 2.0 * ttl) if max_stall is None else max_stall
        if self.max_stall <= ttl:
            raise ValueError(f"max_stall: {self.max_stall:g} s must exceed the lease TTL ({ttl} s)")
        self.host = host
        self.port = port
        self.identity = identity
        self.ttl = ttl
        self._leader_key = layout.leader.encode()
        self._epoch_key = layout.epoch.encode()
        self._client = aetcd.Client(host=host, port=port, timeout=5)
        self._keeper: LeaseKeeper | None = None
        self.epoch = 0

    async def campaign(self) -> int:
        client = self._client
        await self.resign()  # a previous term's keeper, if any
        while True:
            granted_at = time.monotonic()
            lease = await client.lease(self.ttl)
            won, _ = await client.transaction(
                compare=[client.transactions.create(self._leader_key) == 0],
                success=[client.transactions.put(self._leader_key, self.identity.encode(), lease=lease)],
                failure=[],
            )
            if won:
                self._keeper = LeaseKeeper(
                    host=self.host,
                    port=self.port,
                    lease_id=lease.id,
                    ttl=self.ttl,
                    granted_at=granted_at,
                    leader_key=self._leader_key,
                    identity=self.identity,
                    max_stall=self.max_stall,
                )
                self._keeper.start()
                try:
                    self.epoch = await self._next_epoch()
                except BaseException:
                    await self.resign()
                    raise
                log.info("%s is the leader with epoch %d", self.identity, self.epoch)
                return self.epoch
            await lease.revoke()
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
        """Tick the lease keeper until it reports the term lost; then raise with its reason."""
        keeper = self._keeper
        if keeper is None:
            raise LeadershipLost("not leading: hold() before a won campaign()")
        while not keeper.lost.done():
            keeper.tick()
            await asyncio.wait([keeper.lost], timeout=HEARTBEAT_S)
        raise LeadershipLost(keeper.lost.result())

    async def resign(self) -> None:
        """Stop and join the lease keeper, which revokes the lease; `hold` raises "resigned"."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            await keeper.stop()

    async def close(self) -> None:
        await self.resign()
        await self._client.close()
