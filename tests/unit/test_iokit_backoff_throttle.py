"""Backoff delays and the token-bucket throttle: pure arithmetic with time passed in."""

from __future__ import annotations

import asyncio

import pytest

from iokit.backoff import Backoff
from iokit.throttle import CoalescingThrottle, Throttle


def test_backoff_grows_to_the_cap_within_jitter_bounds() -> None:
    backoff = Backoff(0.1, 1.0, factor=2.0, jitter=0.5, seed=3)
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(c * 0.5 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert backoff.attempts == 8


def test_backoff_is_deterministic_per_seed_and_resets() -> None:
    first = Backoff(seed=42)
    second = Backoff(seed=42)
    assert [first.next_delay() for _ in range(5)] == [second.next_delay() for _ in range(5)]
    first.reset()
    assert first.attempts == 0
    assert first.next_delay() <= 0.1


def test_backoff_without_jitter_is_exact_and_never_overflows() -> None:
    backoff = Backoff(1.0, 30.0, factor=10.0, jitter=0.0)
    delays = [backoff.next_delay() for _ in range(2000)]
    assert delays[:3] == [1.0, 10.0, 30.0] and delays[-1] == 30.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"initial": 0}, "initial"), ({"initial": 5, "maximum": 1}, "initial"), ({"jitter": 2}, "jitter")],
)
def test_backoff_rejects_bad_settings(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=rf"backoff\.{field}"):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_throttle_allows_a_burst_then_one_per_interval() -> None:
    throttle = Throttle(min_interval=0.5, burst=3)
    assert [throttle.try_acquire(10.0) for _ in range(4)] == [True, True, True, False]
    assert throttle.delay(10.0) == pytest.approx(0.5)
    assert throttle.delay(10.2) == pytest.approx(0.3)
    assert not throttle.try_acquire(10.4)
    assert throttle.try_acquire(10.5)
    assert not throttle.try_acquire(10.5)
    assert throttle.tokens(100.0) == 3.0


def test_throttle_never_exceeds_burst_plus_rate_over_a_window() -> None:
    throttle = Throttle(min_interval=0.1, burst=5)
    granted = [t / 100 for t in range(1000) if throttle.try_acquire(t / 100)]  # asks every 10 ms for 10 s
    for start in granted:
        in_window = [t for t in granted if start <= t < start + 1.0]
        assert len(in_window) <= 5 + 1.0 / 0.1
    assert len(granted) <= 5 + 10.0 / 0.1 + 1


def test_zero_interval_never_throttles() -> None:
    throttle = Throttle(min_interval=0, burst=1)
    assert all(throttle.try_acquire(1.0) for _ in range(100))
    assert throttle.delay(1.0) == 0.0


def test_throttle_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match=r"throttle\.min_interval"):
        Throttle(-1)
    with pytest.raises(ValueError, match=r"throttle\.burst"):
        Throttle(1, burst=0)


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


async def test_coalescing_throttle_merges_requests_and_spaces_wakeups() -> None:
    time = FakeTime()
    trigger = CoalescingThrottle(Throttle(min_interval=1.0, burst=1), clock=time.clock, sleep=time.sleep)
    for _ in range(10):
        trigger.request()
    await trigger.wait()
    assert (trigger.wakeups, time.sleeps, trigger.pending) == (1, [], False)
    trigger.request()
    trigger.request()
    await trigger.wait()
    assert trigger.wakeups == 2 and time.now == pytest.approx(1.0)
    assert not trigger.pending


async def test_coalescing_throttle_waits_for_a_request() -> None:
    time = FakeTime()
    trigger = CoalescingThrottle(Throttle(min_interval=1.0), clock=time.clock, sleep=time.sleep)
    waiter = asyncio.create_task(trigger.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    trigger.request()
    await asyncio.wait_for(waiter, 5)
    assert trigger.wakeups == 1
