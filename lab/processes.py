"""Background processes of a lab: spawn detached, record, check, stop (SIGTERM, wait, SIGKILL).

Owns `ManagedProcess` (one daemonised child: its argv, pid, log file and the ports it was given,
JSON-serialisable so a later ``kalikoctl lab down`` in another shell can find it) and
`ProcessSet` (the processes of one lab, in start order). Each child runs in its own session
(``start_new_session``), so signals go to its whole process group and it outlives the shell that
started it; stdout and stderr go to its log file. Readiness is polled over HTTP (`wait_ready`:
``GET /readiness`` answers 200) with the child's death reported at once, naming its log. It does
not decide what to start (`lab.cluster`) and never signals a pid it did not start: a recorded
pid counts as ours only while ``/proc/<pid>/cmdline`` still matches the recorded argv.

Invariants: `ProcessSet.stop` stops children in reverse start order and returns only when each is
gone; stopping a dead or recycled pid is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STOP_TIMEOUT = 10.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ProcessFailed(RuntimeError):
    """A child exited, or did not become ready in time; the message ends with its log's tail."""


def venv_bin(name: str) -> str:
    """``name`` from the project's .venv/bin (else beside the running interpreter)."""
    candidate = Path(__file__).resolve().parents[1] / ".venv" / "bin" / name
    return str(candidate) if candidate.exists() else str(Path(sys.executable).with_name(name))


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS's pick for port 0)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: str | Path, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    log: str
    pid: int = 0
    health_port: int = 0
    ports: dict[str, int] = field(default_factory=dict)

    def exited(self) -> bool:
        """The pid is gone or a zombie (for a child just started: no recycling to fear yet)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return True
        return stat.rsplit(")", 1)[-1].split()[0] == "Z"

    def alive(self) -> bool:
        """Running, and still the process we started (not a recycled pid)."""
        if self.pid <= 0 or self.exited():
            return False
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return _same_command([part.decode(errors="replace") for part in cmdline if part], self.argv)

    def _probe(self, path: str) -> bool:
        if not self.health_port:
            return False
        try:
            with _NO_PROXY.open(f"http://127.0.0.1:{self.health_port}{path}", timeout=2.0) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def ready(self) -> bool:
        """``GET /readiness`` on its health port answers 200."""
        return self._probe("/readiness")

    def live(self) -> bool:
        """``GET /liveness`` on its health port answers 200."""
        return self._probe("/liveness")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the process group, wait up to ``timeout``, then SIGKILL it; return once it is gone.

        "Gone" is `exited`, not merely "no longer `alive`": an exiting process loses its cmdline
        well before it is a zombie (the kernel still tears down its sockets and namespaces), and
        a caller that removes what the process held must not race that. SIGKILL goes only to a
        pid that still runs our argv; a pid that stays without it (recycled) is given up on.
        """
        if not self.alive():
            return
        _signal_group(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        killed = False
        while not self.exited():
            now = time.monotonic()
            if not killed and now > deadline and self.alive():
                _signal_group(self.pid, signal.SIGKILL)
                killed = True
            elif now > deadline + timeout and not self.alive():
                break
            _reap(self.pid)
            time.sleep(0.02)
        _reap(self.pid)


def _same_command(running: list[str], argv: list[str]) -> bool:
    """``running`` is ``argv`` as exec'd: a script's interpreter may come first (``python script``)."""
    if len(running) < len(argv) or running[len(running) - len(argv) + 1 :] != argv[1:]:
        return False
    head = running[: len(running) - len(argv) + 1]
    return any(Path(part).name == Path(argv[0]).name for part in head)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # the child leads its own session, so its group id is its pid
    except ProcessLookupError:
        return
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap(pid: int) -> None:
    """Collect the exit status if the child is ours (started by this very process)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


class ProcessSet:
    """The processes of one lab, in start order."""

    def __init__(self, log_dir: Path, processes: Iterable[ManagedProcess] = ()) -> None:
        self.log_dir = log_dir
        self.processes: list[ManagedProcess] = list(processes)

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        health_port: int = 0,
        ports: dict[str, int] | None = None,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> ManagedProcess:
        """Start ``argv`` detached (own session, no stdin), output appended to ``<log_dir>/<name>.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        process = ManagedProcess(name, list(argv), str(log), health_port=health_port, ports=dict(ports or {}))
        with open(log, "ab") as out:
            child = subprocess.Popen(
                process.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
                cwd=cwd,
            )
        process.pid = child.pid
        self.processes.append(process)
        return process

    def get(self, name: str) -> ManagedProcess:
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(f"no process named {name!r} in this lab")

    def alive(self) -> list[ManagedProcess]:
        return [p for p in self.processes if p.alive()]

    def wait_ready(self, processes: Iterable[ManagedProcess], timeout: float) -> None:
        """Until each answers 200 on /readiness; `ProcessFailed` if one exits or time runs out."""
        waiting = list(processes)
        deadline = time.monotonic() + timeout
        while waiting:
            for process in list(waiting):
                if process.ready():
                    waiting.remove(process)
                elif process.exited():
                    raise ProcessFailed(
                        f"{process.name} exited during start-up; last lines of {process.log}:\n"
                        + log_tail(process.log)
                    )
            if waiting and time.monotonic() > deadline:
                names = ", ".join(p.name for p in waiting)
                first = waiting[0]
                raise ProcessFailed(
                    f"not ready within {timeout:.0f}s: {names}; last lines of {first.log}:\n"
                    + log_tail(first.log)
                )
            if waiting:
                time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT) -> list[str]:
        """Stop every process, newest first; returns the names of those that were running."""
        stopped = []
        for process in reversed(self.processes):
            if process.alive():
                process.stop(timeout)
                stopped.append(process.name)
        return stopped

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(p) for p in self.processes]

    @classmethod
    def from_json(cls, log_dir: Path, data: Iterable[dict[str, Any]]) -> ProcessSet:
        return cls(log_dir, (ManagedProcess(**item) for item in data))


def spawn_etcd(processes: ProcessSet, data_dir: Path, name: str = "etcd") -> tuple[ManagedProcess, str]:
    """A private single-member etcd on free loopback ports; returns it and its client endpoint.

    For tests and labs that must not share the leader and epoch keys of the shared etcd.
    """
    binary = shutil.which("etcd")
    if binary is None:
        raise ProcessFailed("the etcd binary is not installed (apt-get install etcd-server)")
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    argv = [
        binary,
        f"--name={name}",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster={name}={peer}",
    ]
    return processes.spawn(name, argv), client.removeprefix("http://")


def etcd_healthy(endpoint: str) -> bool:
    try:
        with _NO_PROXY.open(f"http://{endpoint}/health", timeout=1.0) as response:
            return b'"health":"true"' in response.read()
    except OSError:
        return False
