"""The services backend: real etcd, Kafka, Mosquitto and gRPC, the controller and agents in worker processes.

Owns the driver's side of the run: a private etcd and Mosquitto (`loadtest.procs`; Kafka is shared,
the topic is the bench's own), the preload straight into etcd (no controller runs yet), one
controller worker process (`controller.app.ControllerApp`) and ``agent_workers`` agent worker
processes (each hosting every n-th node), the pipes to them (`WorkerLink`), and the writes: every
change goes through the real gRPC ``AdminService`` into etcd. Records from the workers are
replayed into the sink (the ledger) on this process's loop.

::

    driver ── Apply/Delete (gRPC) ──▶ controller worker ──▶ etcd (private)
       ▲                                   │ Kafka (topic kaliko.bench-diffs)
       │ records (pipes)                   ▼
       └──────────────────────────── agent workers x n ── MQTT (private) ──▶ controller

Processes are started with the ``spawn`` method (the driver holds gRPC and asyncio state that must
not be forked). Invariant: `stop` ends every process this backend started, by its own handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import multiprocessing
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from controller.resource_store import KeyLayout, ResourceStore
from iokit.bus import partition_for
from iokit.cluster_name import DEFAULT_CLUSTER
from iokit.etcd_store import EtcdStore
from loadtest.backend import preload
from loadtest.procs import PrivateServices, ensure_topic, free_port, run_directory
from loadtest.recorders import RecordSink, replay
from loadtest.workers import agent_worker, controller_worker
from loadtest.workload import Change
from wire.gen.kaliko.v1 import admin_pb2 as admin_pb
from wire.gen.kaliko.v1 import admin_pb2_grpc as admin_grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServicesSettings:
    kafka: str = "127.0.0.1:9092"
    topic: str = "kaliko.bench-diffs"
    agent_workers: int = 2
    mqtt_mode: str = "per-node"
    partitions: int = 64
    profile_dir: str | None = None
    lease_ttl: int = 30
    load_rate: float = 0.0
    cluster: str = DEFAULT_CLUSTER

    def __post_init__(self) -> None:
        if self.mqtt_mode not in ("per-node", "shared"):
            raise ValueError(f"mqtt_mode: expected per-node or shared, got {self.mqtt_mode!r}")
        if self.agent_workers < 1:
            raise ValueError(f"agent_workers: must be >= 1, got {self.agent_workers}")


class WorkerLink:
    """The driver's end of one worker process: calls with replies, records into the sink.

    With ``profile_dir``, a ``py-spy record`` (collapsed stacks, 50 Hz, non-blocking) follows the
    process until it exits and leaves ``<profile_dir>/<name>.txt``.
    """

    def __init__(
        self, name: str, target: Any, cfg: dict[str, Any], sink: RecordSink, profile_dir: str | None = None
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self.sink = sink
        self._conn, child = context.Pipe(duplex=True)
        self.process = context.Process(
            target=target, args=({**cfg, "name": name}, child), name=name, daemon=True
        )
        self._loop = asyncio.get_running_loop()
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self.started: asyncio.Future[tuple[float, int]] = self._loop.create_future()
        self.problems: list[str] = []
        self._send_lock = threading.Lock()
        self.process.start()
        child.close()
        self.profiler = _profile(self.process.pid, name, profile_dir) if profile_dir else None
        threading.Thread(target=self._read, name=f"{name}-reader", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                self._loop.call_soon_threadsafe(self._gone)
                return
            self._loop.call_soon_threadsafe(self._dispatch, message)

    def _gone(self) -> None:
        error = RuntimeError(f"{self.name} exited (code {self.process.exitcode})")
        for future in self._replies.values():
            if not future.done():
                future.set_exception(error)
        if not self.started.done():
            self.started.set_exception(error)

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "records":
            replay(message[1], self.sink)
        elif kind == "started":
            if not self.started.done():
                self.started.set_result((message[1], message[2]))
        elif kind in ("reply", "failed"):
            future = self._replies.pop(message[1], None) if message[1] is not None else None
            if kind == "failed":
                if future is None:
                    self.problems.append(f"{self.name}: {message[2]}")
                elif not future.done():
                    future.set_exception(RuntimeError(message[2]))
            elif future is not None and not future.done():
                future.set_result(message[2])

    async def call(self, command: str, *args: Any, timeout: float = 120.0) -> Any:
        ident = next(self._ids)
        future = self._loop.create_future()
        self._replies[ident] = future
        with self._send_lock:
            self._conn.send((command, ident, *args))
        return await asyncio.wait_for(future, timeout)

    async def stop(self, timeout: float = 30.0) -> None:
        if self.process.is_alive():
            with contextlib.suppress(Exception):
                await self.call("stop", timeout=timeout)
        await asyncio.get_running_loop().run_in_executor(None, self.process.join, 10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.profiler is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.profiler.wait(30)


def _profile(pid: int | None, name: str, directory: str) -> subprocess.Popen[bytes]:
    Path(directory).mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    argv = [
        spy,
        "record",
        "--nonblocking",
        "-r",
        "50",
        "-f",
        "raw",
        "-o",
        f"{directory}/{name}.txt",
        "-p",
        str(pid),
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _note_failure(link: WorkerLink, done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and done.exception() is not None:
        link.problems.append(f"{link.name}: spawn failed: {done.exception()}")


class ServicesBackend:
    name = "services"

    def __init__(self, sink: RecordSink, settings: ServicesSettings | None = None) -> None:
        self.sink = sink
        self.settings = settings or ServicesSettings()
        self.services = PrivateServices(run_directory())
        self.controller: WorkerLink | None = None
        self.agents: list[WorkerLink] = []
        self.owner: dict[str, WorkerLink] = {}
        self._channel: grpc.aio.Channel | None = None
        self._admin: admin_grpc.AdminServiceStub | None = None
        self._ok = False
        self.address = f"127.0.0.1:{free_port()}"

    async def prepare(self) -> None:
        await self.services.start()
        await ensure_topic(self.settings.kafka, self.settings.topic, self.settings.partitions)

    async def preload(self, documents: Sequence[Mapping[str, Any]]) -> int:
        store = EtcdStore.from_endpoint(self.services.etcd)
        try:
            resources = ResourceStore(store, KeyLayout(self.settings.cluster))
            return await preload(resources, documents, concurrency=64)
        finally:
            await store.close()

    def _cfg(self) -> dict[str, Any]:
        s = self.settings
        return {"kafka": s.kafka, "topic": s.topic, "mqtt": self.services.mqtt, "etcd": self.services.etcd,
                "cluster": s.cluster}  # fmt: skip

    async def start_agents(self, nodes: list[str], spawn_rate: float, slow: Mapping[str, float]) -> None:
        count = min(self.settings.agent_workers, len(nodes))
        for index, mine in enumerate(split_by_partition(nodes, self.settings.partitions, count)):
            cfg = {**self._cfg(), "nodes": mine, "slow": {n: slow[n] for n in mine if n in slow},
                   "controller": self.address, "mqtt_mode": self.settings.mqtt_mode}  # fmt: skip
            link = WorkerLink(f"agents-{index}", agent_worker, cfg, self.sink, self.settings.profile_dir)
            self.agents.append(link)
            self.owner.update(dict.fromkeys(mine, link))
        await asyncio.gather(*(link.started for link in self.agents))
        self._spawn(spawn_rate)

    async def start_controller(self) -> float:
        cfg = {**self._cfg(), "listen": self.address, "lease_ttl": self.settings.lease_ttl}
        self.controller = WorkerLink(
            "controller", controller_worker, cfg, self.sink, self.settings.profile_dir
        )
        started, _ = await self.controller.started
        self._channel = grpc.aio.insecure_channel(self.address)
        self._admin = admin_grpc.AdminServiceStub(self._channel)
        return float(started)

    def _spawn(self, rate: float) -> None:
        for link in self.agents:
            spawn = asyncio.ensure_future(
                link.call("spawn", rate / len(self.agents) if rate else 0.0, timeout=3600)
            )
            spawn.add_done_callback(functools.partial(_note_failure, link))

    async def write(self, change: Change) -> tuple[int, str]:
        assert self._admin is not None
        if change.action == "apply":
            reply = await self._admin.Apply(
                admin_pb.WriteRequest(documents_json=[json.dumps(change.document)])
            )
        else:
            ref = admin_pb.ResourceRef(kind=change.kind, namespace=change.namespace, name=change.name)
            reply = await self._admin.Delete(admin_pb.DeleteRequest(refs=[ref]))
        outcome = reply.results[0].outcome if reply.results else "unchanged"
        return int(reply.revision), outcome

    async def restart_agent(self, node: str) -> None:
        await self.owner[node].call("restart", node, timeout=60)

    async def hashes(self) -> tuple[dict[str, str], dict[str, str]]:
        assert self.controller is not None
        expected: dict[str, str] = await self.controller.call("hashes", list(self.owner), timeout=300)
        programmed: dict[str, str] = {}
        for part in await asyncio.gather(*(link.call("hashes", timeout=300) for link in self.agents)):
            programmed.update(part)
        self._ok = True
        return expected, programmed

    def pids(self) -> dict[str, list[int]]:
        def alive(links: list[WorkerLink]) -> list[int]:
            return [link.process.pid for link in links if link.process.pid is not None]

        return {
            "controller": alive([self.controller] if self.controller else []),
            "agents": alive(self.agents),
            "services": self.services.pids(),
        }

    def problems(self) -> list[str]:
        out: list[str] = []
        for link in [*self.agents, *([self.controller] if self.controller else [])]:
            out += link.problems
            if link.process.exitcode not in (None, 0):
                out.append(f"{link.name} exited with code {link.process.exitcode}")
        return out

    async def stop(self) -> None:
        for link in self.agents:
            await link.stop()
        if self.controller is not None:
            await self.controller.stop()
        if self._channel is not None:
            await self._channel.close()
        self.services.stop(keep=not self._ok)


def split_by_partition(nodes: Sequence[str], partitions: int, workers: int) -> list[list[str]]:
    """Split ``nodes`` over ``workers`` so that no two workers read the same partition (each
    worker's one consumer then fetches, and parses, only records of its own nodes), balancing the
    node counts greedily; each worker keeps the nodes' order."""
    by_partition: dict[int, list[str]] = {}
    for node in nodes:
        by_partition.setdefault(partition_for(node, partitions), []).append(node)
    loads = [0] * workers
    owner: dict[int, int] = {}
    for partition, members in sorted(by_partition.items(), key=lambda item: (-len(item[1]), item[0])):
        worker = loads.index(min(loads))
        owner[partition] = worker
        loads[worker] += len(members)
    split: list[list[str]] = [[] for _ in range(workers)]
    for node in nodes:
        split[owner[partition_for(node, partitions)]].append(node)
    return [mine for mine in split if mine]
