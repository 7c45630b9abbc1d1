"""Command line of kaliko/management-ui: parse arguments, serve, poll, stop on SIGTERM.

Owns process wiring only; the behaviour is in `lab.apps.management_ui.server`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from lab.apps.httpkit import start_site
from lab.apps.management_ui.graph import parse_targets
from lab.apps.management_ui.server import DEFAULT_INTERVAL, DEFAULT_PORT, DEFAULT_TIMEOUT, ManagementUI

DEFAULT_TARGETS = (
    "B=http://backend.stars:6379/status,F=http://frontend.stars:80/status,C=http://client.client:9000/status"
)


async def serve(ui: ManagementUI, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve the UI and poll the probes until `stop` is set."""
    runner, bound = await start_site(ui.app(), host, port)
    print(f"kaliko/management-ui serving on {host}:{bound}", flush=True)
    poller = asyncio.create_task(ui.run())
    try:
        await stop.wait()
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        await runner.cleanup()


async def _main(ui: ManagementUI, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(ui, host, port, stop)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kaliko/management-ui", description="The Stars demo's UI.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="HTTP port (default 9001)")
    parser.add_argument("--targets", default=DEFAULT_TARGETS, help="ID=STATUS_URL,... of the stars-probes")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, help="seconds between polls")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per probe fetch")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default: all)")
    args = parser.parse_args(argv)
    try:
        targets = parse_targets(args.targets)
    except ValueError as error:
        parser.error(str(error))
    if args.interval <= 0 or args.timeout <= 0:
        parser.error("--interval and --timeout must be > 0")
    asyncio.run(_main(ManagementUI(targets, args.interval, args.timeout), args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
