"""kaliko/probe: serve a pod's declared ports on TCP and UDP, and probe ports from inside a pod.

Owns both ends of a reachability check:

* the server (`ProbeServer`, `python -m lab.apps.probe --ports 80/TCP,53/UDP`): each TCP connection
  gets one reply line naming the pod and is then closed; each UDP datagram gets one reply datagram;
  once every port is bound it prints `{"ready": true, "name": ..., "ports": ["80/TCP", ...]}`;
* the client (`connect`, `probe_many`, and the one-shot CLI `python -m lab.apps.probe connect`),
  which `lab.apps.probe_matrix` runs with `ip netns exec <netns>` so that the probes leave from the
  source pod, through its veth and the node's data plane, like real pod traffic.

It does not own namespaces or the hosts file (`lab.topology`), nor any verdict about policy: a
result only says whether a reply came back in time.

Invariants: a TCP probe counts only if the handshake completes and reply bytes arrive; a UDP probe
only if a reply datagram arrives; each probe opens a fresh socket (conntrack never carries an old
connection across a policy change). Only the standard library is imported, so the one-shot CLI
starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import cast

PROTOCOLS = ("TCP", "UDP")
DEFAULT_TIMEOUT = 1.0
DEFAULT_CONCURRENCY = 256
REQUEST = b"GET /kaliko-probe HTTP/1.0\r\n\r\n"
"""What a TCP probe sends: a valid HTTP request, so HTTP servers (stars-probe) answer it too."""
UDP_REQUEST = b"kaliko-probe\n"
CLIENT_LINGER = 1.0
"""How long the server keeps a TCP connection open after replying, waiting for the client to close."""


class ProbeInputError(ValueError):
    """A port list or target list is malformed; the message names the field path and the reason."""


@dataclass(frozen=True)
class PortSpec:
    """One served port: `80/TCP`."""

    port: int
    protocol: str

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol}"


@dataclass(frozen=True)
class Target:
    """Where a probe goes: an IP address, a port and a protocol."""

    ip: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class Result:
    """A probe's outcome; `ok` means a reply came back within the timeout."""

    ip: str
    port: int
    protocol: str
    ok: bool


def _check_port(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ProbeInputError(f"{field}: {value!r} is not a port number (an integer 0-65535)")
    return value


def _check_protocol(value: object, field: str) -> str:
    if not isinstance(value, str) or value.upper() not in PROTOCOLS:
        raise ProbeInputError(f"{field}: {value!r} is not a protocol (TCP or UDP)")
    return value.upper()


def parse_ports(text: str) -> list[PortSpec]:
    """Parse `80/TCP,81,53/UDP` (protocol defaults to TCP); an empty string serves nothing."""
    specs: list[PortSpec] = []
    for index, item in enumerate(part.strip() for part in text.split(",") if part.strip()):
        field = f"--ports[{index}]"
        number, _, protocol = item.partition("/")
        if not number.isdigit():
            raise ProbeInputError(f"{field}: {item!r} is not PORT[/PROTOCOL]")
        spec = PortSpec(_check_port(int(number), field), _check_protocol(protocol or "TCP", field))
        if spec in specs:
            raise ProbeInputError(f"{field}: {spec} is listed twice")
        specs.append(spec)
    return specs


def parse_targets(data: object) -> list[Target]:
    """Validate decoded JSON `[{"ip", "port", "protocol"}]`; errors name the item and field."""
    if not isinstance(data, list):
        raise ProbeInputError(f"targets: expected a JSON list, got {type(data).__name__}")
    targets: list[Target] = []
    for index, item in enumerate(data):
        field = f"targets[{index}]"
        if not isinstance(item, dict):
            raise ProbeInputError(f"{field}: expected an object with ip, port and protocol")
        unknown = set(item) - {"ip", "port", "protocol"}
        if unknown:
            raise ProbeInputError(f"{field}: unknown field(s) {', '.join(sorted(unknown))}")
        ip = item.get("ip")
        try:
            ipaddress.ip_address(ip)  # type: ignore[arg-type]
        except ValueError:
            raise ProbeInputError(f"{field}.ip: {ip!r} is not an IP address") from None
        port = _check_port(item.get("port"), f"{field}.port")
        protocol = _check_protocol(item.get("protocol", "TCP"), f"{field}.protocol")
        targets.append(Target(str(ip), port, protocol))
    return targets


class _UdpReplier(asyncio.DatagramProtocol):
    def __init__(self, reply: bytes) -> None:
        self._reply = reply
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(self._reply, addr)


class ProbeServer:
    """Serves a list of ports until closed; `bound` holds the real ports (port 0 picks one)."""

    def __init__(self, name: str, host: str = "0.0.0.0") -> None:
        self.name = name
        self.host = host
        self.bound: list[PortSpec] = []
        self._tcp: list[asyncio.Server] = []
        self._udp: list[asyncio.DatagramTransport] = []

    def _reply(self, spec: PortSpec) -> bytes:
        return f"kaliko-probe {self.name} {spec}\n".encode()

    async def start(self, ports: Sequence[PortSpec]) -> None:
        """Bind every port; on any bind failure nothing stays open and the error propagates."""
        try:
            for spec in ports:
                await (self._start_tcp(spec) if spec.protocol == "TCP" else self._start_udp(spec))
        except BaseException:
            await self.close()
            raise

    async def _start_tcp(self, spec: PortSpec) -> None:
        server = await asyncio.start_server(self._serve_tcp, self.host, spec.port, reuse_address=True)
        self._tcp.append(server)
        self.bound.append(PortSpec(server.sockets[0].getsockname()[1], "TCP"))

    async def _start_udp(self, spec: PortSpec) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((self.host, spec.port))
        bound = PortSpec(sock.getsockname()[1], "UDP")
        transport, _ = await loop.create_datagram_endpoint(lambda: _UdpReplier(self._reply(bound)), sock=sock)
        self._udp.append(transport)
        self.bound.append(bound)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("sockname")[1]
        try:
            writer.write(self._reply(PortSpec(port, "TCP")))
            await writer.drain()
            async with asyncio.timeout(CLIENT_LINGER):
                while await reader.read(4096):
                    pass
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        for server in self._tcp:
            server.close()
        for server in self._tcp:
            await server.wait_closed()
        for transport in self._udp:
            transport.close()
        self._tcp, self._udp = [], []


class _UdpAsker(asyncio.DatagramProtocol):
    def __init__(self, answer: asyncio.Future[bool]) -> None:
        self._answer = answer

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if not self._answer.done():
            self._answer.set_result(True)

    def error_received(self, exc: Exception) -> None:
        if not self._answer.done():
            self._answer.set_result(False)


async def _connect_tcp(ip: str, port: int) -> bool:
    reader, writer = await asyncio.open_connection(ip, port)
    try:
        writer.write(REQUEST)
        return bool(await reader.read(256))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _connect_udp(ip: str, port: int, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bool] = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(lambda: _UdpAsker(answer), remote_addr=(ip, port))
    try:
        for _attempt in range(3):  # a datagram may be lost while the neighbour entry resolves
            transport.sendto(UDP_REQUEST)
            done, _pending = await asyncio.wait({answer}, timeout=timeout / 3)
            if done:
                return answer.result()
        return False
    finally:
        transport.close()


async def connect(ip: str, port: int, protocol: str = "TCP", timeout: float = DEFAULT_TIMEOUT) -> bool:
    """True if `ip:port/protocol` replied within `timeout` seconds, from this process's netns."""
    try:
        async with asyncio.timeout(timeout):
            if protocol.upper() == "UDP":
                return await _connect_udp(ip, port, timeout)
            return await _connect_tcp(ip, port)
    except (OSError, TimeoutError):
        return False


async def probe_many(
    targets: Sequence[Target], timeout: float = DEFAULT_TIMEOUT, concurrency: int = DEFAULT_CONCURRENCY
) -> list[Result]:
    """Probe all targets in parallel (at most `concurrency` at once); results keep the input order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(target: Target) -> Result:
        async with gate:
            ok = await connect(target.ip, target.port, target.protocol, timeout)
        return Result(target.ip, target.port, target.protocol, ok)

    return list(await asyncio.gather(*(one(target) for target in targets)))


def _pod_name(explicit: str | None) -> str:
    return explicit or os.environ.get("KALIKO_POD_NAME") or socket.gethostname()


async def _serve(ports: list[PortSpec], name: str, host: str) -> None:
    server = ProbeServer(name, host)
    await server.start(ports)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(json.dumps({"ready": True, "name": name, "ports": [str(p) for p in server.bound]}), flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()


def _serve_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="kaliko/probe", description="Serve ports on TCP and UDP.")
    parser.add_argument("--ports", default="", help="PORT[/TCP|UDP],... (default: none, just idle)")
    parser.add_argument("--name", default=None, help="name in replies (default: $KALIKO_POD_NAME)")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default: all)")
    args = parser.parse_args(argv)
    try:
        ports = parse_ports(args.ports)
    except ProbeInputError as error:
        parser.error(str(error))
    asyncio.run(_serve(ports, _pod_name(args.name), args.host))
    return 0


def _connect_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="kaliko/probe connect", description="Probe targets in parallel; print JSON results."
    )
    parser.add_argument("--targets", required=True, help='JSON [{"ip","port","protocol"}], or - for stdin')
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per target")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    args = parser.parse_args(argv)
    text = sys.stdin.read() if args.targets == "-" else args.targets
    try:
        targets = parse_targets(json.loads(text))
    except json.JSONDecodeError as error:
        parser.error(f"targets: not JSON ({error})")
    except ProbeInputError as error:
        parser.error(str(error))
    if args.timeout <= 0 or args.concurrency < 1:
        parser.error("--timeout must be > 0 and --concurrency >= 1")
    results = asyncio.run(probe_many(targets, args.timeout, args.concurrency))
    print(json.dumps([asdict(result) for result in results]), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`probe [--ports ...]` serves; `probe connect --targets ...` probes once and exits."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["connect"]:
        return _connect_main(args[1:])
    return _serve_main(args)


if __name__ == "__main__":
    sys.exit(main())
