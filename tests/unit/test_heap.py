"""Settling the garbage collector: what was built is frozen, young collections become rare."""

import gc
from collections.abc import Iterator

import pytest

from iokit.heap import GC_GEN0_THRESHOLD, settle_garbage_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settling_freezes_the_heap_and_raises_only_the_young_threshold(restored_collector: None) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    kept = [{"member": index} for index in range(1000)]
    settle_garbage_collector()
    assert gc.get_freeze_count() >= len(kept)
    assert gc.get_threshold() == (GC_GEN0_THRESHOLD, 10, 10)


def test_a_higher_young_threshold_already_set_is_kept(restored_collector: None) -> None:
    gc.set_threshold(GC_GEN0_THRESHOLD * 2, 10, 10)
    settle_garbage_collector()
    assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD * 2
