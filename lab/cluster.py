"""Local lab clusters in the background: a `ClusterSpec` in, daemonised processes and a state file out.

Owns what ``kalikoctl lab up/down/status`` do: choosing the backend's `Launcher`, starting its
processes (`lab.processes`), waiting until every node is ready, and the state file
``.run/lab/state.json`` (spec, admin address, every process with its pid, ports and log) that a
later ``lab down`` or ``lab status`` — in another shell — works from.

Backends (``LAUNCHERS``; another data plane adds a `Launcher` subclass and registers it):

* ``embedded``: one process, ``python -m lab.embedded_process`` (`lab.embedded.EmbeddedCluster`: controller
  and agents on the in-memory twins), serving NodeSync and the admin API on ``spec.listen``.
* ``services``: the real services (``deploy/services/services.sh up`` when they do not answer),
  then ``kaliko-controller`` and one ``kaliko-agent --node node-i`` per node as separate
  processes; the nodes are registered as Node resources through the admin API (the job a
  kubelet does), so a new controller epoch reaches each of them, and removed again on ``down``.
  Every process gets ``--cluster`` (`ClusterSpec.cluster`: given, else `run_dir_name`: ``kaliko``
  for the default run directory, ``k<8 hex digits of sha1(resolved run directory)>`` for any
  other), so labs with different run directories share the services without seeing each other's
  keys or topics; ``up`` refuses at once when another controller already leads the lab's cluster
  on its etcd (`lab.cluster_leader`).

Invariants: the state file is written before anything is waited on, so a failed ``up`` can always
be cleaned by ``down``; ``up`` refuses while a recorded process still runs and silently clears a
state file whose processes are all gone; ``down`` stops only recorded processes (newest first).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import grpc

from iokit.cluster_name import DEFAULT_CLUSTER, InvalidClusterName, check_cluster_name
from lab.cluster_leader import ClusterTaken, EtcdUnreadable, refuse_if_led
from lab.embedded import node_document
from lab.processes import ManagedProcess, ProcessFailed, ProcessSet, free_port, port_open, venv_bin
from wire.gen.kaliko.v1 import admin_pb2 as admin_pb
from wire.gen.kaliko.v1 import admin_pb2_grpc as admin_grpc

REPO = Path(__file__).resolve().parents[1]
RUN_DIR = REPO / ".run" / "lab"
SERVICES_SCRIPT = REPO / "deploy" / "services" / "services.sh"


class LabError(RuntimeError):
    """A lab could not be started, found or stopped; the message says why and where to look."""


def run_dir_name(run_dir: str | Path) -> str:
    """``kaliko`` for the default run directory, else ``k`` + 8 hex digits of its path's sha1: the
    lab's default cluster name, and the prefix of its network namespaces (`lab.nft_launchers`)."""
    resolved = Path(run_dir).resolve()
    if resolved == RUN_DIR.resolve():
        return DEFAULT_CLUSTER
    return "k" + hashlib.sha1(str(resolved).encode()).hexdigest()[:8]


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise LabError(f"address {address!r}: expected HOST:PORT")
    return host, int(port)


@dataclass
class ClusterSpec:
    nodes: int = 3
    backend: str = "embedded"
    dataplane: str = "memory"
    listen: str = "127.0.0.1:50051"
    etcd: str = "127.0.0.1:2379"
    kafka: str = "127.0.0.1:9092"
    mqtt: str = "127.0.0.1:1883"
    timeout: float = 120.0
    run_dir: str = str(RUN_DIR)
    node_prefix: str = "node"
    """Nodes are <node_prefix>-1..N (labs of different clusters may use the same names)."""
    cluster: str = ""
    """The Kaliko cluster name (``--cluster``); empty: derived from ``run_dir`` (`run_dir_name`)."""

    def __post_init__(self) -> None:
        if not self.cluster:
            self.cluster = run_dir_name(self.run_dir)
        try:
            check_cluster_name(self.cluster)
        except InvalidClusterName as err:
            raise LabError(f"--cluster: {err}") from None

    @property
    def node_names(self) -> list[str]:
        return [f"{self.node_prefix}-{i}" for i in range(1, self.nodes + 1)]

    @property
    def state_file(self) -> Path:
        return Path(self.run_dir) / "state.json"

    @property
    def log_dir(self) -> Path:
        return Path(self.run_dir) / "logs"


@dataclass
class LabState:
    spec: ClusterSpec
    processes: ProcessSet
    admin: str
    started_at: float = field(default_factory=time.time)
    ready_seconds: float | None = None
    registered_nodes: list[str] = field(default_factory=list)

    def save(self) -> None:
        path = self.spec.state_file
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "spec": asdict(self.spec),
            "admin": self.admin,
            "started_at": self.started_at,
            "ready_seconds": self.ready_seconds,
            "registered_nodes": self.registered_nodes,
            "processes": self.processes.to_json(),
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(document, indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, run_dir: str | Path = RUN_DIR) -> LabState | None:
        path = Path(run_dir) / "state.json"
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise LabError(f"{path}: unreadable lab state ({err}); remove it by hand") from err
        spec = ClusterSpec(**document["spec"])
        return cls(
            spec=spec,
            processes=ProcessSet.from_json(spec.log_dir, document["processes"]),
            admin=document["admin"],
            started_at=document["started_at"],
            ready_seconds=document.get("ready_seconds"),
            registered_nodes=list(document.get("registered_nodes", [])),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.spec.backend,
            "dataplane": self.spec.dataplane,
            "cluster": self.spec.cluster,
            "nodes": self.spec.node_names,
            "admin": self.admin,
            "state_file": str(self.spec.state_file),
            "log_dir": str(self.spec.log_dir),
            "ready_seconds": self.ready_seconds,
            "processes": [
                {"name": p.name, "pid": p.pid, "alive": p.alive(), "ready": p.ready(), "log": p.log}
                for p in self.processes.processes
            ],
        }


class Launcher:
    """Starts one backend's processes into a `LabState`; subclasses add data planes or backends."""

    backend: ClassVar[str] = ""

    def __init__(self, state: LabState) -> None:
        self.state = state
        self.spec = state.spec
        self.processes = state.processes

    def prepare(self) -> None:
        """Before any process starts (services, namespaces, ...)."""

    def start(self) -> list[ManagedProcess]:
        """Start the processes; return those whose /readiness means "the lab is ready"."""
        raise NotImplementedError(f"{type(self).__name__} must say what it starts")

    def after_ready(self) -> None:
        """Once every process is ready."""

    def before_stop(self) -> None:
        """``down``, while the processes still run (deregistering nodes, ...)."""

    def teardown(self) -> None:
        """``down``, after every process is gone."""


class EmbeddedLauncher(Launcher):
    backend = "embedded"

    def start(self) -> list[ManagedProcess]:
        port = free_port()
        argv = [venv_bin("python"), "-m", "lab.embedded_process", "--nodes", str(self.spec.nodes)]
        argv += ["--listen", self.spec.listen, "--health-port", str(port), "--cluster", self.spec.cluster]
        return [self.processes.spawn("embedded", argv, health_port=port, cwd=REPO)]


class ServicesLauncher(Launcher):
    backend = "services"

    def prepare(self) -> None:
        self.start_services()
        try:
            refuse_if_led(self.spec.etcd, self.spec.cluster)
        except (ClusterTaken, EtcdUnreadable) as err:
            raise LabError(str(err)) from None

    def start_services(self) -> None:
        missing = [a for a in (self.spec.etcd, self.spec.kafka, self.spec.mqtt) if not port_open(*_split(a))]
        if not missing:
            return
        log = self.spec.log_dir / "services-up.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "KALIKO_PYTHON": venv_bin("python")}
        with open(log, "ab") as out:
            done = subprocess.run(
                ["bash", str(SERVICES_SCRIPT), "up"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                check=False,
            )
        if done.returncode != 0:
            raise LabError(f"{', '.join(missing)} not answering and `services.sh up` failed; see {log}")

    def controller_argv(self, health_port: int) -> list[str]:
        return [
            venv_bin("kaliko-controller"),
            f"--etcd={self.spec.etcd}",
            f"--kafka={self.spec.kafka}",
            f"--mqtt={self.spec.mqtt}",
            f"--cluster={self.spec.cluster}",
            f"--listen={self.spec.listen}",
            f"--health-port={health_port}",
        ]

    def agent_argv(self, node: str, health_port: int, grpc_port: int) -> list[str]:
        """The agent's command; a data-plane launcher may wrap it (e.g. in ``ip netns exec``)."""
        return [
            venv_bin("kaliko-agent"),
            f"--node={node}",
            f"--cluster={self.spec.cluster}",
            f"--kafka={self.spec.kafka}",
            f"--mqtt={self.spec.mqtt}",
            f"--controller={self.spec.listen}",
            f"--dataplane={self.spec.dataplane}",
            f"--health-port={health_port}",
            f"--grpc-listen=127.0.0.1:{grpc_port}",
        ]

    def start(self) -> list[ManagedProcess]:
        port = free_port()
        controller = self.processes.spawn(
            "controller", self.controller_argv(port), health_port=port, cwd=REPO
        )
        self.state.save()
        try:
            self.processes.wait_ready([controller], self.spec.timeout)
        except ProcessFailed as err:
            raise ProcessFailed(
                f"{err}\n(another controller leading cluster {self.spec.cluster} on {self.spec.etcd}?)"
            ) from None
        self.register_nodes()
        agents = []
        for node in self.spec.node_names:
            health, grpc_port = free_port(), free_port()
            argv = self.agent_argv(node, health, grpc_port)
            agents.append(
                self.processes.spawn(node, argv, health_port=health, ports={"grpc": grpc_port}, cwd=REPO)
            )
        return [controller, *agents]

    def register_nodes(self) -> None:
        documents = [json.dumps(node_document(node)) for node in self.spec.node_names]
        self._admin("Apply", admin_pb.WriteRequest(documents_json=documents))
        self.state.registered_nodes = self.spec.node_names
        self.state.save()

    def before_stop(self) -> None:
        if not self.state.registered_nodes or not self.processes.get("controller").alive():
            return
        refs = [admin_pb.ResourceRef(kind="Node", name=node) for node in self.state.registered_nodes]
        try:
            self._admin("Delete", admin_pb.DeleteRequest(refs=refs, skip_not_exists=True))
        except LabError as err:
            print(f"lab down: could not deregister the nodes ({err}); continuing", file=sys.stderr)

    def _admin(self, method: str, request: Any) -> Any:
        with grpc.insecure_channel(self.state.admin) as channel:
            try:
                return getattr(admin_grpc.AdminServiceStub(channel), method)(request, timeout=30)
            except grpc.RpcError as err:
                raise LabError(
                    f"admin {method} at {self.state.admin}: {err.code().name} {err.details()}"
                ) from None


LAUNCHERS: dict[str, type[Launcher]] = {"embedded": EmbeddedLauncher, "services": ServicesLauncher}
DATAPLANES: dict[str, tuple[str, ...]] = {
    "memory": ("embedded", "services"),
    "nftables": ("embedded", "services"),
}


def launcher_for(state: LabState) -> Launcher:
    launchers = LAUNCHERS
    if state.spec.dataplane == "nftables":  # a real pod network (lab.nft_launchers builds on this module)
        from lab.nft_launchers import NFT_LAUNCHERS as launchers
    try:
        return launchers[state.spec.backend](state)
    except KeyError:
        raise LabError(f"backend {state.spec.backend!r}: not one of {', '.join(LAUNCHERS)}") from None


def up(spec: ClusterSpec) -> LabState:
    """Start a lab in the background and return once every node is ready (see the module doc)."""
    if spec.backend not in DATAPLANES.get(spec.dataplane, ()):
        raise LabError(f"--dataplane {spec.dataplane} is not available with --backend {spec.backend}")
    previous = LabState.load(spec.run_dir)
    if previous is not None:
        running = previous.processes.alive()
        if running:
            names = ", ".join(f"{p.name} (pid {p.pid})" for p in running)
            raise LabError(f"a lab is already running: {names}; run `kalikoctl lab down` first")
        launcher_for(previous).teardown()
        previous.spec.state_file.unlink(missing_ok=True)
    host, port = _split(spec.listen)
    if port_open(host, port):
        raise LabError(f"{spec.listen} is already in use; choose another address with --listen")
    started = time.monotonic()
    state = LabState(spec, ProcessSet(spec.log_dir), admin=spec.listen)
    launcher = launcher_for(state)
    state.save()
    try:
        launcher.prepare()
        readiness = launcher.start()
        state.save()
        state.processes.wait_ready(readiness, spec.timeout)
        launcher.after_ready()
    except BaseException:
        down(spec.run_dir)
        raise
    state.ready_seconds = round(time.monotonic() - started, 3)
    state.save()
    return state


def down(run_dir: str | Path = RUN_DIR) -> list[str]:
    """Stop every process of the lab recorded under ``run_dir``; returns the names stopped."""
    state = LabState.load(run_dir)
    if state is None:
        return []
    launcher = launcher_for(state)
    launcher.before_stop()
    stopped = state.processes.stop()
    launcher.teardown()
    state.spec.state_file.unlink(missing_ok=True)
    return stopped


def status(run_dir: str | Path = RUN_DIR) -> LabState | None:
    return LabState.load(run_dir)


def node_status(admin: str, timeout: float = 5.0) -> admin_pb.NodeStatusReply | None:
    """The controller's view of every node (None when the admin API does not answer)."""
    with grpc.insecure_channel(admin) as channel:
        try:
            reply: admin_pb.NodeStatusReply = admin_grpc.AdminServiceStub(channel).NodeStatus(
                admin_pb.NodeStatusRequest(), timeout=timeout
            )
        except grpc.RpcError:
            return None
        return reply
