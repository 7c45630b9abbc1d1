"""Exponential backoff with jitter: how long a retrying loop waits before its next attempt.

Owns the delay sequence of one retrying loop: ``initial * factor**n``, capped at ``maximum``, each
delay shortened by a random fraction of at most ``jitter`` so that many clients restarting together
spread out. It does not sleep: callers await their own (injectable) sleep with the delay it returns,
which keeps tests on fake time. A success calls `reset()` and the next failure starts again from
``initial``.

Invariants: every delay lies in ``[(1 - jitter) * d, d]`` with ``d = min(maximum, initial *
factor**attempt)``; the same seed gives the same sequence; state is one counter and one RNG.
"""

from __future__ import annotations

import random


class Backoff:
    """Jittered exponential delays for one retry loop (seeded, no clock, no sleeping)."""

    def __init__(
        self,
        initial: float = 0.1,
        maximum: float = 10.0,
        *,
        factor: float = 2.0,
        jitter: float = 0.5,
        seed: int | None = None,
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff.initial: need 0 < initial <= maximum, got {initial} and {maximum}")
        if factor < 1:
            raise ValueError(f"backoff.factor: need factor >= 1, got {factor}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"backoff.jitter: need 0 <= jitter <= 1, got {jitter}")
        self._initial = initial
        self._maximum = maximum
        self._factor = factor
        self._jitter = jitter
        self._rng = random.Random(seed)
        self._attempts = 0
        self._ceiling = initial

    @property
    def attempts(self) -> int:
        """Failures since the last `reset()` (the number of delays handed out)."""
        return self._attempts

    def next_delay(self) -> float:
        """The delay before the next attempt, in seconds; counts one more failure."""
        ceiling = self._ceiling
        self._ceiling = min(self._maximum, ceiling * self._factor)
        self._attempts += 1
        return ceiling * (1.0 - self._jitter * self._rng.random())

    def reset(self) -> None:
        """Forget past failures after a success."""
        self._attempts = 0
        self._ceiling = self._initial
