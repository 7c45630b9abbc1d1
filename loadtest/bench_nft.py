"""Benchmark of the nftables data plane in a private node namespace (a benchmark, not a test).

Owns the synthetic node states and the timings: a node holding ``--rules`` policy rules and
``--members`` ip-set members takes ``--reps`` pod changes, each one `apply` = one transaction:

* ``local pod``: a pod starts on this node: its IP joins 3 ip sets and its endpoint (2 chains and
  2 verdict-map entries) appears; the next repetition removes it again;
* ``remote pod``: a pod elsewhere joins 3 ip sets (element adds only).

Each pod change reports how its transaction was sent (``paths``: the netlink fast path or
libnftables). Then a node with ``--big-rules`` rules measures a full reload (the first `apply`:
replace the table, with the CPU time of render, of nft's userspace and of the kernel, which runs
in this process's system time), `resync()` with nothing changed, a forced full
`resync(full=True)` (list, parse, compare) and the repair of one flushed chain. Prints p50/p99,
the load average and a JSON line. Run as root::

    .venv/bin/python -m loadtest.bench_nft [--rules 10000 --members 100000 --reps 200 --big-rules 50000]
        [--no-fast-path]

It does not touch the root namespace: the process enters ``kbench-<pid>`` (as an agent started
with ``ip netns exec`` runs, so no call hops threads), and removes it at the end.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import statistics
import subprocess
import time
from collections.abc import Callable

from pyroute2 import netns

from node_agent.dataplane.nft_driver import NftablesDataPlane
from node_agent.dataplane.nft_model import create_script, update_script
from node_agent.dataplane.nft_render import render
from node_agent.dataplane.nft_rules import endpoint_chain
from policycore.ir import EndpointProgram, IpSet, NodeState, PolicyProgram, PortRange, Rule, TierProgram
from policycore.naming import iface_name

RULES_PER_POLICY = 20
MEMBERS_PER_SET = 500
ENDPOINTS = 100
POLICIES_PER_ENDPOINT = 5


def _ip(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def node_state(rules: int, members: int) -> NodeState:
    """``rules`` ingress rules in policies of 20, ``members`` IPs in sets of 500, 100 endpoints."""
    sets = max(1, members // MEMBERS_PER_SET)
    state = NodeState()
    for s in range(sets):
        ids = range(s * MEMBERS_PER_SET, (s + 1) * MEMBERS_PER_SET)
        state.ipsets[f"s:{s}"] = IpSet(f"s:{s}", "ip", frozenset(_ip(i) for i in ids))
    policies = max(1, rules // RULES_PER_POLICY)
    for p in range(policies):
        pid = f"default/knp/ns{p % 50}/policy-{p}"
        state.policies[pid] = PolicyProgram(
            pid,
            ingress=tuple(
                Rule(
                    "allow",
                    f"{pid}/ingress/{r}",
                    protocol=6,
                    src_ipsets=(f"s:{(p * 7 + r) % sets}",),
                    dst_ports=(PortRange(1000 + r, 1000 + r),),
                )
                for r in range(RULES_PER_POLICY)
            ),
        )
    names = sorted(state.policies)
    for e in range(ENDPOINTS):
        state.endpoints[f"ns/pod-{e}"] = _endpoint(e, names)
    return state


def _endpoint(e: int, policy_ids: list[str]) -> EndpointProgram:
    chosen = tuple(
        policy_ids[(e * POLICIES_PER_ENDPOINT + k) % len(policy_ids)] for k in range(POLICIES_PER_ENDPOINT)
    )
    return EndpointProgram(
        f"ns/pod-{e}",
        iface_name("ns", f"pod-{e}"),
        (f"198.18.{e >> 6}.{e & 63}",),
        (TierProgram("default", chosen),),
    )


def _with_pod(state: NodeState, rep: int, local: bool) -> NodeState:
    new = state.copy()
    ip = f"10.250.{rep >> 8}.{rep & 255}"
    for s in ("s:0", "s:1", "s:2"):
        old = new.ipsets[s]
        new.ipsets[s] = IpSet(s, "ip", old.members | {ip})
    if local:
        endpoint = _endpoint(10_000 + rep, sorted(new.policies))
        new.endpoints[endpoint.key] = endpoint
    return new


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1e3, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3, 3),
        "max_ms": round(ordered[-1] * 1e3, 3),
    }


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def pod_changes(plane: NftablesDataPlane, base: NodeState, reps: int, local: bool) -> dict[str, object]:
    """Alternate "pod appears" / "pod goes" applies; time each apply and its pure render part."""
    applies, renders, last = [], [], plane._rendered
    paths: collections.Counter[str] = collections.Counter()
    for rep in range(reps):
        target = _with_pod(base, rep, local) if rep % 2 == 0 else base
        start = time.perf_counter()
        moved = render(target, last)
        update_script(last.model, moved.model, moved.moves)
        renders.append(time.perf_counter() - start)
        elapsed, _ = _timed(lambda t=target: plane.apply(t))  # type: ignore[misc]
        applies.append(elapsed)
        paths[plane.last_path] += 1
        last = plane._rendered
    transactions = [a - r for a, r in zip(applies, renders, strict=True)]
    return {
        "apply": _stats(applies),
        "render": _stats(renders),
        "transaction": _stats(transactions),
        "paths": dict(paths),
    }


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def big_table(plane: NftablesDataPlane, rules: int, members: int, node: str) -> dict[str, object]:
    state = node_state(rules, members)
    cpu_before = _cpu()
    start = time.perf_counter()
    rendered = render(state)
    render_s = time.perf_counter() - start
    script_s, _ = _timed(lambda: create_script(rendered.model))
    cpu_rendered = _cpu()
    reload_s, _ = _timed(lambda: plane.apply(state))
    cpu_after = _cpu()
    render_cpu = cpu_rendered[0] - cpu_before[0]
    apply_user, apply_sys = cpu_after[0] - cpu_rendered[0], cpu_after[1] - cpu_rendered[1]
    quick_s, quick = _timed(plane.resync)
    full_s, full = _timed(lambda: plane.resync(full=True))
    chain = endpoint_chain(state.endpoints["ns/pod-0"].iface, "ingress")
    subprocess.run(["ip", "netns", "exec", node, "nft", "flush", "chain", "ip", "kaliko", chain], check=True)
    repair_s, repaired = _timed(plane.resync)
    return {
        "rules": rules,
        "members": members,
        "reload_s": round(reload_s, 3),
        "reload_cpu": {
            "render_s": round(render_s, 3),
            "script_s": round(script_s, 3),
            "render_user_s": round(render_cpu, 3),
            "nft_user_s": round(max(0.0, apply_user - render_cpu), 3),
            "kernel_s": round(apply_sys, 3),
        },
        "resync_unchanged_ms": round(quick_s * 1e3, 3),
        "resync_full_s": round(full_s, 3),
        "resync_full_repairs": full,
        "resync_unchanged_repairs": quick,
        "repair_one_flushed_chain_s": round(repair_s, 3),
        "repaired": repaired,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--big-rules", type=int, default=50_000)
    parser.add_argument(
        "--no-fast-path", action="store_true", help="send every transaction through libnftables"
    )
    args = parser.parse_args()
    node = f"kbench-{os.getpid()}"
    netns.create(node)
    root = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        netns.setns(node, flags=0)  # like an agent started with `ip netns exec`: no thread hop
        plane = NftablesDataPlane(None, fast_path=not args.no_fast_path)
        base = node_state(args.rules, args.members)
        load_s, _ = _timed(lambda: plane.apply(base))
        report: dict[str, object] = {
            "rules": args.rules,
            "members": args.members,
            "fast_path": not args.no_fast_path,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "initial_load_s": round(load_s, 3),
        }
        report["local_pod"] = pod_changes(plane, base, args.reps, local=True)
        report["remote_pod"] = pod_changes(plane, base, args.reps, local=False)
        report["big"] = big_table(plane, args.big_rules, args.members, node)
        plane.close()
    finally:
        netns.setns(root)
        os.close(root)
        netns.remove(node)
    for key in ("local_pod", "remote_pod"):
        part = report[key]
        assert isinstance(part, dict)
        print(
            f"{key:10s} apply {part['apply']}  (render {part['render']}, transaction {part['transaction']})"
        )
    print(f"big table  {report['big']}")
    print(f"load average at start {report['load_average']}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
