"""Scenarios as weighted tasks: Locust-style collection, seeded draws, per-scenario knobs."""

from collections import Counter

from loadtest.scenarios import SCENARIOS, RestartAgent, Scenario, TaskSpec, task
from loadtest.workload import Change, Workload, WorkloadSpec


def workload(seed: int = 3) -> Workload:
    return Workload(WorkloadSpec(nodes=10, pods=400, policies=60, namespaces=4, seed=seed))


def draws(name: str, seed: int, count: int) -> list[str]:
    scenario = SCENARIOS[name](workload(seed), seed)
    out = []
    for _ in range(count):
        drawn = scenario.next_action()
        assert drawn is not None
        spec, action = drawn
        if isinstance(action, Change):
            scenario.workload.settle(action)
        out.append(spec.name)
    return out


def test_tasks_are_collected_with_weights_and_categories() -> None:
    tasks = SCENARIOS["agent-restart"].collect_tasks()
    assert tasks == [
        TaskSpec("create_policy", 2, "policy"),
        TaskSpec("edit_policy", 6, "policy"),
        TaskSpec("delete_policy", 2, "policy"),
        TaskSpec("restart_agent", 1, "agent"),
    ]
    assert SCENARIOS["cold-start"].collect_tasks() == []
    assert set(SCENARIOS) == {"policy-churn", "pod-churn", "cold-start", "agent-restart", "slow-agent"}


def test_draws_follow_the_weights() -> None:
    counts = Counter(draws("pod-churn", seed=11, count=4000))
    total = sum(counts.values())
    for name, weight in (("create_pod", 0.4), ("delete_pod", 0.4), ("relabel_pod", 0.2)):
        assert abs(counts[name] / total - weight) < 0.03, counts


def test_same_seed_same_sequence_other_seed_another() -> None:
    assert draws("policy-churn", 5, 200) == draws("policy-churn", 5, 200)
    assert draws("policy-churn", 5, 200) != draws("policy-churn", 6, 200)


def test_a_task_with_nothing_to_do_is_redrawn() -> None:
    class Picky(Scenario):
        name = "picky"

        @task(3)
        def nothing(self) -> None:
            return None

        @task(1)
        def restart(self) -> RestartAgent:
            return RestartAgent("node-01")

    drawn = Picky(workload(), 1).next_action()
    assert drawn is not None and drawn[0].name == "restart"


def test_slow_agent_throttles_one_node() -> None:
    scenario = SCENARIOS["slow-agent"](workload(), 1)
    assert scenario.slow_nodes() == {"node-01": scenario.slow_interval}
    assert SCENARIOS["policy-churn"](workload(), 1).slow_nodes() == {}
