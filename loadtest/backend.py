"""The backend contract: what a run needs from "a cluster", and the preload both backends share.

Owns the `Backend` protocol the runner drives — preload the store, start the controller and the
simulated agents, write changes, restart an agent, report hashes and process ids, stop — and
`preload`, which validates every document with the one validator and creates it through
`controller.resource_store.ResourceStore` (the encoding the admin API writes), many at a time.
Backends: `loadtest.embedded` (one process, memory twins) and `loadtest.services` (real etcd,
Kafka, Mosquitto, gRPC, worker processes). It does not own measurement (`loadtest.ledger`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from controller.resource_store import ResourceStore
from iokit.store import AlreadyExists, StoreUnavailable
from loadtest.workload import Change
from policycore.model import Resource, key_of, parse_resource

RETRIES = 5


class Backend(Protocol):
    name: str

    async def prepare(self) -> None:
        """Bring up what the run needs before anything is written (services, topics)."""
        ...

    async def preload(self, documents: Sequence[Mapping[str, Any]]) -> int:
        """Write ``documents`` into the store directly (the controller may run); the revision."""
        ...

    async def start_controller(self) -> float:
        """Start the controller; the wall time it started."""
        ...

    async def start_agents(self, nodes: list[str], spawn_rate: float, slow: Mapping[str, float]) -> None:
        """Start one agent per node, ``spawn_rate`` per second; each begins with a snapshot."""
        ...

    async def write(self, change: Change) -> tuple[int, str]:
        """Submit one change through the backend's API: (revision, outcome)."""
        ...

    async def restart_agent(self, node: str) -> None: ...

    async def hashes(self) -> tuple[dict[str, str], dict[str, str]]:
        """(what the controller compiled, what each agent programmed): node → state hash."""
        ...

    def pids(self) -> dict[str, list[int]]:
        """Process ids by role ("controller", "agents", "services") for CPU and RSS sampling."""
        ...

    def problems(self) -> list[str]:
        """Component failures seen so far (a failed agent or controller task)."""
        ...

    async def stop(self) -> None: ...


async def preload(
    store: ResourceStore, documents: Sequence[Mapping[str, Any]], concurrency: int = 64, rate: float = 0.0
) -> int:
    """Validate and create every document (``concurrency`` in flight, at most ``rate`` per second
    when given); the last revision written."""
    resources = [parse_resource(doc) for doc in documents]
    last = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(resources)):
        queue.put_nowait(index)
    began = time.monotonic()

    async def writer() -> None:
        nonlocal last
        while not queue.empty():
            index = queue.get_nowait()
            if rate > 0:
                await asyncio.sleep(max(0.0, began + index / rate - time.monotonic()))
            revision = await _create(store, resources[index])
            last = max(last, revision)

    await asyncio.gather(*(writer() for _ in range(max(1, min(concurrency, len(resources))))))
    return last


async def _create(store: ResourceStore, resource: Resource) -> int:
    """Create with a bounded retry on an unavailable store; a retried create that had landed is
    recognised by its stored revision (its own write, as nothing else writes during a preload)."""
    for attempt in range(RETRIES + 1):
        try:
            return await store.create(resource)
        except StoreUnavailable:
            if attempt == RETRIES:
                raise
            await asyncio.sleep(0.25 * 2**attempt)
        except AlreadyExists:
            if attempt == 0:
                raise
            found = await store.get(key_of(resource))
            version = getattr(getattr(found, "metadata", None), "resource_version", None)
            if version is None:
                raise
            return int(version)
    raise AssertionError("unreachable")  # pragma: no cover
