"""Real TCP and UDP traffic between lab pods, for the netns tests: servers and reachability checks.

Sockets are created on a `NetnsThread` inside the pod's namespace (a socket belongs to the
namespace it was created in, whatever thread uses it later), so no process is spawned per probe.
Servers answer every TCP connection and every UDP datagram with ``b"ok"``. A check is true when
the answer came back within the timeout: a dropped SYN or datagram shows as a timeout.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from node_agent.dataplane.netns_thread import NetnsThread

TIMEOUT = 0.6


class PodSockets:
    """Servers and clients for a set of pod namespaces; `close` stops everything."""

    def __init__(self) -> None:
        self._threads: dict[str, NetnsThread] = {}
        self._servers: list[socket.socket] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _socket(self, netns: str, kind: int) -> socket.socket:
        with self._lock:
            if netns not in self._threads:
                self._threads[netns] = NetnsThread(netns)
            thread = self._threads[netns]
        return thread.call(socket.socket, socket.AF_INET, kind)

    def serve(self, netns: str, ip: str, tcp: Iterable[int] = (), udp: Iterable[int] = ()) -> None:
        for port in tcp:
            listener = self._socket(netns, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((ip, port))
            listener.listen(64)
            listener.settimeout(0.2)
            self._servers.append(listener)
            threading.Thread(target=self._accept_loop, args=(listener,), daemon=True).start()
        for port in udp:
            receiver = self._socket(netns, socket.SOCK_DGRAM)
            receiver.bind((ip, port))
            receiver.settimeout(0.2)
            self._servers.append(receiver)
            threading.Thread(target=self._udp_loop, args=(receiver,), daemon=True).start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.sendall(b"ok")

    def _udp_loop(self, receiver: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                _, peer = receiver.recvfrom(64)
                receiver.sendto(b"ok", peer)
            except (TimeoutError, OSError):
                continue

    def tcp(self, netns: str, ip: str, port: int, timeout: float = TIMEOUT) -> bool:
        with self._socket(netns, socket.SOCK_STREAM) as client:
            client.settimeout(timeout)
            try:
                client.connect((ip, port))
                return client.recv(2) == b"ok"
            except OSError:
                return False

    def udp(self, netns: str, ip: str, port: int, timeout: float = TIMEOUT) -> bool:
        with self._socket(netns, socket.SOCK_DGRAM) as client:
            client.settimeout(timeout)
            try:
                client.sendto(b"hi", (ip, port))
                return client.recv(2) == b"ok"
            except OSError:
                return False

    def matrix(self, checks: list[tuple[str, str, str, int]]) -> list[bool]:
        """Run ``(proto, src netns, dst ip, port)`` checks in parallel; answers in order."""
        with ThreadPoolExecutor(max_workers=16) as pool:
            futures = [
                pool.submit(self.tcp if proto == "tcp" else self.udp, netns, ip, port)
                for proto, netns, ip, port in checks
            ]
            return [f.result() for f in futures]

    def close(self) -> None:
        self._stop.set()
        for server in self._servers:
            server.close()
        for thread in self._threads.values():
            thread.close()
