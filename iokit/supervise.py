"""Supervision of a service's long-lived tasks: run them together, fail together, stop gracefully.

Owns the task group of one service process (the composition root adds its tasks, then awaits
`Supervisor.run`) and its signal handling. Every supervised task is long-lived: if one raises,
the others are cancelled and the first error is re-raised from `run`; if one returns while no
shutdown was asked for, that is an error too (`TaskExited`). SIGTERM/SIGINT (or `stop()`) cancel
every task and `run` returns normally once they have finished their cleanup. It does not restart
tasks (a failed service exits and is restarted from outside, as Felix does) and owns no state of
the tasks themselves.

Invariants: `run` returns only after every task has finished; it returns normally only after a
requested shutdown; the exception it raises is the first failure, never a `CancelledError` or an
`ExceptionGroup`; signal handlers are removed when `run` ends.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

log = logging.getLogger(__name__)

TaskFactory = Callable[[], Coroutine[Any, Any, object]]


class TaskExited(Exception):
    """A supervised long-lived task returned although no shutdown was requested."""

    def __init__(self, name: str) -> None:
        super().__init__(f"task {name!r} returned unexpectedly")
        self.name = name


def _first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_failure(first) if isinstance(first, BaseExceptionGroup) else first


class Supervisor:
    """Runs named long-lived coroutines in one TaskGroup with signal-driven graceful shutdown."""

    def __init__(
        self,
        name: str = "service",
        *,
        signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    ) -> None:
        self.name = name
        self._signals = tuple(signals)
        self._factories: dict[str, TaskFactory] = {}
        self._stop = asyncio.Event()
        self.stop_reason: str | None = None

    def add(self, name: str, factory: TaskFactory) -> None:
        """Register a task; ``factory()`` is called once, inside `run`, to make its coroutine."""
        if name in self._factories:
            raise ValueError(f"supervisor.add: task name {name!r} is already used")
        self._factories[name] = factory

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, reason: str = "requested") -> None:
        """Ask for a graceful shutdown: every task is cancelled and `run` returns."""
        if not self._stop.is_set():
            self.stop_reason = reason
            log.info("%s: shutting down (%s)", self.name, reason)
            self._stop.set()

    async def run(self) -> None:
        """Run every task until one fails (re-raised) or a shutdown is requested (returns)."""
        loop = asyncio.get_running_loop()
        installed = []
        for sig in self._signals:
            try:
                loop.add_signal_handler(sig, self.stop, sig.name)
            except (NotImplementedError, RuntimeError, ValueError):
                log.warning("%s: cannot handle %s here (not the main thread?)", self.name, sig.name)
            else:
                installed.append(sig)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._guard(name, factory), name=f"{self.name}/{name}")
                    for name, factory in self._factories.items()
                ]
                group.create_task(self._cancel_on_stop(tasks), name=f"{self.name}/shutdown")
        except BaseExceptionGroup as failures:
            raise _first_failure(failures) from None
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    async def _guard(self, name: str, factory: TaskFactory) -> None:
        try:
            await factory()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: task %s failed; stopping the others", self.name, name)
            raise
        if not self._stop.is_set():
            log.error("%s: task %s returned unexpectedly; stopping the others", self.name, name)
            raise TaskExited(name)

    async def _cancel_on_stop(self, tasks: list[asyncio.Task[None]]) -> None:
        await self._stop.wait()
        for task in tasks:
            task.cancel()
