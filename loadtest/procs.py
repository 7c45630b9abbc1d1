"""A private etcd and Mosquitto for one services-backend run, and the Kafka topic it uses.

Owns starting and stopping two child processes on free loopback ports, with their data and logs
in ``.run/bench/<run>/`` (deleted on stop unless the run failed): the bench writes tens of
thousands of resources and a thousand retained statuses, which must not land in the shared
services other people's tests read. Kafka is shared (one JVM is enough) but the run uses its own
topic, created here with the admin client if absent. It does not own the shared services
(``make services``) or any process it did not start.

Mosquitto is configured for a thousand clients: ``set_tcp_nodelay`` (no Nagle delay on small
status messages) and a deep per-client queue, so the controller's watcher is never dropped.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

MOSQUITTO_CONF = """listener {port} 127.0.0.1
allow_anonymous true
persistence false
set_tcp_nodelay true
max_queued_messages 1000000
max_connections -1
log_dest file {log}
log_type error
log_type warning
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateServices:
    """etcd on ``etcd`` and Mosquitto on ``mqtt`` (``127.0.0.1:<port>``), children of this process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.etcd = f"127.0.0.1:{free_port()}"
        self.mqtt = f"127.0.0.1:{free_port()}"
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        atexit.register(self.stop, keep=True)  # a driver that dies by an exception still ends them

    async def start(self, timeout: float = 30.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        peer = free_port()
        etcd = (
            f"etcd --name bench --data-dir {self.root / 'etcd'} --listen-client-urls http://{self.etcd} "
            f"--advertise-client-urls http://{self.etcd} --listen-peer-urls http://127.0.0.1:{peer} "
            f"--initial-advertise-peer-urls http://127.0.0.1:{peer} "
            f"--initial-cluster bench=http://127.0.0.1:{peer} "
            f"--initial-cluster-state new --quota-backend-bytes {8 * 2**30} --max-txn-ops 1024 "
            "--logger zap --log-outputs stderr"
        )
        self._spawn("etcd", etcd.split())
        conf = self.root / "mosquitto.conf"
        conf.write_text(
            MOSQUITTO_CONF.format(port=self.mqtt.rpartition(":")[2], log=self.root / "mosquitto.log")
        )
        self._spawn("mosquitto", ["mosquitto", "-c", str(conf)])
        deadline = time.monotonic() + timeout
        while not (self._etcd_healthy() and _listening(self.mqtt)):
            for name, child in self._children.items():
                if child.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {child.returncode}; see {self.root / (name + '.log')}"
                    )
            if time.monotonic() > deadline:
                raise RuntimeError(f"private services did not answer within {timeout}s (logs in {self.root})")
            await asyncio.sleep(0.1)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115  # owned by the child's lifetime
        self._children[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _etcd_healthy(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{self.etcd}/health", timeout=1.0) as reply:
                return b'"health":"true"' in reply.read()
        except OSError:
            return False

    def pids(self) -> list[int]:
        pids = [child.pid for child in self._children.values() if child.poll() is None]
        kafka = Path(__file__).resolve().parents[1] / ".run" / "services" / "kafka.pid"
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(kafka.read_text().split()[0]))
        return pids

    def stop(self, *, keep: bool = False) -> None:
        for child in self._children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self._children.values():
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self._children.clear()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


def _listening(endpoint: str) -> bool:
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


async def ensure_topic(bootstrap: str, topic: str, partitions: int) -> int:
    """Create ``topic`` with ``partitions`` if absent; the partition count it has."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
            for _ in range(100):
                if topic in await admin.list_topics():
                    break
                await asyncio.sleep(0.1)
        described = await admin.describe_topics([topic])
        return len(described[0].get("partitions", []))
    finally:
        await admin.close()


def run_directory(base: Path | None = None) -> Path:
    root = base or Path(__file__).resolve().parents[1] / ".run" / "bench"
    return root / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
