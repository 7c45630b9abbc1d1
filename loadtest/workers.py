"""Worker processes of the services backend: the controller, and agent hosts, over a pipe each.

Owns the two process entry points and the pipe protocol between them and the driver. Each worker
runs one asyncio loop; a reader thread turns pipe messages into commands on that loop, and records
go back in batches (`BatchingSink`, flushed every 50 ms). Messages, as tuples:

* worker → driver: ``("started", wall time, pid)``, ``("records", batch)``,
  ``("reply", id, value)``, ``("failed", id or None, text)``;
* driver → worker: ``(command, id, *args)`` with commands ``spawn``, ``restart``, ``hashes``,
  ``stop``.

`controller_worker` runs `controller.app.ControllerApp` — the real controller process's composition
(etcd store, election, MQTT watcher, gRPC AdminService + NodeSync) — with its publisher wrapped by
a `RecordingPublisher` on the bench topic. `agent_worker` runs an `AgentHost` whose nodes — the
slow one too (its full queue overflows into a resync marker, and ``max_lag``, default the agent's,
cuts it off) — share one `KafkaMultiNodeSubscriber` and one `SnapshotClient`, each node with its
own MQTT status client (``mqtt_mode="per-node"``, wills per node) or all on one connection
(``"shared"``, see `loadtest.shared_status`). Profiling (py-spy, attached from outside) is the
backend's business. Once an agent host's nodes have all joined, the worker settles its garbage
collector as the controller does after its first compile (`settle_garbage_collector`): the heap
is frozen, and young objects are collected every 100,000 allocations instead of every 700.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from multiprocessing.connection import Connection
from typing import Any

from loadtest.recorders import BatchingSink

log = logging.getLogger(__name__)
SHIP_EVERY = 0.05


class Port:
    """The worker's end of its pipe: commands in on a queue, messages out."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.loop = asyncio.get_running_loop()
        self.commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, name="pipe-reader", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                message = ("stop", None)
            self.loop.call_soon_threadsafe(self.commands.put_nowait, message)
            if message[0] == "stop":
                return

    def send(self, *message: Any) -> None:
        with self._lock:
            self.conn.send(message)


async def _ship(sink: BatchingSink) -> None:
    while True:
        await asyncio.sleep(SHIP_EVERY)
        sink.flush()


def _run(
    main: Callable[[dict[str, Any], Connection], Coroutine[Any, Any, None]],
    cfg: dict[str, Any],
    conn: Connection,
) -> None:
    logging.basicConfig(
        level=logging.WARNING, format=f"%(asctime)s {cfg['name']} %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(main(cfg, conn))


async def _serve(
    port: Port, handlers: dict[str, Callable[..., Awaitable[Any]]], background: list[Any]
) -> None:
    """Answer commands until ``stop``; a failing background task is reported and ends the worker."""
    tasks = [asyncio.create_task(coroutine, name=coroutine.__qualname__) for coroutine in background]
    pending: set[asyncio.Task[None]] = set()

    async def answer(command: str, ident: Any, args: tuple[Any, ...]) -> None:
        try:
            port.send("reply", ident, await handlers[command](*args))
        except Exception as error:
            port.send("failed", ident, f"{command}: {type(error).__name__}: {error}")

    getter: asyncio.Future[tuple[Any, ...]] | None = None
    try:
        while True:
            if getter is None:
                getter = asyncio.ensure_future(port.commands.get())
            running = [task for task in tasks if not task.done()]  # a task that returned is just done
            done, _ = await asyncio.wait([getter, *running], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not getter and not task.cancelled() and task.exception() is not None:
                    name = task.get_name() if isinstance(task, asyncio.Task) else "task"
                    port.send("failed", None, f"{name}: {task.exception()!r}")
                    return
            if not getter.done():
                continue
            command, ident, *args = getter.result()
            getter = None
            if command == "stop":
                with contextlib.suppress(Exception):
                    await handlers["stop"]()
                if ident is not None:
                    port.send("reply", ident, None)
                return
            job = asyncio.create_task(answer(command, ident, tuple(args)))
            pending.add(job)
            job.add_done_callback(pending.discard)
    finally:
        if getter is not None:
            getter.cancel()
        for task in [*tasks, *pending]:
            task.cancel()
        await asyncio.gather(*tasks, *pending, return_exceptions=True)


async def _controller_main(cfg: dict[str, Any], conn: Connection) -> None:
    from controller.app import ControllerApp
    from controller.settings import ControllerSettings
    from iokit.cluster_name import DEFAULT_CLUSTER
    from iokit.kafka_publisher import KafkaDiffPublisher
    from loadtest.recorders import (
        RecordingPublisher,
        measure_lag,
        observe_flushes,
        record_controller,
        watch_ready,
    )

    port = Port(conn)
    sink = BatchingSink(lambda batch: port.send("records", batch))
    settings = ControllerSettings(
        etcd=cfg["etcd"], kafka=cfg["kafka"], mqtt=cfg["mqtt"], listen=cfg["listen"], health_port=0,
        identity="bench-controller", lease_ttl=cfg["lease_ttl"],
        flush_interval=cfg.get("flush_interval", 0.005), cluster=cfg.get("cluster", DEFAULT_CLUSTER),
    )  # fmt: skip
    app = ControllerApp(settings)
    inner = KafkaDiffPublisher(cfg["kafka"], cfg["topic"], client_id="kaliko-bench-controller")
    publisher = RecordingPublisher(inner, sink)
    app.controller.publisher = publisher
    record_controller(app.controller, publisher)
    port.send("started", time.time(), os.getpid())

    async def hashes(nodes: list[str]) -> dict[str, str]:
        engine = app.controller.engine
        if engine is None:
            raise RuntimeError("the controller has no engine (not the leader)")
        return {node: engine.expected_hash(node) for node in nodes}

    finished = asyncio.Event()

    async def stop() -> None:
        app.stop()
        await asyncio.wait_for(finished.wait(), 30)

    async def serve_app() -> None:
        try:
            await app.run()
        finally:
            finished.set()
        raise RuntimeError("the controller stopped by itself")

    background = [
        serve_app(),
        observe_flushes(app.controller, sink),
        watch_ready(app.controller, sink),
        measure_lag(sink, "controller"),
        _ship(sink),
    ]
    await _serve(port, {"hashes": hashes, "stop": stop}, background)
    sink.flush()


async def _agents_main(cfg: dict[str, Any], conn: Connection) -> None:
    from iokit.cluster_name import DEFAULT_CLUSTER
    from iokit.heap import settle_garbage_collector
    from iokit.kafka_multi_node import KafkaMultiNodeSubscriber
    from iokit.mqtt_status import MqttStatusPublisher
    from iokit.status import StatusTopics
    from loadtest.agents import AgentHost, Transports
    from loadtest.recorders import measure_lag
    from loadtest.shared_status import SharedStatusConnection
    from node_agent.agent import DEFAULT_MAX_LAG
    from node_agent.snapshot_client import SnapshotClient

    port = Port(conn)
    sink = BatchingSink(lambda batch: port.send("records", batch))
    nodes: list[str] = cfg["nodes"]
    slow: dict[str, float] = cfg["slow"]
    multi = KafkaMultiNodeSubscriber(
        cfg["kafka"], nodes, cfg["topic"],
        queue_size=cfg.get("queue_size", 1000), client_id=f"kaliko-bench-{cfg['name']}",
    )  # fmt: skip
    await multi.start()
    snapshots = SnapshotClient([cfg["controller"]])
    topics = StatusTopics(cfg.get("cluster", DEFAULT_CLUSTER))
    shared: SharedStatusConnection | None = None
    if cfg["mqtt_mode"] == "shared":
        shared = SharedStatusConnection(cfg["mqtt"], cfg["name"], topics)

    def status(node: str) -> Any:
        return (
            shared.publisher(node)
            if shared is not None
            else MqttStatusPublisher(node, cfg["mqtt"], topics=topics, keepalive=60)
        )

    host = AgentHost(
        Transports(multi.subscription, status, snapshots.fetch),
        sink,
        max_lag=cfg.get("max_lag", DEFAULT_MAX_LAG),
    )
    background: list[Any] = [_ship(sink), measure_lag(sink, "agents")]
    if shared is not None:
        background.append(shared.run())
    port.send("started", time.time(), os.getpid())

    async def spawn(rate: float) -> None:
        await host.spawn(nodes, rate, slow)
        # Hundreds of nodes' states make one large heap: a full collection of it would stall the
        # loop (and, holding the GIL, the fetch thread) for hundreds of ms, so it is frozen. And
        # churn allocates young containers fast (each applied diff copies the sets it touches):
        # at the default threshold a young collection ran every few ms, a third of the worker's
        # CPU in the pod-churn bench (p99 1.1 s); at 100,000 it runs a few times a run (p99 0.27 s).
        settle_garbage_collector()

    async def restart(node: str) -> tuple[float, float]:
        return await host.restart(node)

    async def hashes() -> dict[str, str]:
        return host.hashes()

    async def stop() -> None:
        await host.stop()
        await multi.stop()
        await snapshots.close()
        if shared is not None:
            await shared.stop()
        sink.flush()

    await _serve(port, {"spawn": spawn, "restart": restart, "hashes": hashes, "stop": stop}, background)


def controller_worker(cfg: dict[str, Any], conn: Connection) -> None:
    _run(_controller_main, cfg, conn)


def agent_worker(cfg: dict[str, Any], conn: Connection) -> None:
    _run(_agents_main, cfg, conn)
