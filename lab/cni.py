"""The lab's CNI daemon: one process that owns the topology and the pods, behind a small HTTP API.

Owns the process (``python -m lab.cni``) that ``kalikoctl lab up --dataplane nftables`` starts
first: it removes a crashed run's leftovers, builds the node namespaces and the fabric
(`lab.topology`), then serves the `PodManager` of `lab.pods` on ``127.0.0.1:<port>``; every
`SUPERVISE_INTERVAL` it restarts crashed pod processes and dead NodePort forwards (`supervise`);
SIGTERM tears every pod, node and the fabric down. It also owns `CniClient`, the synchronous client that
``kalikoctl apply``/``delete`` and the live demos use, `PodBatch` (the pods of one datastore
write), and `cleanup_leftovers`.

Why a daemon: pods outlive the command that created them, and the topology has one owner (netlink
handles per namespace, not thread-safe); the daemon is that owner, and the parent of every pod
process (so they are reaped and stopped by the one process that knows them). Agents are *not*
inside: they run in the root namespace (their Kafka, MQTT and gRPC peers are on the host's
loopback) and program their node's namespace through ``--netns`` (`NetnsThread`).

HTTP API (JSON bodies; one request at a time, in arrival order)::

    GET  /readiness               200 once the nodes are built
    GET  /lab                     {"nodes": [...], "pods": [...]}
    POST /admit    {"documents"}  {"documents", "created", "changed"}   422 {"problems": [...]}
    POST /start    {"keys"}       sync hosts files and NodePorts from the admin API's Services and
                                  Pods, start the processes, wait until their ports answer
                                  → {"lab": ...}
    POST /rollback {"keys"}       undo /admit for a write that failed
    POST /remove   {"keys"}       stop, remove, free; then sync → {"removed": [...]}
    POST /sync     {}             sync hosts files and NodePorts → {"changed": n}

``GET /lab`` lists ``nodes``, ``pods`` (with ``restarts`` and ``forward``, the host URL of a
NodePort into the pod) and ``node_ports`` (`lab.node_ports`).

Errors: 422 for documents the lab cannot run (field paths), 409 for a topology refusal, 500 for
anything else; the body always carries ``{"problems": [...]}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
from aiohttp import web

from lab.apps.httpkit import start_site
from lab.pod_specs import PodError
from lab.pods import NETNS_ETC, PodManager
from lab.topology import Lab, LabError
from policycore.model import parse_resource
from policycore.model.kube import Pod, Service
from wire.gen.kaliko.v1 import admin_pb2 as admin_pb
from wire.gen.kaliko.v1 import admin_pb2_grpc as admin_grpc

log = logging.getLogger("kaliko.lab.cni")
CALL_TIMEOUT = 120.0
KILL_TIMEOUT = 5.0
SUPERVISE_INTERVAL = 0.5
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class CniError(RuntimeError):
    """The CNI daemon refused a request or could not be reached; ``problems`` says why."""

    def __init__(self, status: int, problems: list[str]) -> None:
        super().__init__("; ".join(problems) or f"HTTP {status}")
        self.status = status
        self.problems = problems


def cleanup_leftovers(prefix: str) -> list[str]:
    """Kill every process living in a ``<prefix>-*`` namespace, remove those namespaces and their
    /etc/netns directories; returns the namespaces removed (a crashed run's)."""
    names = [n for n in _netns_names() if n.startswith(f"{prefix}-")]
    killed: list[psutil.Process] = []
    for name in names:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False)
        for pid in pids.stdout.split():
            with contextlib.suppress(psutil.Error, ValueError):
                process = psutil.Process(int(pid))
                process.kill()
                killed.append(process)
    psutil.wait_procs(killed, timeout=KILL_TIMEOUT)
    Lab(prefix).cleanup_leftovers()
    if NETNS_ETC.is_dir():
        for directory in NETNS_ETC.glob(f"{prefix}-*"):
            shutil.rmtree(directory, ignore_errors=True)
    return names


def _netns_names() -> list[str]:
    run = Path("/run/netns")
    return sorted(p.name for p in run.iterdir()) if run.is_dir() else []


class CniDaemon:
    """The HTTP face of one `PodManager`; see the module docstring."""

    def __init__(self, pods: PodManager, admin: str) -> None:
        self.pods = pods
        self.admin = admin
        self.ready = False
        self._lock = asyncio.Lock()

    async def admit(self, body: dict[str, Any]) -> dict[str, Any]:
        admission = self.pods.admit(list(body.get("documents", [])))
        return {"documents": admission.documents, "created": admission.created, "changed": admission.changed}

    async def start(self, body: dict[str, Any]) -> dict[str, Any]:
        await self._sync()
        await self.pods.start(list(body.get("keys", [])))
        return {"lab": self.pods.to_json()}

    async def rollback(self, body: dict[str, Any]) -> dict[str, Any]:
        self.pods.rollback(list(body.get("keys", [])))
        return {"lab": self.pods.to_json()}

    async def remove(self, body: dict[str, Any]) -> dict[str, Any]:
        removed = self.pods.remove(list(body.get("keys", [])))
        await self._sync()
        return {"removed": removed}

    async def sync(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"changed": await self._sync()}

    async def _sync(self) -> int:
        services = [r for r in await self._list("Service") if isinstance(r, Service)]
        pods = [r for r in await self._list("Pod") if isinstance(r, Pod)]
        return self.pods.sync_services(services, pods)

    async def supervise(self, interval: float = SUPERVISE_INTERVAL) -> None:
        """Forever: restart crashed pod processes (with their back-off) and dead NodePort forwards."""
        while True:
            await asyncio.sleep(interval)
            async with self._lock:
                for key in self.pods.restart_crashed(time.monotonic()):
                    log.warning("pod %s: restarted", key)
                for service in self.pods.node_ports.revive():
                    log.warning("NodePort of %s: forwarder restarted", service)

    async def _list(self, kind: str) -> list[Any]:
        async with grpc.aio.insecure_channel(self.admin) as channel:
            reply = await admin_grpc.AdminServiceStub(channel).List(
                admin_pb.ListRequest(kind=kind), timeout=30
            )
        return [parse_resource(json.loads(doc)) for doc in reply.documents_json]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/readiness", self._readiness)
        app.router.add_get("/lab", self._lab)
        routes: dict[str, Handler] = {
            "/admit": self.admit,
            "/start": self.start,
            "/rollback": self.rollback,
            "/remove": self.remove,
            "/sync": self.sync,
        }
        for path, handler in routes.items():
            app.router.add_post(path, self._serialised(handler))
        return app

    async def _readiness(self, _: web.Request) -> web.Response:
        return web.json_response({"ready": self.ready}, status=200 if self.ready else 503)

    async def _lab(self, _: web.Request) -> web.Response:
        return web.json_response(self.pods.to_json())

    def _serialised(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                body = await request.json()
            except json.JSONDecodeError:
                return web.json_response({"problems": ["(body): not JSON"]}, status=400)
            async with self._lock:
                try:
                    return web.json_response(await handler(body if isinstance(body, dict) else {}))
                except PodError as err:
                    return web.json_response({"problems": err.problems}, status=422)
                except LabError as err:
                    return web.json_response({"problems": [str(err)]}, status=409)
                except Exception as err:  # reported to the caller, who decides; the daemon goes on
                    log.exception("%s failed", request.path)
                    return web.json_response({"problems": [f"{type(err).__name__}: {err}"]}, status=500)

        return handle


class CniClient:
    """Synchronous calls to a lab's CNI daemon (``http://127.0.0.1:<port>``)."""

    def __init__(self, url: str, timeout: float = CALL_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def lab(self) -> dict[str, Any]:
        return self._call("GET", "/lab")

    def admit(self, documents: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return self._call("POST", "/admit", {"documents": list(documents)})

    def start(self, keys: Sequence[str]) -> dict[str, Any]:
        return self._call("POST", "/start", {"keys": list(keys)})

    def rollback(self, keys: Sequence[str]) -> dict[str, Any]:
        return self._call("POST", "/rollback", {"keys": list(keys)})

    def remove(self, keys: Sequence[str]) -> dict[str, Any]:
        return self._call("POST", "/remove", {"keys": list(keys)})

    def sync(self) -> dict[str, Any]:
        return self._call("POST", "/sync", {})

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with _NO_PROXY.open(request, timeout=self.timeout) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as err:
            try:
                problems = list(json.loads(err.read()).get("problems", []))
            except (ValueError, AttributeError):
                problems = []
            raise CniError(err.code, problems or [f"HTTP {err.code} from {self.url}{path}"]) from None
        except (urllib.error.URLError, OSError) as err:
            raise CniError(0, [f"the lab's CNI daemon at {self.url} did not answer: {err}"]) from None


@dataclass
class PodBatch:
    """The pods of one datastore write: admitted before it, then started (or rolled back) after it.

    ``documents`` are the write's documents with every Pod placed; without a CNI daemon (a lab
    with no pod network) they are the documents as given and `commit`/`abort` do nothing.
    """

    cni: CniClient | None
    documents: list[dict[str, Any]]
    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @classmethod
    def admit(cls, cni: CniClient | None, documents: Sequence[dict[str, Any]]) -> PodBatch:
        if cni is None:
            return cls(None, list(documents))
        reply = cni.admit(documents)
        return cls(cni, list(reply["documents"]), list(reply["created"]), list(reply["changed"]))

    def commit(self) -> dict[str, Any] | None:
        """After the write: hosts files from the datastore, new and changed pods running."""
        return None if self.cni is None else self.cni.start([*self.created, *self.changed])

    def abort(self) -> None:
        """The write failed: remove the pods this batch created."""
        if self.cni is not None and self.created:
            self.cni.rollback(self.created)


async def serve(args: argparse.Namespace) -> None:
    removed = cleanup_leftovers(args.prefix)
    if removed:
        log.warning("removed leftovers of an earlier run: %s", ", ".join(removed))
    pods = PodManager(Lab(args.prefix), Path(args.run_dir))
    daemon = CniDaemon(pods, args.admin)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner, port = await start_site(daemon.app(), "127.0.0.1", args.port)
    supervisor: asyncio.Task[None] | None = None
    try:
        pods.create_nodes(args.node)
        daemon.ready = True
        log.info("lab CNI: %d nodes (prefix %s), API on 127.0.0.1:%d", len(args.node), args.prefix, port)
        supervisor = asyncio.create_task(daemon.supervise())
        supervisor.add_done_callback(lambda _: stop.set())  # a failed supervisor ends the daemon
        await stop.wait()
        if supervisor.done() and not supervisor.cancelled() and supervisor.exception() is not None:
            log.error("the pod supervisor failed", exc_info=supervisor.exception())
    finally:
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await supervisor
        await runner.cleanup()
        async with daemon._lock:
            pods.teardown()
        log.info("lab CNI: pods, nodes and fabric removed")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lab.cni", description=__doc__.splitlines()[0])
    p.add_argument("--prefix", default="kaliko", help="name prefix of every namespace of this lab")
    p.add_argument("--node", action="append", required=True, help="a node name (repeat for each node)")
    p.add_argument("--admin", required=True, help="the admin API (HOST:PORT), for Services and Pods")
    p.add_argument("--port", type=int, default=0, help="the API port on 127.0.0.1")
    p.add_argument("--run-dir", required=True, help="where pod logs go (<run-dir>/logs/pods)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
