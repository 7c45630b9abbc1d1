"""Scenarios as classes with weighted tasks, the way Locust users are written.

Owns the scenario vocabulary: the `task` decorator (a weight and a category on a method), the
`Scenario` base (collects its tasks in definition order, base classes first, and picks one per
change with a seeded RNG) and the five scenarios of the issue:

================  ====================================================================  ========
scenario          tasks (weight)                                                        rate/s
================  ====================================================================  ========
policy-churn      create_policy (2), edit_policy (6), delete_policy (2)                 10
pod-churn         create_pod (4), delete_pod (4), relabel_pod (2)                        100
cold-start        none: load everything, start the controller, time the first convergence  -
agent-restart     policy-churn's, plus restart_agent (1)                                 10
slow-agent        policy-churn's, with one agent CPU-throttled (``slow_interval``)        10
================  ====================================================================  ========

slow-agent's node is busy ``slow_interval`` seconds per message it handles
(`loadtest.agents.ThrottledSubscriber`), so it falls behind its stream; it shares its process's
consumer with the others, and must cut itself off and resync from a snapshot (the agent's
``max_lag``, its queue's overflow) while the others' convergence stays where it was.

A task returns an action — a `Change` for the datastore or a `RestartAgent` — or None when it
has nothing to act on (then another task is drawn). It does not submit anything or measure
(`loadtest.runner`). Invariant: for a given seed and workload the sequence of actions is fixed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from loadtest.workload import Change, Workload

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class RestartAgent:
    """Stop a node's agent abruptly and start a fresh one (snapshot, then deltas)."""

    node: str


Action = Change | RestartAgent


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    weight: int
    category: str


def task(weight: int = 1, *, category: str = "") -> Callable[[F], F]:
    """Mark a scenario method as a task drawn with relative ``weight`` (Locust's ``@task``)."""
    if weight < 1:
        raise ValueError(f"task weight: must be >= 1, got {weight}")

    def mark(function: F) -> F:
        function.__loadtest_task__ = (weight, category or function.__name__.split("_")[-1])  # type: ignore[attr-defined]
        return function

    return mark


class Scenario:
    """A workload driver: its tasks, their weights and the scenario's knobs."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    default_rate: ClassVar[float] = 10.0
    churn: ClassVar[bool] = True
    slow_interval: ClassVar[float] = 0.0

    def __init__(self, workload: Workload, seed: int) -> None:
        self.workload = workload
        self.rng = random.Random(f"scenario:{self.name}:{seed}")
        self.tasks = self.collect_tasks()
        self._weights = [spec.weight for spec in self.tasks]

    @classmethod
    def collect_tasks(cls) -> list[TaskSpec]:
        found: dict[str, TaskSpec] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                marker = getattr(value, "__loadtest_task__", None)
                if marker is not None:
                    found[attr] = TaskSpec(attr, marker[0], marker[1])
        return list(found.values())

    def next_action(self) -> tuple[TaskSpec, Action] | None:
        """Draw tasks by weight until one yields an action (None if ten draws yield nothing)."""
        if not self.tasks:
            return None
        for _ in range(10):
            spec = self.rng.choices(self.tasks, self._weights)[0]
            action = getattr(self, spec.name)()
            if action is not None:
                return spec, action
        return None

    def slow_nodes(self) -> dict[str, float]:
        """Nodes whose agent is CPU-throttled: node → seconds it is busy per message."""
        return {}


class PolicyChurn(Scenario):
    name = "policy-churn"
    summary = "create, edit and delete network policies at --rate"

    @task(2)
    def create_policy(self) -> Change | None:
        return self.workload.create_policy()

    @task(6)
    def edit_policy(self) -> Change | None:
        return self.workload.edit_policy()

    @task(2)
    def delete_policy(self) -> Change | None:
        return self.workload.delete_policy()


class PodChurn(Scenario):
    name = "pod-churn"
    summary = "create and delete pods and change their labels at --rate"
    default_rate = 100.0

    @task(4)
    def create_pod(self) -> Change | None:
        return self.workload.create_pod()

    @task(4)
    def delete_pod(self) -> Change | None:
        return self.workload.delete_pod()

    @task(2)
    def relabel_pod(self) -> Change | None:
        return self.workload.relabel_pod()


class ColdStart(Scenario):
    name = "cold-start"
    summary = "load everything into the store, start the controller, time the first convergence"
    churn = False


class AgentRestartScenario(PolicyChurn):
    name = "agent-restart"
    summary = "policy churn while agents are restarted (snapshot, then deltas)"

    @task(1, category="agent")
    def restart_agent(self) -> RestartAgent:
        nodes = self.workload.nodes
        return RestartAgent(nodes[self.rng.randrange(len(nodes))])


class SlowAgent(PolicyChurn):
    name = "slow-agent"
    summary = "policy churn with one agent too slow to keep up; it resyncs, the others must not notice"
    slow_interval = 4.0

    def slow_nodes(self) -> dict[str, float]:
        return {self.workload.nodes[0]: self.slow_interval}


SCENARIOS: dict[str, type[Scenario]] = {
    cls.name: cls for cls in (PolicyChurn, PodChurn, ColdStart, AgentRestartScenario, SlowAgent)
}
