"""Kubernetes netpol conformance on the live lab: upstream's truth tables, probed for real.

Each case of `live_conformance_cases` (the policies and expectations of the upstream e2e suite,
TCP and UDP, some in several steps) is applied through the whole pipeline (admin API →
controller → bus → agents → nftables in the node namespaces) to one lab holding the nine-pod
model, and every ordered pair of the case's pods is probed with a real connection from inside the
source pod. The live matrix must equal upstream's expectation **and** what ``kalikoctl reach``
computes offline from the same manifests (namespaces, the pods as the lab registered them, the
policies). Between cases the policies are deleted again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_conformance_cases import CASES, LiveCase, Probe, model_documents
from live_lab_support import kalikoctl, start_lab, write_manifests

from lab.live_lab import LiveLab
from wire.gen.kaliko.v1 import admin_pb2 as pb

pytestmark = [pytest.mark.fv, pytest.mark.netns]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLab]:
    for live in start_lab(tmp_path_factory.mktemp("conformance")):
        live.apply(model_documents())
        yield live


def registered(lab: LiveLab, kind: str) -> list[dict[str, Any]]:
    return [json.loads(d) for d in lab.admin("List", pb.ListRequest(kind=kind)).documents_json]


def live_matrix(lab: LiveLab, pods: tuple[str, ...], probe: Probe) -> dict[tuple[str, str], bool]:
    wanted = [(a, b, probe.port, probe.protocol) for a in pods for b in pods if a != b]
    return {(e.source, e.target): e.allowed for e in lab.probe_edges(wanted)}


def reach_matrix(
    lab: LiveLab, manifests: str, pods: tuple[str, ...], probe: Probe
) -> dict[tuple[str, str], bool]:
    result = kalikoctl(
        lab, "reach", "-f", manifests, "--port", str(probe.port), "--protocol", probe.protocol, "-o", "json",
        server=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    allowed = json.loads(result.stdout)["allowed"]
    return {(a, b): allowed[a][b] for a in pods for b in pods if a != b}


def table(pods: tuple[str, ...], matrix: dict[tuple[str, str], bool]) -> str:
    rows = [" " * 5 + " ".join(f"{p:>4}" for p in pods)]
    for a in pods:
        cells = ["   -" if a == b else ("   ." if matrix[(a, b)] else "   X") for b in pods]
        rows.append(f"{a:>4} " + " ".join(cells))
    return "\n".join(rows)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_live_verdicts_are_upstreams_and_reachs(lab: LiveLab, case: LiveCase, tmp_path: Path) -> None:
    applied: dict[str, dict[str, Any]] = {}
    try:
        for number, step in enumerate(case.steps):
            wanted = {p["metadata"]["name"]: p for p in step.policies}
            gone = [k for k in applied if k not in wanted]
            if gone:
                lab.delete(
                    [("KubernetesNetworkPolicy", applied[k]["metadata"]["namespace"], k) for k in gone]
                )
            if wanted:
                lab.apply(list(wanted.values()))
            applied = wanted
            docs = [*registered(lab, "Namespace"), *registered(lab, "Pod"), *wanted.values()]
            manifests = write_manifests(tmp_path / f"step-{number}.yaml", *docs)
            for probe in step.probes:
                started = time.monotonic()
                live = live_matrix(lab, case.pods, probe)
                seconds = time.monotonic() - started
                expected = {pair: probe.expected.expected[pair] for pair in live}
                where = f"{case.name} step {number} {probe.protocol}/{probe.port}"
                assert live == expected, (
                    f"{where}: live\n{table(case.pods, live)}\nexpected\n{table(case.pods, expected)}"
                )
                assert reach_matrix(lab, manifests, case.pods, probe) == live, f"{where}: reach differs"
                print(f"{where}: {len(live)} pairs probed in {seconds:.2f}s")
    finally:
        if applied:
            lab.delete(
                [("KubernetesNetworkPolicy", p["metadata"]["namespace"], k) for k, p in applied.items()]
            )
