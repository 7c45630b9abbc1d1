"""A latest-value broadcast hub: the UI's fan-out of `graph` and `cluster` documents to SSE clients.

Owns the latest document per topic and one mailbox per subscriber. A mailbox holds only the
*names* of topics changed since the subscriber last read, and the value is read from the hub at
delivery, so a slow browser skips intermediate values instead of growing a queue, and never
slows `publish()` or the other subscribers. It does not own HTTP or SSE framing (`server`).

Invariants: `publish()` never blocks and ignores a value equal to the current one; a new
subscriber is first sent every topic that has a value; after `close()` every `next()` returns
None.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Subscription:
    """One subscriber's mailbox: the set of topics changed since it last read."""

    def __init__(self, hub: Hub, topics: list[str]) -> None:
        self._hub = hub
        self._dirty: list[str] = list(topics)
        self._wake = asyncio.Event()
        if topics:
            self._wake.set()

    def _mark(self, topic: str) -> None:
        if topic not in self._dirty:
            self._dirty.append(topic)
        self._wake.set()

    async def next(self) -> tuple[str, Any] | None:
        """Wait for the next changed topic; return (topic, latest value), or None once the hub closed."""
        while not self._dirty:
            if self._hub.closed:
                return None
            self._wake.clear()
            await self._wake.wait()
        if self._hub.closed:
            return None
        topic = self._dirty.pop(0)
        return topic, self._hub.latest(topic)


class Hub:
    """Holds the latest value per topic and wakes subscribers when one changes."""

    def __init__(self) -> None:
        self._latest: dict[str, Any] = {}
        self._subscribers: set[Subscription] = set()
        self.closed = False

    def latest(self, topic: str) -> Any:
        """The current value of `topic` (None if never published)."""
        return self._latest.get(topic)

    def publish(self, topic: str, value: Any) -> bool:
        """Store `value` as the latest `topic`; True if it changed (and subscribers were woken)."""
        if topic in self._latest and self._latest[topic] == value:
            return False
        self._latest[topic] = value
        for subscription in self._subscribers:
            subscription._mark(topic)
        return True

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """A subscription for the duration of the `with` block, primed with every current topic."""
        subscription = Subscription(self, list(self._latest))
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)

    def close(self) -> None:
        """End every subscription (their `next()` returns None): used at shutdown."""
        self.closed = True
        for subscription in self._subscribers:
            subscription._wake.set()
