"""`PodManager.restart_crashed`: a started pod whose process died is restarted after a back-off that
doubles from 0.5 s to 8 s while it keeps crashing and starts over once a run lasted 10 s; pods never
started or stopped on purpose are left alone. Processes are fakes; the clock is an argument."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.pods import LabPod, PodManager
from lab.topology import Lab, PodInfo


class FakeProcess:
    def __init__(self) -> None:
        self.running = True
        self.log = "fake.log"
        self.pid = 1

    def alive(self) -> bool:
        return self.running


CLOCK = {"now": 0.0}
"""When the fake `_spawn` says a process started."""


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PodManager:
    pods = PodManager(Lab("unit"), tmp_path)
    CLOCK["now"] = 0.0

    def spawn(pod: LabPod) -> None:
        pod.process = FakeProcess()  # type: ignore[assignment]
        pod.started_at = CLOCK["now"]
        pod.restart_at = None

    monkeypatch.setattr(pods, "_spawn", spawn)
    info = PodInfo("ns", "web", "node-1", "unit-pod-ns-web", "198.18.0.1", "kal0")
    for key in ("ns/web", "ns/idle"):
        pods.pods[key] = LabPod(info, "kaliko/probe", (), (), "f")
    return pods


def crash_and_restart(pods: PodManager, at: float) -> float:
    """Crash ns/web at ``at``; return the back-off after which it was restarted."""
    pod = pods.pods["ns/web"]
    assert pod.process is not None
    pod.process.running = False  # type: ignore[attr-defined]
    assert pods.restart_crashed(at) == []
    waited = pod.restart_at - at if pod.restart_at is not None else 0.0
    assert pods.restart_crashed(at + waited - 0.01) == []
    CLOCK["now"] = at + waited
    assert pods.restart_crashed(at + waited) == ["ns/web"]
    return round(waited, 3)


def test_back_off_doubles_while_crashing_and_resets_after_a_long_run(manager: PodManager) -> None:
    manager._spawn(manager.pods["ns/web"])
    backoffs = []
    now = 0.0
    for _ in range(6):
        now += 1.0  # each run lasts about a second
        backoffs.append(crash_and_restart(manager, now))
        now += backoffs[-1]
    assert backoffs == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert crash_and_restart(manager, now + 30.0) == 0.5  # ran 30 s: a fresh start
    assert manager.pods["ns/web"].restarts == 7


def test_pods_never_started_or_stopped_on_purpose_are_not_restarted(manager: PodManager) -> None:
    assert manager.pods["ns/idle"].process is None
    assert manager.restart_crashed(100.0) == []
    assert manager.pods["ns/idle"].restarts == 0
