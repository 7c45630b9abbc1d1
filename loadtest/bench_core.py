"""Benchmark of the incremental compiler graph (`policycore.calc.graph`) on a synthetic cluster.

Owns `Shape` and `generate` (a seeded, realistic cluster: namespaces with team/env labels, pods of
a few apps per namespace spread over the nodes with named ports; Kubernetes NetworkPolicies per
app — same-namespace peers, namespaceSelector peers, ipBlocks, named and numeric ports — plus a
default deny per namespace; Calico NetworkPolicies and GlobalNetworkPolicies in three tiers), the
two edit generators and `main`. A benchmark, not a test: it prints one JSON document.

Measured: cold compile (feed everything, one flush) wall time and peak RSS; then single pod label
changes (a pod switches app) and single policy edits (a port or a peer changes), each followed by
a flush, as p50/p99/max of the graph's time (``on_update`` + ``flush``), wall and CPU, and the
time spent in the garbage collector (``gc``: total, full collections, longest pause) in each phase.

GC: after the cold compile the benchmark calls ``gc.freeze()`` (``--no-gc-freeze`` to skip), and
``--gc-threshold N`` raises the youngest generation's threshold from 700. These model what the
controller does (``iokit.heap.settle_garbage_collector`` after its first compile, and a
freeze after each cold-start step): at this scale one young collection costs 30-130 ms, and with
the default threshold a few of every thousand edits pay for one.

Run: ``.venv/bin/python -m loadtest.bench_core [--pods N ...] [--profile cold|edits] [--gc-threshold N]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from policycore.calc.graph import CalcGraph
from policycore.model import Resource, parse_resource
from policycore.model.kube import KubeNetworkPolicy, Pod
from policycore.model.resources import key_of

CALICO = "projectcalico.org/v3"
ROLES = ("frontend", "backend", "db")
PORTS = {
    "frontend": [("http", 8080, "TCP"), ("metrics", 9090, "TCP")],
    "backend": [("grpc", 9000, "TCP"), ("metrics", 9090, "TCP")],
    "db": [("sql", 5432, "TCP"), ("metrics", 9090, "TCP")],
}
SERVICE_PORT = {"frontend": "http", "backend": "grpc", "db": "sql"}
TIERS = (("security", 100, "Deny"), ("platform", 200, "Pass"))


@dataclass(frozen=True)
class Shape:
    pods: int = 100_000
    policies: int = 10_000
    namespaces: int = 1_000
    nodes: int = 1_000
    apps: int = 10
    calico_share: float = 0.07
    global_share: float = 0.03
    teams: int = 50


def _ns(i: int) -> str:
    return f"ns-{i:04d}"


def _ip(j: int) -> str:
    j += 1
    return f"10.{j >> 16 & 255}.{j >> 8 & 255}.{j & 255}"


def _pod_doc(ns: str, name: str, app: int, node: str, ip: str) -> dict[str, Any]:
    role = ROLES[app % 3]
    ports = [{"name": n, "containerPort": p, "protocol": proto} for n, p, proto in PORTS[role]]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app": f"app-{app}", "role": role, "version": "v1"},
        },
        "spec": {"nodeName": node, "containers": [{"name": "main", "ports": ports}]},
        "status": {"podIP": ip, "phase": "Running"},
    }


def _k8s_doc(shape: Shape, ns_index: int, app: int, variant: int) -> dict[str, Any]:
    ns = _ns(ns_index)
    peer_app = (app + 1) % shape.apps
    port_name = SERVICE_PORT[ROLES[app % 3]]
    spec: dict[str, Any] = {"podSelector": {"matchLabels": {"app": f"app-{app}"}}}
    if variant == 0:  # same-namespace peer, named port
        peers = [{"podSelector": {"matchLabels": {"app": f"app-{peer_app}"}}}]
        spec["ingress"] = [{"from": peers, "ports": [{"port": port_name}]}]
    elif variant == 1:  # peers of one team's namespaces, numeric ports
        team = {"matchLabels": {"team": f"team-{(ns_index + 1) % shape.teams}"}}
        peers = [{"namespaceSelector": team, "podSelector": {"matchLabels": {"role": "frontend"}}}]
        spec["ingress"] = [{"from": peers, "ports": [{"port": 8080}, {"port": 8443}]}]
    elif variant == 2:  # monitoring from any prod namespace on the metrics port
        peers = [
            {
                "namespaceSelector": {"matchLabels": {"env": "prod"}},
                "podSelector": {"matchLabels": {"app": "app-0"}},
            }
        ]
        spec["ingress"] = [{"from": peers, "ports": [{"port": "metrics"}]}]
    else:  # egress to a peer app and an external block
        spec["policyTypes"] = ["Egress"]
        to_app = [{"podSelector": {"matchLabels": {"app": f"app-{peer_app}"}}}]
        spec["egress"] = [
            {"to": to_app, "ports": [{"port": 5432}]},
            {"to": [{"ipBlock": {"cidr": "172.16.0.0/12", "except": ["172.16.1.0/24"]}}]},
        ]
    meta = {"name": f"allow-app-{app}", "namespace": ns}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta, "spec": spec}


def _calico_doc(shape: Shape, index: int) -> dict[str, Any]:
    ns_index, app = index % shape.namespaces, index // shape.namespaces % shape.apps
    tier = TIERS[index % 2][0]
    ingress = [
        {"action": "Deny", "source": {"notSelector": "has(app)"}},
        {
            "action": "Allow",
            "protocol": "TCP",
            "source": {"selector": "role == 'frontend'"},
            "destination": {"ports": [8080]},
        },
        {"action": "Pass"},
    ]
    meta = {"name": f"guard-{index}", "namespace": _ns(ns_index)}
    spec = {"tier": tier, "order": 10 + index % 7, "selector": f"app == 'app-{app}'", "ingress": ingress}
    return {"apiVersion": CALICO, "kind": "NetworkPolicy", "metadata": meta, "spec": spec}


def _global_doc(shape: Shape, index: int) -> dict[str, Any]:
    team = f"team-{index % shape.teams}"
    role = ROLES[index % 3]
    peer_role = ROLES[(index + 2) % 3]
    ingress = [
        {
            "action": "Allow",
            "protocol": "TCP",
            "source": {"selector": f"role == '{peer_role}'", "namespaceSelector": f"team == '{team}'"},
            "destination": {"ports": [SERVICE_PORT[role]]},
        }
    ]
    egress = [{"action": "Deny", "destination": {"nets": ["169.254.169.254/32"]}}, {"action": "Allow"}]
    spec = {
        "tier": TIERS[index % 2][0] if index % 3 else "default",
        "order": 100 + index,
        "selector": f"role == '{role}'",
        "namespaceSelector": f"team == '{team}'",
        "ingress": ingress,
        "egress": egress,
    }
    return {
        "apiVersion": CALICO,
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": f"team-{index}"},
        "spec": spec,
    }


def generate(shape: Shape, seed: int = 1) -> list[Resource]:
    """The whole synthetic cluster, in the order a datastore list would give it (by kind)."""
    rng = random.Random(seed)
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": CALICO,
            "kind": "Tier",
            "metadata": {"name": n},
            "spec": {"order": o, "defaultAction": a},
        }
        for n, o, a in TIERS
    ]
    docs += [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"node-{i:04d}"}}
        for i in range(shape.nodes)
    ]
    for i in range(shape.namespaces):
        labels = {"team": f"team-{i % shape.teams}", "env": ("prod", "staging", "dev")[i % 3]}
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": _ns(i), "labels": labels}})
    for j in range(shape.pods):
        ns_index, app = j % shape.namespaces, j // shape.namespaces % shape.apps
        node = f"node-{rng.randrange(shape.nodes):04d}"
        docs.append(_pod_doc(_ns(ns_index), f"pod-{j}", app, node, _ip(j)))
    n_global = int(shape.policies * shape.global_share)
    n_calico = int(shape.policies * shape.calico_share)
    n_k8s = shape.policies - n_global - n_calico
    for k in range(n_k8s):
        ns_index, slot = k % shape.namespaces, k // shape.namespaces
        if slot == 0:
            meta = {"name": "default-deny", "namespace": _ns(ns_index)}
            spec = {"podSelector": {}, "policyTypes": ["Ingress"]}
            docs.append(
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": meta,
                    "spec": spec,
                }
            )
        else:
            app = (slot - 1) % shape.apps
            docs.append(_k8s_doc(shape, ns_index, app, (slot - 1 + ns_index) % 4))
    docs += [_calico_doc(shape, i) for i in range(n_calico)]
    docs += [_global_doc(shape, i) for i in range(n_global)]
    resources = [parse_resource(d) for d in docs]
    return list({key_of(r): r for r in resources}.values())


def pod_label_change(pods: list[Pod], shape: Shape, rng: random.Random) -> Pod:
    """One pod switches to another app of its namespace (its role and ports follow)."""
    index = rng.randrange(len(pods))
    pod = pods[index]
    app = (int(pod.metadata.labels["app"].split("-")[1]) + 1 + rng.randrange(shape.apps - 1)) % shape.apps
    ns, name = pod.metadata.namespace or "", pod.metadata.name
    changed = Pod.model_validate(_pod_doc(ns, name, app, pod.spec.node_name or "", pod.status.pod_ip or ""))
    pods[index] = changed
    return changed


def policy_edit(policies: list[KubeNetworkPolicy], rng: random.Random) -> tuple[KubeNetworkPolicy, str]:
    """One Kubernetes policy changes: a port number (``port``), or the app label of its first peer
    (``peer``, which may create a new ip set)."""
    index = rng.randrange(len(policies))
    doc = policies[index].model_dump(by_alias=True, exclude_none=True, mode="json")
    rules = doc["spec"].get("ingress") or doc["spec"].get("egress") or [{}]
    rule = rules[0]
    peers = rule.get("from") or rule.get("to") or []
    selector = peers[0].get("podSelector", {}).get("matchLabels") if peers else None
    kind = "peer" if selector and rng.random() < 0.5 else "port"
    if selector and kind == "peer":
        selector["app"] = f"app-{rng.randrange(10)}"
    else:
        rule["ports"] = [{"port": 1024 + rng.randrange(60000)}]
    if not doc["spec"].get("ingress") and not doc["spec"].get("egress"):
        doc["spec"]["ingress"] = rules
    edited = parse_resource(doc)
    assert isinstance(edited, KubeNetworkPolicy)
    policies[index] = edited
    return edited, kind


def _timed(graph: CalcGraph, updates: Callable[[], tuple[Resource, str]], count: int) -> dict[str, Any]:
    """Time ``on_update`` + ``flush`` of `count` updates; overall and per kind of update.

    Wall time is what the target is about; the process's CPU time over the same span is reported
    too (``cpu_*``), because on a shared, loaded machine wall-time tails include waiting for a core.
    """
    times: dict[str, list[tuple[float, float]]] = {}
    ops = 0
    for _ in range(count):
        value, kind = updates()
        key = key_of(value)
        cpu, start = time.process_time(), time.perf_counter()
        graph.on_update(key, value)
        out = graph.flush()
        times.setdefault(kind, []).append((time.perf_counter() - start, time.process_time() - cpu))
        ops += sum(len(o) for o in out.values())
    result: dict[str, Any] = {
        **_percentiles([t for ts in times.values() for t in ts]),
        "mean_ops": round(ops / count, 1),
    }
    if len(times) > 1:
        result["by_kind"] = {kind: _percentiles(ts) for kind, ts in sorted(times.items())}
    return result


def _percentiles(samples: list[tuple[float, float]]) -> dict[str, float]:
    out: dict[str, float] = {"count": len(samples)}
    for prefix, index in (("", 0), ("cpu_", 1)):
        times = sorted(sample[index] for sample in samples)
        out[f"{prefix}p50_ms"] = round(statistics.median(times) * 1e3, 3)
        out[f"{prefix}p99_ms"] = round(times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3, 3)
        out[f"{prefix}max_ms"] = round(times[-1] * 1e3, 3)
    return out


class _GcClock:
    """Time spent in the garbage collector (``gc.callbacks``), so GC pauses can be told apart."""

    def __init__(self) -> None:
        self._pauses: list[tuple[int, float]] = []
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._pauses.append((info["generation"], time.perf_counter() - self._started))

    def take(self) -> dict[str, Any]:
        """Collections and their pauses since the last call: total seconds, full (generation 2)
        collections, the longest pause in ms."""
        pauses, self._pauses = self._pauses, []
        return {
            "total_s": round(sum(p for _, p in pauses), 3),
            "full_collections": sum(1 for generation, _ in pauses if generation == 2),
            "max_pause_ms": round(max((p for _, p in pauses), default=0.0) * 1e3, 1),
        }

    def stop(self) -> None:
        gc.callbacks.remove(self._callback)


def _rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run(
    shape: Shape, edits: int, seed: int, profile: str | None, freeze: bool, gc_threshold: int | None = None
) -> dict[str, Any]:
    started = time.perf_counter()
    resources = generate(shape, seed)
    generated = time.perf_counter()
    rss_resources = _rss_mib()
    profiler = _profiler(profile == "cold")
    gc.collect()
    graph = CalcGraph()
    gc_clock = _GcClock()
    cpu, start = time.process_time(), time.perf_counter()
    for r in resources:
        graph.on_update(key_of(r), r)
    fed = time.perf_counter()
    out = graph.flush()
    cold_done, cold_cpu = time.perf_counter(), time.process_time() - cpu
    _stop(profiler)
    cold = {
        "feed_s": round(fed - start, 2),
        "flush_s": round(cold_done - fed, 2),
        "total_s": round(cold_done - start, 2),
        "cpu_s": round(cold_cpu, 2),
        "gc": gc_clock.take(),
        "nodes": len(out),
        "ops": sum(len(o) for o in out.values()),
        "rss_peak_mib": _rss_mib(),
        "rss_after_generate_mib": rss_resources,
        **graph.stats(),
    }
    del out
    rng = random.Random(seed + 1)
    pods = [r for r in resources if isinstance(r, Pod)]
    k8s = [r for r in resources if isinstance(r, KubeNetworkPolicy) and r.metadata.name != "default-deny"]
    del resources
    if freeze:  # what a long-running controller should do after its initial sync: no GC pass over it
        gc.collect()
        gc.freeze()
    if gc_threshold is not None:  # fewer, larger young collections: most edits see no GC pause at all
        gc.set_threshold(gc_threshold, *gc.get_threshold()[1:])
    profiler = _profiler(profile == "edits")
    gc_clock.take()
    labels = _timed(graph, lambda: (pod_label_change(pods, shape, rng), "label"), edits)
    labels["gc"] = gc_clock.take()
    edits_out = _timed(graph, lambda: policy_edit(k8s, rng), edits)
    edits_out["gc"] = gc_clock.take()
    gc_clock.stop()
    _stop(profiler)
    return {
        "shape": asdict(shape),
        "generate_s": round(generated - started, 1),
        "gc_frozen_after_cold": freeze,
        "gc_threshold": gc.get_threshold(),
        "cold": cold,
        "pod_label_change": labels,
        "policy_edit": edits_out,
        "rss_peak_mib": _rss_mib(),
    }


def _profiler(enabled: bool) -> Any:
    if not enabled:
        return None
    from pyinstrument import Profiler

    profiler = Profiler()
    profiler.start()
    return profiler


def _stop(profiler: Any) -> None:
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Shape()
    for field in ("pods", "policies", "namespaces", "nodes"):
        parser.add_argument(f"--{field}", type=int, default=getattr(defaults, field))
    parser.add_argument("--edits", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", choices=("cold", "edits"))
    parser.add_argument(
        "--no-gc-freeze", action="store_true", help="do not gc.freeze() after the cold compile"
    )
    parser.add_argument(
        "--gc-threshold",
        type=int,
        help="after the cold compile, collect the youngest generation every N allocations (default 700)",
    )
    args = parser.parse_args()
    shape = Shape(pods=args.pods, policies=args.policies, namespaces=args.namespaces, nodes=args.nodes)
    result = run(shape, args.edits, args.seed, args.profile, not args.no_gc_freeze, args.gc_threshold)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
