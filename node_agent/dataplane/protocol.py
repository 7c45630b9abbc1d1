"""The data-plane contract every data plane implements (memory, nftables).

Owns the `DataPlane` protocol and `DataPlaneError`. It does not own desired-state bookkeeping
(`policycore.desired`) or when to apply (the agent's applier throttles and batches).

Rules:
* `apply(desired)` makes the data plane equal to ``desired`` (a full `NodeState`): the data plane
  computes what changed since what it last programmed and applies it as **one atomic
  transaction**; it is idempotent; on failure nothing of the transaction is applied and
  `DataPlaneError` is raised (the caller retries with backoff).
* `programmed()` is what the data plane believes it has programmed (a copy).
* `resync()` reads the real state back, repairs drift (anything in our table that differs from what
  we programmed, including stray objects) and returns how many objects it repaired.
* `close()` releases resources; it does not remove programmed state (a restarted agent takes over).
"""

from __future__ import annotations

from typing import Protocol

from policycore.ir import NodeState


class DataPlaneError(RuntimeError):
    """A transaction the kernel (or the memory twin) refused; nothing of it was applied."""


class DataPlane(Protocol):
    def apply(self, desired: NodeState) -> None: ...

    def programmed(self) -> NodeState: ...

    def resync(self) -> int: ...

    def close(self) -> None: ...
