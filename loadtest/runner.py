"""One bounded run: preload, warm-up (the cold start), churn at a rate, drain, check, stop.

Owns the run's phases and their timing, the open-loop arrival schedule (change i is due at
``start + i / rate`` whatever happened to earlier ones; writes run concurrently, at most
``MAX_WRITES`` at a time), feeding accepted changes into the `ConvergenceLedger` and resolved ones
into the `StatsBook`, and the final consistency check (every node's programmed-state hash against
what the controller compiled). It does not build the backend's parts, draw tasks, print or write
files (`loadtest.cli`, `loadtest.scenarios`, `loadtest.live`, `loadtest.report`).

::

    cold start (cold-start):  preload ─▶ agents ─▶ controller ─▶ warm-up (from the controller's start)
    live load (the others):   controller ─▶ in sync ─▶ preload (compiled as it arrives) ─▶ agents
                              ─▶ warm-up (from the agents' start)
    then: every node applied the preload revision ─▶ churn: scenario.next_action() at --rate for
       --duration ─▶ drain: in-flight changes resolve ─▶ check: hashes, lost ─▶ stop

A live load builds the cluster the way a running one grows, through the controller's watch; it
keeps the churn measurement apart from the controller's cold start, which `cold-start` measures.

Invariant: the run always ends by itself: the warm-up, drain and check phases each have a timeout,
and a timed-out phase is reported (``problems``), never waited on forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from loadtest.backend import Backend
from loadtest.ledger import ChangeRecord, ConvergenceLedger
from loadtest.sampler import ResourceSampler
from loadtest.scenarios import SCENARIOS, Action, RestartAgent, Scenario, TaskSpec
from loadtest.taskstats import StatsBook
from loadtest.workload import Change, Workload, WorkloadSpec

log = logging.getLogger(__name__)
MAX_WRITES = 256
TICK = 0.25


@dataclass(frozen=True, slots=True)
class RunParams:
    scenario: str
    nodes: int = 100
    pods: int = 5000
    policies: int = 200
    namespaces: int = 10
    rate: float | None = None
    duration: float = 60.0
    spawn_rate: float = 100.0
    backend: str = "embedded"
    seed: int = 1
    drain_timeout: float = 60.0
    warmup_timeout: float = 600.0
    slow_interval: float | None = None
    agents_first: bool | None = None
    """A cold start (True) or a live load (False); None: cold for cold-start only."""

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario: unknown {self.scenario!r} (known: {', '.join(SCENARIOS)})")
        if self.duration <= 0 or self.duration > 24 * 3600:
            raise ValueError(f"duration: must be within (0, 86400] seconds, got {self.duration}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate: must be > 0, got {self.rate}")
        if self.spawn_rate < 0:
            raise ValueError(f"spawn_rate: must be >= 0, got {self.spawn_rate}")

    @property
    def effective_rate(self) -> float:
        return self.rate if self.rate is not None else SCENARIOS[self.scenario].default_rate


@dataclass(slots=True)
class Phase:
    name: str
    started: float
    ended: float | None = None


@dataclass(slots=True)
class RunState:
    """What the live view and the report read while and after the run."""

    phase: str = "init"
    phases: dict[str, Phase] = field(default_factory=dict)
    nodes_ready: int = 0
    warmup_ms: float | None = None
    warmup_node_ms: list[float] = field(default_factory=list)
    controller_started: float = 0.0
    warmup_origin: float = 0.0
    preload_revision: int = 0
    mismatched: dict[str, tuple[str, str]] = field(default_factory=dict)
    lost: list[ChangeRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    scheduled: int = 0
    in_flight: list[tuple[float, int]] = field(default_factory=list)
    restarting: set[str] = field(default_factory=set)


class Run:
    """See the module docstring. ``backend_factory(sink)`` builds the backend over the ledger."""

    def __init__(self, params: RunParams, backend_factory: Callable[[ConvergenceLedger], Backend]) -> None:
        self.params = params
        spec = WorkloadSpec(params.nodes, params.pods, params.policies, params.namespaces, params.seed)
        self.workload = Workload(spec)
        scenario_class = SCENARIOS[params.scenario]
        self.scenario: Scenario = scenario_class(self.workload, params.seed)
        if params.slow_interval is not None:
            self.scenario.slow_interval = params.slow_interval  # type: ignore[misc]  # per-run override
        self.ledger = ConvergenceLedger()
        self.book = StatsBook()
        self.state = RunState()
        self.backend = backend_factory(self.ledger)
        self.sampler = ResourceSampler(self._pids)
        self._writes: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_WRITES)
        self.on_tick: Callable[[], None] = lambda: None

    def _pids(self) -> dict[str, list[int]]:
        return {**self.backend.pids(), "driver": [os.getpid()]}

    def _enter(self, name: str) -> None:
        now = time.time()
        if self.state.phase in self.state.phases:
            self.state.phases[self.state.phase].ended = now
        self.state.phase = name
        self.state.phases[name] = Phase(name, now)

    async def execute(self) -> None:
        background = [
            asyncio.create_task(self.sampler.run(), name="sampler"),
            asyncio.create_task(self._ticker(), name="ticker"),
        ]
        try:
            await self._phases()
        except Exception as error:  # a broken backend ends the run with a report, not a traceback
            log.exception("run failed")
            self.state.problems.append(f"{self.state.phase}: {type(error).__name__}: {error}")
        finally:
            self._enter("stop")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.backend.stop(), 60)
            self.sampler.sample()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            self._enter("done")

    async def _phases(self) -> None:
        p = self.params
        cold = p.agents_first if p.agents_first is not None else not self.scenario.churn
        await self.backend.prepare()
        if cold:
            await self._load()
            self._enter("warm-up")
            await self.backend.start_agents(self.workload.nodes, p.spawn_rate, self.scenario.slow_nodes())
            self.state.controller_started = self.state.warmup_origin = await self.backend.start_controller()
        else:
            self._enter("controller")
            self.state.controller_started = await self.backend.start_controller()
            if not await self._until(
                lambda: "controller_in_sync" in self.ledger.milestones, p.warmup_timeout
            ):
                self.state.problems.append("controller: not in sync on an empty store")
                return
            self.ledger.baseline = 2**62  # what the load compiles is not measured
            await self._load()
            if not await self._until(
                lambda: self.ledger.compiled >= self.state.preload_revision, p.warmup_timeout
            ):
                self.state.problems.append(
                    f"load: the controller did not compile revision {self.state.preload_revision}"
                )
                return
            self._enter("warm-up")
            self.state.warmup_origin = time.time()
            await self.backend.start_agents(self.workload.nodes, p.spawn_rate, self.scenario.slow_nodes())
        if not await self._until(self._warm, p.warmup_timeout):
            waited = time.time() - self.state.phases["warm-up"].started
            self.state.problems.append(
                f"warm-up: only {self.state.nodes_ready}/{p.nodes} nodes converged in {waited:.0f}s"
            )
            return
        if self.scenario.churn:
            self._enter("churn")
            await self._churn(p.effective_rate, p.duration)
            self._enter("drain")
            if self._writes:
                await asyncio.wait(self._writes, timeout=p.drain_timeout)
            drained = await self._until(lambda: not self.ledger.in_flight, p.drain_timeout)
            if not drained:
                self.state.problems.append(f"drain: {self.ledger.in_flight} change(s) unresolved")
        self._enter("check")
        await self._check()

    async def _load(self) -> None:
        self._enter("preload")
        self.state.preload_revision = await self.backend.preload(self.workload.initial_documents())
        self.ledger.baseline = self.state.preload_revision

    async def _until(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= deadline:
                return False
            problems = self.backend.problems()
            if problems:
                self.state.problems.extend(problems)
                return False
            await asyncio.sleep(TICK)
        return True

    def _warm(self) -> bool:
        revision, nodes = self.state.preload_revision, self.workload.nodes
        self.state.nodes_ready = self.ledger.nodes_converged(nodes, revision)
        if self.state.nodes_ready < len(nodes):
            return False
        start = self.state.warmup_origin
        times = [self.ledger.applied_at(node, revision) or start for node in nodes]
        self.state.warmup_node_ms = [max(0.0, (t - start) * 1000) for t in times]
        self.state.warmup_ms = max(self.state.warmup_node_ms)
        return True

    async def _churn(self, rate: float, duration: float) -> None:
        began = time.monotonic()
        index = 0
        while True:
            slot = began + index / rate
            if slot >= began + duration:
                return
            delay = slot - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            index += 1
            drawn = self.scenario.next_action()
            if drawn is None:
                continue
            await self._slots.acquire()
            self.state.scheduled += 1
            task = asyncio.create_task(self._act(*drawn))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _act(self, spec: TaskSpec, action: Action) -> None:
        try:
            if isinstance(action, RestartAgent):
                await self._restart(spec, action)
            else:
                await self._write(spec, action)
        finally:
            self._slots.release()

    async def _write(self, spec: TaskSpec, change: Change) -> None:
        sent = time.time()
        try:
            revision, outcome = await self.backend.write(change)
        except Exception as error:
            self.ledger.failed(spec.name, spec.category, f"{type(error).__name__}: {error}", time.time())
            self.book.failed(spec.category, spec.name, time.time())
            return
        finally:
            self.workload.settle(change)
        accepted = time.time()
        if outcome == "unchanged":
            self.book.unchanged(spec.category, spec.name)
            return
        self.ledger.change(spec.name, spec.category, sent, accepted, revision)
        self.book.accepted(spec.category, spec.name, accepted)

    async def _restart(self, spec: TaskSpec, action: RestartAgent) -> None:
        if action.node in self.state.restarting:
            return
        self.state.restarting.add(action.node)
        self.book.accepted(spec.category, spec.name, time.time())
        try:
            await asyncio.wait_for(self.backend.restart_agent(action.node), 60)
        except Exception as error:
            self.ledger.failed(spec.name, spec.category, f"{type(error).__name__}: {error}", time.time())
            self.book.failed(spec.category, spec.name, time.time())
        finally:
            self.state.restarting.discard(action.node)

    async def _check(self) -> None:
        try:
            expected, programmed = await asyncio.wait_for(self.backend.hashes(), 120)
        except Exception as error:
            self.state.problems.append(f"check: hashes unavailable: {type(error).__name__}: {error}")
            expected, programmed = {}, {}
        for node, want in expected.items():
            have = programmed.get(node, "<none>")
            if have != want:
                self.state.mismatched[node] = (want, have)
        self._account(self.ledger.resolve())
        self.state.lost = self.ledger.finish()

    async def _ticker(self) -> None:
        last_row = 0.0
        while True:
            await asyncio.sleep(TICK)
            self._account(self.ledger.resolve())
            now = time.time()
            if now - last_row >= 1.0:
                last_row = now
                self.book.tick(now, self.state.nodes_ready)
                self.state.in_flight.append((now, self.ledger.in_flight))
            self.on_tick()

    def _account(self, records: list[ChangeRecord]) -> None:
        for record in records:
            if record.converged is None:
                continue
            node_bytes = list(self.ledger.bytes_of(record).values())
            self.book.resolved(
                record.category, record.task, record.converged, self.latency(record), node_bytes
            )

    def latency(self, record: ChangeRecord) -> float:
        excluded = frozenset(self.scenario.slow_nodes())
        return record.latency_ms(excluded, self.ledger.flush_time.get(record.flush or 0, 0.0))
