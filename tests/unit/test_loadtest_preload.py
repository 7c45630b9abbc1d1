"""The preload: every document lands once, with its revision, even when the store times out."""

from controller.resource_store import ResourceStore
from iokit.memory_store import MemoryStore
from iokit.store import StoreUnavailable
from loadtest.backend import preload
from loadtest.workload import Workload, WorkloadSpec


class LandsThenTimesOut(MemoryStore):
    """Every third create commits, then reports a timeout (as a lost reply from etcd would)."""

    def __init__(self) -> None:
        super().__init__()
        self.creates = 0

    async def create(self, key: str, value: bytes) -> int:
        revision = await super().create(key, value)
        self.creates += 1
        if self.creates % 3 == 0:
            raise StoreUnavailable("etcd: DEADLINE_EXCEEDED")
        return revision


async def test_preload_survives_lost_replies_and_reports_the_last_revision() -> None:
    store = LandsThenTimesOut()
    docs = Workload(WorkloadSpec(nodes=3, pods=30, policies=6, namespaces=2, seed=2)).initial_documents()
    revision = await preload(ResourceStore(store), docs, concurrency=4)
    entries, _ = await store.list("/")
    assert len(entries) == len(docs)  # each document exactly once
    assert revision == max(entry.mod_revision for entry in entries)
