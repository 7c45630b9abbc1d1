"""A TCP port-forward from the host's loopback into a pod, the way ``kubectl port-forward`` does it.

Owns getting a browser on the host to a pod's port without the host ever routing to a pod IP (the
host's root namespace has no route to 198.18.0.0/16: such traffic would leave over eth0). The
design, in two halves:

* the lab binds the listening socket on ``127.0.0.1:<port>`` **in the root namespace** and hands it
  to the forwarder as an inherited file descriptor (`start_forwarder`);
* the forwarder runs **inside the pod's network namespace** (``ip netns exec <pod netns>``) and
  connects each accepted connection to ``127.0.0.1:<target port>`` there, the pod's own loopback.

::

    browser ─▶ 127.0.0.1:P (root netns, fd inherited) ═▶ forwarder (pod netns) ─▶ 127.0.0.1:9001 ─▶ UI

So no packet of the forward crosses a veth or the node's data plane, and no policy can cut the
UI off from the operator (as with kubelet's port-forward). Each direction is copied until EOF and
then half-closed, so long-lived streams (the UI's server-sent events) work. Run it as
``python -m lab.forwarder --listen-fd N --to 127.0.0.1:9001`` (or ``--listen HOST:PORT`` to bind
itself). It prints ``{"ready": true, "listen": ..., "to": ...}`` once it accepts connections.

It does not own which pod is forwarded or when (`lab.node_ports`), nor process records
(`lab.processes`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from lab.processes import ManagedProcess

CHUNK = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def _forward(
    host: str, port: int, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
) -> None:
    try:
        target_r, target_w = await asyncio.open_connection(host, port)
    except OSError:
        client_w.close()
        return
    try:
        await asyncio.gather(_pipe(client_r, target_w), _pipe(target_r, client_w))
    finally:
        for writer in (client_w, target_w):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def serve(listener: socket.socket, host: str, port: int) -> None:
    """Accept on ``listener`` and forward every connection to ``host:port`` until SIGTERM."""
    server = await asyncio.start_server(lambda r, w: _forward(host, port, r, w), sock=listener)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bound = listener.getsockname()
    print(json.dumps({"ready": True, "listen": f"{bound[0]}:{bound[1]}", "to": f"{host}:{port}"}), flush=True)
    async with server:
        await stop.wait()


def _address(text: str, flag: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{flag}: {text!r} is not HOST:PORT")
    return host, int(port)


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP listener on ``host:port`` in the calling process's network namespace."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


def forwarder_argv(listen_fd: int, target_port: int, python: str = sys.executable) -> list[str]:
    """What runs inside the pod's netns (this is also its /proc cmdline once `ip netns exec` execs it)."""
    return [python, "-m", "lab.forwarder", "--listen-fd", str(listen_fd), "--to", f"127.0.0.1:{target_port}"]


def start_forwarder(
    name: str, netns: str, target_port: int, log: Path, *, listen_port: int = 0
) -> ManagedProcess:
    """Bind ``127.0.0.1:listen_port`` here (root netns) and start the forwarder in ``netns`` on it.

    ``listen_port`` 0 picks a free port; if the wanted port is taken, a free one is used instead.
    The bound port is the returned process's ``ports["listen"]``.
    """
    try:
        sock = listening_socket("127.0.0.1", listen_port)
    except OSError:
        sock = listening_socket("127.0.0.1", 0)
    argv = forwarder_argv(sock.fileno(), target_port)
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(log, "ab") as out:
            child = subprocess.Popen(
                ["ip", "netns", "exec", netns, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(sock.fileno(),),
            )
        port = int(sock.getsockname()[1])
    finally:
        sock.close()
    return ManagedProcess(name, argv, str(log), pid=child.pid, ports={"listen": port})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.forwarder", description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen-fd", type=int, help="an inherited listening socket (from start_forwarder)")
    where.add_argument("--listen", type=lambda t: _address(t, "--listen"), help="HOST:PORT to bind here")
    parser.add_argument("--to", required=True, type=lambda t: _address(t, "--to"), help="HOST:PORT to reach")
    args = parser.parse_args(argv)
    if args.listen_fd is not None:
        listener = socket.socket(fileno=args.listen_fd)
    else:
        listener = listening_socket(*args.listen)
    asyncio.run(serve(listener, *args.to))
    return 0


if __name__ == "__main__":
    sys.exit(main())
