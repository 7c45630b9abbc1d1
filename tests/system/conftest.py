"""System-tier fixtures: a fresh three-node `EmbeddedCluster` (node-1..node-3) per test.

On teardown every test also checks what all system tests share: no agent incarnation ever
reported its applied positions out of order (`EmbeddedCluster.order_violations`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from lab.embedded import EmbeddedCluster


@pytest.fixture
async def cluster() -> AsyncIterator[EmbeddedCluster]:
    embedded = EmbeddedCluster(3)
    await embedded.start()
    try:
        yield embedded
        assert embedded.order_violations() == []
    finally:
        await embedded.stop()
