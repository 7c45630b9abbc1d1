"""A worker thread that lives in a named network namespace, for netlink and sockets without forking.

Owns one thread that calls ``setns(2)`` once into ``/run/netns/<name>`` (a network namespace is
per thread on Linux, so the rest of the process stays where it was) and runs submitted calls
there, one at a time. Sockets and libnftables contexts created by those calls belong to that
namespace for their whole life, whichever thread uses them later. It does not create or delete
namespaces (`lab.topology` does).

Invariants: calls run in submission order on the one thread; a call's exception is re-raised in
the caller; after `close` no call is accepted. Entering a namespace that does not exist fails at
construction, not at the first call.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pyroute2 import netns as pyroute2_netns

T = TypeVar("T")


class NetnsThread:
    """Runs callables inside the network namespace ``name``; see the module docstring."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"netns-{name}")
        try:
            self.call(pyroute2_netns.setns, name, 0)
        except BaseException:
            self._pool.shutdown(wait=False)
            raise

    def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in the namespace and return its result (or raise its exception)."""
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
