"""Keeps a won leader lease alive from a thread of its own, so event-loop stalls do not end a term.

Owns `LeaseKeeper`: one thread running its own asyncio loop and its own aetcd client (the grpc aio
channel is created inside that loop), which every TTL/3 refreshes the lease and checks that the
leader key still holds this controller's identity under this lease. The controller's main loop
can be held for seconds by synchronous compile work (a 100k-pod cold start measured 7.8 s of loop
lag); a refresh from that loop would miss its gRPC deadline and end the term for nothing.

It does not own the campaign or the epoch (`controller.leader`, on the main loop), nor what a
leader does. It must not keep a dead or wedged controller leading: the main loop calls `tick`
(every `leader.HEARTBEAT_S` from `EtcdElection.hold`), and the keeper refreshes only while the
last tick is within `max_stall` seconds.

Invariants:
- A term ends, and `lost` (a future of the main loop, set thread-safely) gets its reason, when the
  lease can no longer be proven ours: the main loop has not ticked for `max_stall` s; etcd answers
  TTL <= 0; the leader key is gone, or holds another identity or lease; or refreshes have failed
  until the TTL of the last successful one elapsed. A single failed refresh is retried while the
  lease is still provably valid (etcd keeps it for a full TTL after the last refresh).
- A wedged controller leads for at most ``max_stall + TTL/3`` seconds after its last tick: then
  the keeper stops refreshing and revokes the lease (if etcd is unreachable it lapses within TTL).
- Every exit of the thread settles `lost`, revokes the lease (best effort) and closes the client;
  `stop` (resign) wakes it, waits for it to finish and reports ``"resigned"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import aetcd

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 10.0
"""How long `stop` waits for the thread (one refresh and one revoke, each under its deadline)."""


class LeaseKeeper:
    """Refreshes lease `lease_id` (granted at `granted_at`, monotonic) from its own thread."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        lease_id: int,
        ttl: int,
        granted_at: float,
        leader_key: bytes,
        identity: str,
        max_stall: float,
        connect: Callable[[], Any] | None = None,
    ) -> None:
        self.lease_id = lease_id
        self.ttl = ttl
        self.max_stall = max_stall
        self.interval = ttl / 3
        self._rpc_timeout = max(self.interval, 0.5)
        self._leader_key = leader_key
        self._identity = identity.encode()
        self._connect = connect or (lambda: aetcd.Client(host=host, port=port, timeout=self._rpc_timeout))
        self._proven_until = granted_at + ttl
        self._last_tick = time.monotonic()
        self._main_loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[str] = self._main_loop.create_future()
        self._loop = asyncio.new_event_loop()
        self._wake = asyncio.Event()  # bound to the keeper's loop on its first wait
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._thread_main,
            name=f"lease-keeper-{lease_id:x}",
            daemon=True,  # a wedged keeper never holds the process open
        )

    def start(self) -> None:
        self._thread.start()

    def tick(self) -> None:
        """The main loop is alive (called from it)."""
        self._last_tick = time.monotonic()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    async def stop(self) -> None:
        """Resign: wake the thread, wait until it has revoked the lease and ended."""
        self._settle("resigned")
        self._stopping.set()
        with contextlib.suppress(RuntimeError):  # its loop already closed: the thread has ended
            self._loop.call_soon_threadsafe(self._wake.set)
        if self._thread.ident is None:  # never started
            self._loop.close()
            return
        await asyncio.to_thread(self._thread.join, JOIN_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning("lease keeper %s did not stop within %.0f s", self._thread.name, JOIN_TIMEOUT_S)

    # --- main loop side -------------------------------------------------------------------------

    def _settle(self, reason: str) -> None:
        if not self.lost.done():
            self.lost.set_result(reason)

    def _report(self, reason: str) -> None:
        """From the keeper's thread: leadership is lost, for `reason`."""
        log.warning("leadership lost: %s", reason)
        with contextlib.suppress(RuntimeError):  # the main loop is closed: nobody is listening
            self._main_loop.call_soon_threadsafe(self._settle, reason)

    # --- keeper thread --------------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            self._loop.run_until_complete(self._run())
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _run(self) -> None:
        client = self._connect()
        try:
            reason = await self._keep(client)
            if reason is not None:
                self._report(reason)
        except Exception as err:  # a bug here must end the term loudly, not leave it unguarded
            log.exception("lease keeper failed")
            self._report(f"lease keeper failed: {err!r}")
        finally:
            with contextlib.suppress(aetcd.ClientError):
                await client.revoke_lease(self.lease_id)
            with contextlib.suppress(Exception):
                await client.close()

    async def _keep(self, client: Any) -> str | None:
        """Refresh until stopped (None) or until the lease can no longer be proven ours (reason)."""
        delay = self.interval
        while not await self._sleep(delay):
            stalled = time.monotonic() - self._last_tick
            if stalled > self.max_stall:
                return (
                    f"the main event loop has not run for {stalled:.1f} s (max_stall {self.max_stall:g} s);"
                    " letting the lease go"
                )
            sent_at = time.monotonic()
            try:
                reply = await client.refresh_lease(self.lease_id)
                if reply is None:
                    raise aetcd.ClientError("the keep-alive stream closed without a reply")
                holder = await client.get(self._leader_key)
            except aetcd.ClientError as err:
                if time.monotonic() >= self._proven_until:
                    return f"lease refresh failing past its TTL ({self.ttl} s): {err}"
                log.warning("lease refresh failed (%s); retrying while the lease is still valid", err)
                delay = self.interval / 2
                continue
            remaining = int(reply.TTL)
            if remaining <= 0:
                return "the lease expired"
            if holder is None or holder.value != self._identity or holder.lease != self.lease_id:
                return "the leader key is no longer ours"
            self._proven_until = sent_at + remaining
            delay = self.interval
        return None

    async def _sleep(self, seconds: float) -> bool:
        """Wait `seconds` or until stopped; True when stopped."""
        if self._stopping.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        return self._stopping.is_set()
