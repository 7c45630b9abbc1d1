"""How the services backend spreads simulated nodes over its agent workers."""

from __future__ import annotations

import pytest

from iokit.bus import partition_for
from loadtest.services import split_by_partition


@pytest.mark.parametrize(
    ("nodes", "partitions", "workers"), [(1000, 64, 2), (300, 64, 3), (3000, 64, 2), (5, 64, 2)]
)
def test_no_partition_is_read_by_two_workers_and_every_node_is_placed_once(
    nodes: int, partitions: int, workers: int
) -> None:
    names = [f"node-{index:04d}" for index in range(nodes)]
    split = split_by_partition(names, partitions, workers)
    assert sorted(node for mine in split for node in mine) == sorted(names)
    assert all(mine == sorted(mine) for mine in split)  # each keeps the nodes' order
    read = [{partition_for(node, partitions) for node in mine} for mine in split]
    for index, first in enumerate(read):
        for second in read[index + 1 :]:
            assert not first & second
    if nodes >= 300:
        sizes = [len(mine) for mine in split]
        assert len(split) == workers and max(sizes) - min(sizes) <= 0.1 * nodes / workers


def test_fewer_partitions_than_workers_leaves_no_empty_worker() -> None:
    split = split_by_partition([f"n{index}" for index in range(50)], 1, 3)
    assert len(split) == 1 and len(split[0]) == 50
