"""`MemoryDataPlane`: the in-memory twin of the nftables data plane.

Owns a programmed `NodeState` held in memory and the `DataPlane` contract around it (atomic,
idempotent `apply`, `programmed`, `resync`, `close`), plus `verdict`, which answers what the
programmed state does with a packet by delegating to `policycore.evaluate`. It does not own
desired-state bookkeeping (`policycore.desired`) or when to apply (the agent's applier).

Tests inject failures with ``fail_apply``: it is called with the desired state before anything
changes and may raise `DataPlaneError`, in which case nothing is applied (as a refused nftables
transaction). Nothing here drifts, so `resync` always repairs 0 objects.
"""

from __future__ import annotations

from collections.abc import Callable

from node_agent.dataplane.protocol import DataPlaneError
from policycore.evaluate import Verdict, evaluate
from policycore.ir import Direction, NodeState

FailureHook = Callable[[NodeState], None]


class MemoryDataPlane:
    """A data plane whose "kernel" is a `NodeState` in memory; see the module docstring."""

    def __init__(self, fail_apply: FailureHook | None = None) -> None:
        self._state = NodeState()
        self._closed = False
        self.fail_apply = fail_apply
        self.applies = 0
        """Successful `apply` calls (idempotent repeats included)."""

    def apply(self, desired: NodeState) -> None:
        """Make the programmed state equal to `desired`, all or nothing."""
        if self._closed:
            raise DataPlaneError("the memory data plane is closed")
        if self.fail_apply is not None:
            self.fail_apply(desired)
        self._state = desired.copy()
        self.applies += 1

    def programmed(self) -> NodeState:
        return self._state.copy()

    def resync(self) -> int:
        return 0

    def close(self) -> None:
        self._closed = True

    def verdict(
        self,
        endpoint_key: str,
        direction: Direction,
        src_ip: str,
        dst_ip: str,
        protocol: int,
        dst_port: int,
        *,
        src_port: int | None = None,
        icmp_type: int | None = None,
        icmp_code: int | None = None,
    ) -> Verdict:
        """What the programmed state does with this packet at `endpoint_key` in `direction`."""
        return evaluate(
            self._state,
            endpoint_key,
            direction,
            src_ip,
            dst_ip,
            protocol,
            dst_port,
            src_port=src_port,
            icmp_type=icmp_type,
            icmp_code=icmp_code,
        )
