"""Test support: drive a `CalcGraph` through datastore states and check every flush against the oracle.

`Checker` owns a graph, the resources it has been sent and each node's state as rebuilt from the
emitted diffs alone. After every flush it asserts, for every node the graph or the oracle knows:

* the ops a node received are exactly ``diff_states(previous, oracle)`` — so the result equals
  `compile_all` of the current resources, the ops are minimal (coalesced), and dependency-ordered;
* applying them one at a time never leaves a policy referencing a missing set or an endpoint a
  missing policy;
* `node_state`, `nodes()` and `affected_nodes_of_last_flush` agree.

Expanders (Felix's calc-graph state tests): `forwards`, `backwards`, `individually` (each state
from empty and back), `permutations` (seeded). Flush strategies: after every update, after every
state, at random points (seeded), only at the end.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence

from policycore.calc.graph import CalcGraph
from policycore.calc.oracle import compile_all
from policycore.diff import Op, apply_ops, diff_states
from policycore.ir import NodeState
from policycore.model import Resource
from policycore.model.resources import ResourceKey, key_of

State = Sequence[Resource]
Expander = Callable[[Sequence[State]], list[State]]
EMPTY: State = ()


class Checker:
    """A graph under test, what it was sent, and each node's state rebuilt from its diffs."""

    def __init__(self) -> None:
        self.graph = CalcGraph()
        self.current: dict[ResourceKey, Resource] = {}
        self.states: dict[str, NodeState] = {}
        self.flushes = 0

    def update(self, key: ResourceKey, value: Resource | None) -> None:
        self.graph.on_update(key, value)
        if value is None:
            self.current.pop(key, None)
        else:
            self.current[key] = value

    def flush(self) -> dict[str, tuple[Op, ...]]:
        out = self.graph.flush()
        self.flushes += 1
        want = compile_all(self.current.values())
        assert self.graph.affected_nodes_of_last_flush == set(out)
        assert self.graph.nodes() == set(want)
        for node in sorted(set(self.states) | set(want) | set(out)):
            before = self.states.get(node, NodeState())
            expected = want.get(node, NodeState())
            ops = out.get(node, ())
            assert ops == diff_states(before, expected), (
                f"node {node}: emitted ops differ from the oracle's diff"
            )
            state = before
            for op in ops:
                state = apply_ops(state, (op,))
                assert_consistent(node, state)
            self.states[node] = state
            assert self.graph.node_state(node) == expected
        return out

    def move_to(
        self, target: State, flush_when: Callable[[], bool], order: random.Random | None = None
    ) -> None:
        """Send the updates that turn the current resources into `target`, flushing when told."""
        wanted = {key_of(r): r for r in target}
        keys = sorted(set(self.current) | set(wanted))
        if order is not None:
            order.shuffle(keys)
        for key in keys:
            value = wanted.get(key)
            if self.current.get(key) != value:
                self.update(key, value)
                if flush_when():
                    self.flush()

    def resend_all(self) -> None:
        """Send every current value again: nothing may come out."""
        for key, value in sorted(self.current.items()):
            self.graph.on_update(key, value)
        assert self.flush() == {}


def assert_consistent(node: str, state: NodeState) -> None:
    for policy in state.policies.values():
        missing = policy.ipset_refs() - state.ipsets.keys()
        assert not missing, f"node {node}: policy {policy.policy_id} references missing sets {missing}"
    for endpoint in state.endpoints.values():
        missing = endpoint.policy_refs() - state.policies.keys()
        assert not missing, f"node {node}: endpoint {endpoint.key} references missing policies {missing}"


def replay(states: Iterable[State], strategy: str, seed: int = 0) -> Checker:
    """Drive a fresh graph through `states` with a flush strategy; always flush at the end."""
    rng = random.Random(seed)
    checker = Checker()
    every_update = {"update": lambda: True, "random": lambda: rng.random() < 0.3}.get(strategy, lambda: False)
    shuffle = rng if strategy == "random" else None
    for state in states:
        checker.move_to(state, every_update, shuffle)
        if strategy == "state":
            checker.flush()
            checker.resend_all()
    checker.flush()
    return checker


def forwards(states: Sequence[State]) -> list[State]:
    return [*states, EMPTY]


def backwards(states: Sequence[State]) -> list[State]:
    return [*reversed(states), EMPTY]


def individually(states: Sequence[State]) -> list[State]:
    return [s for state in states for s in (state, EMPTY)]


def permutations(seed: int) -> Expander:
    def expand(states: Sequence[State]) -> list[State]:
        shuffled = list(states)
        random.Random(seed).shuffle(shuffled)
        return [*shuffled, EMPTY]

    expand.__name__ = f"permutation_{seed}"
    return expand


EXPANDERS: list[Expander] = [
    forwards,
    backwards,
    individually,
    permutations(1),
    permutations(2),
    permutations(3),
]
STRATEGIES = ["update", "state", "random", "end"]
