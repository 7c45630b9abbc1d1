"""CalcGraph's API contract: teardown, no-ops, bad input, invalid policies, dry runs, proportional work.

Proves: deleting everything emits only removals, endpoints before policies before sets, and
leaves every node empty; re-sent values and Services emit nothing; a value under the wrong key
raises before anything changes; a policy that does not normalise is absent (as in the oracle)
and counted; `dry_run` reports exactly the oracle's difference the changes make on top of what is
pending and leaves the pending flush unchanged; on a generated cluster, a pod label change
evaluates few selectors and reaches only its node and the nodes using the sets it entered or
left, and a port edit re-sends one program to exactly the nodes where the policy is active
without evaluating any selector.
"""

from __future__ import annotations

import pytest
from graph_replay import Checker
from graph_states import ALLOW_CLIENT, BASE, SCENARIO, cnp, pod

from loadtest.bench_core import Shape, generate
from policycore.calc.graph import CalcGraph
from policycore.calc.oracle import compile_all
from policycore.diff import EndpointRemove, IpSetDelta, IpSetRemove, PolicyRemove, PolicyUpdate, diff_states
from policycore.ir import NodeState
from policycore.model import parse_resource
from policycore.model.kube import KubeNetworkPolicy, Pod
from policycore.model.resources import ResourceKey, key_of

RANK = {EndpointRemove: 0, PolicyRemove: 1, IpSetRemove: 2}


def fed(resources: list) -> Checker:
    checker = Checker()
    for r in resources:
        checker.update(key_of(r), r)
    checker.flush()
    return checker


def test_teardown_emits_only_ordered_removals_and_empties_every_node() -> None:
    checker = fed(SCENARIO[4])
    assert all(checker.states[n].policies for n in ("n1", "n2", "n3"))
    for key in sorted(checker.current):
        checker.update(key, None)
    out = checker.flush()
    assert set(out) == {"n1", "n2", "n3"}
    for ops in out.values():
        ranks = [RANK[type(op)] for op in ops]
        assert ranks == sorted(ranks)
    assert all(state == NodeState() for state in checker.states.values())
    assert checker.graph.nodes() == frozenset()


def test_repeated_values_and_services_emit_nothing() -> None:
    checker = fed([*BASE, ALLOW_CLIENT])
    checker.resend_all()
    service = parse_resource(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "prod"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        }
    )
    checker.graph.on_update(key_of(service), service)
    assert checker.flush() == {}


def test_a_value_under_the_wrong_key_changes_nothing() -> None:
    checker = fed(BASE)
    web = BASE[4]
    with pytest.raises(ValueError, match="own key is Pod prod/web-1"):
        checker.graph.on_update(ResourceKey("Pod", "prod", "web-2"), web)
    with pytest.raises(ValueError, match="own key"):
        checker.graph.dry_run([(key_of(ALLOW_CLIENT), ALLOW_CLIENT), (ResourceKey("Pod", "dev", "x"), web)])
    assert checker.flush() == {}


def test_a_policy_that_does_not_normalise_is_absent_and_counted() -> None:
    good = cnp("prod", "odd", selector="app == 'web'", ingress=[{"action": "Allow"}])
    broken = good.model_copy(update={"spec": good.spec.model_copy(update={"selector": "app =="})})
    checker = fed([*BASE, good])
    assert checker.graph.stats()["rejected"] == 0
    assert checker.graph.dry_run([(key_of(broken), broken)]) and checker.graph.stats()["rejected"] == 0
    checker.update(key_of(broken), broken)
    out = checker.flush()  # the checker asserts equality with the oracle, which drops it too
    assert any(isinstance(op, PolicyRemove) for ops in out.values() for op in ops)
    assert checker.graph.stats()["rejected"] == 1


def test_dry_run_is_the_changes_alone_and_keeps_pending_state() -> None:
    base, pending = [*BASE, ALLOW_CLIENT], SCENARIO[2][len(BASE) + 1 :]
    graph, twin = CalcGraph(), CalcGraph()
    for g in (graph, twin):
        for r in base:
            g.on_update(key_of(r), r)
        g.flush()
        for r in pending:
            g.on_update(key_of(r), r)
    moved = pod("prod", "web-1", on="n3", ip="198.18.1.7", labels={"app": "web"})
    changes = [(key_of(moved), moved), (key_of(ALLOW_CLIENT), None), (key_of(BASE[0]), None)]
    before = compile_all([*base, *pending])
    after_resources = {key_of(r): r for r in [*base, *pending]}
    for key, value in changes:
        after_resources.pop(key) if value is None else after_resources.__setitem__(key, value)
    after = compile_all(after_resources.values())
    expected = {
        node: ops
        for node in sorted(before.keys() | after.keys())
        if (ops := diff_states(before.get(node, NodeState()), after.get(node, NodeState())))
    }
    assert graph.dry_run(changes) == expected
    assert graph.flush() == twin.flush()
    assert graph.nodes() == twin.nodes()


SMALL = Shape(pods=1_000, policies=100, namespaces=10, nodes=10)


@pytest.fixture(scope="module")
def generated() -> list:
    return generate(SMALL, seed=3)


def test_generated_cluster_compiles_like_the_oracle(generated: list) -> None:
    checker = fed(generated)
    assert checker.graph.stats()["ipsets"] > 50
    assert all(state.policies and state.ipsets for state in checker.states.values())


def test_a_pod_label_change_reaches_only_the_nodes_that_need_it(generated: list) -> None:
    graph = CalcGraph()
    for r in generated:
        graph.on_update(key_of(r), r)
    graph.flush()
    pods = [r for r in generated if isinstance(r, Pod)]
    fanned_out = 0
    for victim in pods[::97]:
        labels = {
            **victim.metadata.labels,
            "app": "app-9" if victim.metadata.labels["app"] != "app-9" else "app-1",
        }
        changed = victim.model_copy(
            update={"metadata": victim.metadata.model_copy(update={"labels": labels})}
        )
        before = graph.stats()["evaluations"]
        graph.on_update(key_of(changed), changed)
        assert graph.stats()["evaluations"] - before < 30  # of ~170 selectors
        out = graph.flush()
        changed_sets = {op.set_id for ops in out.values() for op in ops if isinstance(op, IpSetDelta)}
        users = set().union(*(graph.nodes_with_ipset(s) for s in changed_sets))
        assert set(out) <= users | {victim.spec.node_name}
        assert users <= set(out)
        for node, ops in out.items():
            if node != victim.spec.node_name:
                assert all(isinstance(op, IpSetDelta) for op in ops)
                fanned_out += 1
    assert fanned_out > 10


def test_a_port_edit_reaches_exactly_the_nodes_where_the_policy_is_active(generated: list) -> None:
    graph = CalcGraph()
    for r in generated:
        graph.on_update(key_of(r), r)
    graph.flush()
    policies = [
        r
        for r in generated
        if isinstance(r, KubeNetworkPolicy)
        and r.spec.ingress
        and all(isinstance(p.port, int) for p in r.spec.ingress[0].ports)
    ]
    assert len(policies) >= 10
    for policy in policies[:20]:
        doc = policy.model_dump(by_alias=True, exclude_none=True, mode="json")
        doc["spec"]["ingress"][0]["ports"] = [{"port": 4242}]
        edited = parse_resource(doc)
        before = graph.stats()["evaluations"]
        graph.on_update(key_of(edited), edited)
        out = graph.flush()
        pid = f"default/KubernetesNetworkPolicy/{policy.metadata.namespace}/{policy.metadata.name}"
        assert set(out) == graph.nodes_with_policy(pid) != frozenset()
        assert graph.stats()["evaluations"] == before  # same selectors: the label index is not consulted
        for ops in out.values():
            assert len(ops) == 1 and isinstance(ops[0], PolicyUpdate) and ops[0].program.policy_id == pid
