"""Flush throttling: a pure token bucket, and a coalescing async trigger built on it.

`Throttle` owns the bucket arithmetic only: ``burst`` tokens, one token back every ``min_interval``
seconds, time passed in by the caller (no clock, no asyncio), so it is tested with plain numbers.
`CoalescingThrottle` is the thin async shell the engine's flush loop and the agent's apply loop use:
any number of `request()` calls between two flushes collapse into one, and `wait()` returns only
when work is pending *and* the bucket grants a token. It owns no work itself, only "something is
pending"; the caller decides what to flush.

Invariants: tokens stay within ``[0, burst]``; over any window of length ``T`` at most
``burst + T / min_interval`` acquisitions succeed; a `request()` made while a `wait()` is sleeping
for a token is served by that same wake-up (coalesced), never lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# A token refilled by float arithmetic may come back as 0.9999999999; count it as whole.
_ONE = 1.0 - 1e-9


class Throttle:
    """Token bucket of ``burst`` tokens refilled at one token per ``min_interval`` seconds."""

    def __init__(self, min_interval: float, burst: int = 1) -> None:
        if min_interval < 0:
            raise ValueError(f"throttle.min_interval: must be >= 0, got {min_interval}")
        if burst < 1:
            raise ValueError(f"throttle.burst: must be >= 1, got {burst}")
        self._interval = min_interval
        self._burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    def _refill(self, now: float) -> None:
        if self._interval == 0:
            self._tokens = float(self._burst)
            return
        if self._last is not None:
            elapsed = max(0.0, now - self._last)
            self._tokens = min(float(self._burst), self._tokens + elapsed / self._interval)
        self._last = now if self._last is None else max(self._last, now)

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (fractional while refilling)."""
        self._refill(now)
        return self._tokens

    def delay(self, now: float) -> float:
        """Seconds from ``now`` until a token is available; 0.0 when one is available now."""
        self._refill(now)
        if self._tokens >= _ONE:
            return 0.0
        return (1.0 - self._tokens) * self._interval

    def try_acquire(self, now: float) -> bool:
        """Take one token if available at ``now``."""
        self._refill(now)
        if self._tokens >= _ONE:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False


class CoalescingThrottle:
    """Collapse many "work pending" signals into throttled wake-ups of one consumer task.

    One task calls `wait()` in a loop and flushes after each return; any code calls `request()`.
    ``clock`` and ``sleep`` are injectable so tests run on fake time.
    """

    def __init__(
        self,
        throttle: Throttle,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._throttle = throttle
        self._clock = clock
        self._sleep = sleep
        self._pending = asyncio.Event()
        self.wakeups = 0
        self.requests = 0

    @property
    def pending(self) -> bool:
        """Whether work was requested since the last wake-up."""
        return self._pending.is_set()

    def request(self) -> None:
        """Note that there is work to flush; cheap, never blocks, coalesces with earlier requests."""
        self.requests += 1
        self._pending.set()

    async def wait(self) -> None:
        """Return once work is pending and a token was taken; clears the pending flag."""
        await self._pending.wait()
        while not self._throttle.try_acquire(self._clock()):
            await self._sleep(self._throttle.delay(self._clock()))
        self._pending.clear()
        self.wakeups += 1
