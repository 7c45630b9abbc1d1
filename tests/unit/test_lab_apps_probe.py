"""kaliko/probe on loopback: serving TCP and UDP, the client's verdicts, the CLIs, and the image table."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator

import pytest

from lab.apps import images
from lab.apps.probe import (
    PortSpec,
    ProbeInputError,
    ProbeServer,
    Result,
    Target,
    connect,
    parse_ports,
    parse_targets,
    probe_many,
)
from lab.apps.probe_matrix import Pair, ProbeRunError, netns_command, probe_matrix

LOOPBACK = "127.0.0.1"


@pytest.fixture
async def server() -> AsyncIterator[ProbeServer]:
    probe = ProbeServer("stars/nginx", host=LOOPBACK)
    await probe.start([PortSpec(0, "TCP"), PortSpec(0, "UDP")])
    yield probe
    await probe.close()


def _port(server: ProbeServer, protocol: str) -> int:
    return next(spec.port for spec in server.bound if spec.protocol == protocol)


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def test_parse_ports_defaults_to_tcp_and_upper_cases() -> None:
    assert parse_ports("80/TCP, 81,53/udp") == [PortSpec(80, "TCP"), PortSpec(81, "TCP"), PortSpec(53, "UDP")]
    assert parse_ports("") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("80/SCTP", "--ports[0]: 'SCTP' is not a protocol"),
        ("80,x/TCP", "--ports[1]: 'x/TCP' is not PORT[/PROTOCOL]"),
        ("70000", "--ports[0]: 70000 is not a port number"),
        ("80,80/TCP", "--ports[1]: 80/TCP is listed twice"),
    ],
)
def test_parse_ports_names_the_bad_item(text: str, message: str) -> None:
    with pytest.raises(ProbeInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_ports(text)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ip": "1.2.3.4"}, "targets: expected a JSON list"),
        ([{"ip": "1.2.3.4", "port": 80}, {"ip": "frontend", "port": 80}], r"targets\[1\]\.ip: 'frontend'"),
        ([{"ip": "1.2.3.4", "port": "80"}], r"targets\[0\]\.port: '80' is not a port"),
        ([{"ip": "1.2.3.4", "port": 80, "protocol": "ICMP"}], r"targets\[0\]\.protocol: 'ICMP'"),
        ([{"ip": "1.2.3.4", "port": 80, "proto": "TCP"}], r"targets\[0\]: unknown field\(s\) proto"),
    ],
)
def test_parse_targets_names_the_field(data: object, message: str) -> None:
    with pytest.raises(ProbeInputError, match=message):
        parse_targets(data)


async def test_tcp_reply_names_the_pod_and_closes(server: ProbeServer) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, _port(server, "TCP"))
    line = await asyncio.wait_for(reader.readline(), 2)
    writer.close()
    assert line == f"kaliko-probe stars/nginx {_port(server, 'TCP')}/TCP\n".encode()


async def test_udp_reply_names_the_pod(server: ProbeServer) -> None:
    def ask() -> bytes:  # a plain blocking socket, in a thread so that the server's loop keeps running
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            sock.sendto(b"anything", (LOOPBACK, _port(server, "UDP")))
            return sock.recvfrom(1024)[0]

    reply = await asyncio.to_thread(ask)
    assert reply == f"kaliko-probe stars/nginx {_port(server, 'UDP')}/UDP\n".encode()


async def test_connect_reaches_served_ports(server: ProbeServer) -> None:
    assert await connect(LOOPBACK, _port(server, "TCP"), "TCP", 1.0)
    assert await connect(LOOPBACK, _port(server, "UDP"), "udp", 1.0)


async def test_connect_refused_ports_fail_fast() -> None:
    started = time.monotonic()
    assert not await connect(LOOPBACK, _free_port(socket.SOCK_STREAM), "TCP", 2.0)
    assert not await connect(LOOPBACK, _free_port(socket.SOCK_DGRAM), "UDP", 2.0)
    assert time.monotonic() - started < 1.0, "a refusal (RST, ICMP) must not wait"


async def test_connect_needs_a_reply_not_just_a_handshake() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, never answers

    tcp = await asyncio.start_server(silent, LOOPBACK, 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((LOOPBACK, 0))
        async with tcp:
            started = time.monotonic()
            assert not await connect(LOOPBACK, tcp.sockets[0].getsockname()[1], "TCP", 0.3)
            assert not await connect(LOOPBACK, udp.getsockname()[1], "UDP", 0.3)
            assert 0.5 <= time.monotonic() - started < 1.5


async def test_each_probe_uses_a_new_connection(server: ProbeServer) -> None:
    accepted: list[int] = []

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer.get_extra_info("peername")[1])
        writer.write(b"hi\n")
        await writer.drain()
        writer.close()

    counter = await asyncio.start_server(count, LOOPBACK, 0)
    async with counter:
        port = counter.sockets[0].getsockname()[1]
        assert all([await connect(LOOPBACK, port) for _ in range(3)])
    assert len(set(accepted)) == 3


async def test_probe_many_keeps_order_and_mixes_verdicts(server: ProbeServer) -> None:
    closed = _free_port(socket.SOCK_STREAM)
    targets = [
        Target(LOOPBACK, closed, "TCP"),
        Target(LOOPBACK, _port(server, "TCP"), "TCP"),
        Target(LOOPBACK, _port(server, "UDP"), "UDP"),
        Target(LOOPBACK, _port(server, "TCP"), "TCP"),
    ]
    results = await probe_many(targets, timeout=1.0, concurrency=2)
    assert [r.ok for r in results] == [False, True, True, True]
    assert [(r.ip, r.port, r.protocol) for r in results] == [(t.ip, t.port, t.protocol) for t in targets]


async def _run(*args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lab.apps.probe", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin), 20)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_connect_cli_prints_json_results(server: ProbeServer) -> None:
    closed = _free_port(socket.SOCK_STREAM)
    targets = [
        {"ip": LOOPBACK, "port": _port(server, "TCP"), "protocol": "TCP"},
        {"ip": LOOPBACK, "port": _port(server, "UDP"), "protocol": "UDP"},
        {"ip": LOOPBACK, "port": closed, "protocol": "TCP"},
    ]
    code, out, _ = await _run("connect", "--targets", json.dumps(targets), "--timeout", "1")
    assert code == 0
    assert json.loads(out) == [{**t, "ok": ok} for t, ok in zip(targets, [True, True, False], strict=True)]
    code, out, _ = await _run("connect", "--targets", "-", stdin=json.dumps(targets[:1]).encode())
    assert code == 0 and json.loads(out) == [{**targets[0], "ok": True}]


async def test_connect_cli_rejects_bad_targets_with_the_field_path() -> None:
    code, out, err = await _run("connect", "--targets", '[{"ip": "10.0.0.1", "port": -1}]')
    assert code == 2 and out == ""
    assert "targets[0].port: -1 is not a port number" in err


async def test_serve_cli_announces_ports_serves_them_and_stops_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lab.apps.probe", "--ports", "0/TCP,0/UDP", "--host", LOOPBACK,
        env={"KALIKO_POD_NAME": "policy-demo/nginx", "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    ready = json.loads(await asyncio.wait_for(process.stdout.readline(), 20))
    assert ready["ready"] and ready["name"] == "policy-demo/nginx"
    ports = [parse_ports(p)[0] for p in ready["ports"]]
    assert [p.protocol for p in ports] == ["TCP", "UDP"]
    assert all([await connect(LOOPBACK, p.port, p.protocol) for p in ports])
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_probe_matrix_in_process_keeps_pair_order(server: ProbeServer) -> None:
    closed = _free_port(socket.SOCK_STREAM)
    pairs = [
        Pair(None, Target(LOOPBACK, _port(server, "TCP"))),
        Pair(None, Target(LOOPBACK, closed)),
        Pair(None, Target(LOOPBACK, _port(server, "UDP"), "UDP")),
    ]
    assert await probe_matrix(pairs, timeout=1.0) == [
        Result(LOOPBACK, _port(server, "TCP"), "TCP", True),
        Result(LOOPBACK, closed, "TCP", False),
        Result(LOOPBACK, _port(server, "UDP"), "UDP", True),
    ]


async def test_probe_matrix_raises_when_the_source_netns_is_missing() -> None:
    pairs = [Pair("kaliko-no-such-netns", Target(LOOPBACK, 80))]
    with pytest.raises(ProbeRunError, match="kaliko-no-such-netns"):
        await probe_matrix(pairs, timeout=0.5)


def test_netns_command_runs_the_connect_cli_in_the_netns() -> None:
    argv = netns_command("kaliko-pod-1", 1.0, 64)
    assert argv[:4] == ["ip", "netns", "exec", "kaliko-pod-1"]
    assert argv[4:8] == [sys.executable, "-m", "lab.apps.probe", "connect"]


def test_image_table_builds_argv_and_passes_container_ports_on_both_protocols_to_the_probe() -> None:
    assert images.command("kaliko/probe", [], ports=[(80, "tcp"), (53, "UDP")], python="py") == [
        "py", "-m", "lab.apps.probe", "--ports", "80/TCP,80/UDP,53/TCP,53/UDP",
    ]  # fmt: skip
    assert images.command("kaliko/probe", [], ports=[(53, "UDP"), (53, "TCP")], python="py") == [
        "py", "-m", "lab.apps.probe", "--ports", "53/TCP,53/UDP",
    ]  # fmt: skip
    assert images.command("kaliko/probe", ["--ports=81"], ports=[(80, "TCP")], python="py") == [
        "py", "-m", "lab.apps.probe", "--ports=81",
    ]  # fmt: skip
    assert images.command("kaliko/stars-probe", ["--http-port=80"], ports=[(80, "TCP")], python="py") == [
        "py", "-m", "lab.apps.stars_probe", "--http-port=80",
    ]  # fmt: skip


def test_unknown_image_names_the_field() -> None:
    with pytest.raises(
        images.UnknownImageError, match=r"spec\.containers\[0\]\.image: unknown image 'nginx'"
    ):
        images.command("nginx")
