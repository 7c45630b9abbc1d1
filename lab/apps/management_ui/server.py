"""The management UI's server: polls the stars-probes, keeps the graph and cluster panel, streams both.

    stars-probes --GET /status every interval--> ManagementUI.run() --build_graph--> Hub "graph"
    demo runner  --POST /api/cluster-----------> ClusterBoard ------------------> Hub "cluster"
    Hub --SSE /events (graph, cluster)--> browsers;  GET /api/graph, GET /api/cluster: latest values

Owns the poll loop (one task; it alone writes the "graph" topic), the aiohttp routes and the page's
static files. It does not own the graph rule (`graph`), the report format (`cluster`) or the
fan-out (`hub`).

Invariants: each poll fetches every probe in parallel over fresh connections with a timeout
shorter than the interval, so a change in reachability reaches the browsers within
`interval + timeout` plus the probes' own delay; SSE clients get the current value of each topic
on connect, then only changes; shutdown ends every SSE stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web

from lab.apps.httpkit import fetch, fresh_connection_session
from lab.apps.management_ui.cluster import ClusterBoard, ClusterReportError, parse_report
from lab.apps.management_ui.graph import ProbeTarget, Reading, build_graph
from lab.apps.management_ui.hub import Hub

DEFAULT_PORT = 9001
DEFAULT_INTERVAL = 0.5
DEFAULT_TIMEOUT = 0.4
KEEPALIVE_SECONDS = 15.0
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
STATIC_FILES = {"/": ("index.html", "text/html"), "/app.js": ("app.js", "text/javascript"),
                "/style.css": ("style.css", "text/css")}  # fmt: skip


def sse_frame(topic: str, value: Any) -> bytes:
    """One server-sent event: `event: <topic>` and the value as one line of JSON."""
    return f"event: {topic}\ndata: {json.dumps(value, separators=(',', ':'))}\n\n".encode()


class ManagementUI:
    """The UI's state and behaviour; `run()` polls, `app()` serves."""

    def __init__(
        self,
        targets: Sequence[ProbeTarget],
        interval: float = DEFAULT_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.targets = list(targets)
        self.interval = interval
        self.timeout = timeout
        self._clock = clock
        self.hub = Hub()
        self.board = ClusterBoard()
        self.hub.publish("graph", build_graph(self.targets, {}))
        self.hub.publish("cluster", self.board.document())

    async def poll_once(self, session: aiohttp.ClientSession) -> None:
        """Fetch every probe's /status in parallel and publish the resulting graph."""
        answers = await asyncio.gather(*(fetch(session, target.url) for target in self.targets))
        readings = {t.id: Reading.from_http(*answer) for t, answer in zip(self.targets, answers, strict=True)}
        self.hub.publish("graph", build_graph(self.targets, readings))

    async def run(self) -> None:
        """Poll forever, one round every `interval` seconds (until cancelled)."""
        loop = asyncio.get_running_loop()
        async with fresh_connection_session(self.timeout) as session:
            while True:
                started = loop.time()
                await self.poll_once(session)
                await asyncio.sleep(max(0.0, started + self.interval - loop.time()))

    def app(self) -> web.Application:
        """The aiohttp application: the page, the JSON API and the SSE stream."""
        app = web.Application()
        for path, (name, content_type) in STATIC_FILES.items():
            app.router.add_get(path, _static(name, content_type))
        app.router.add_get("/api/graph", self._get_graph)
        app.router.add_get("/api/cluster", self._get_cluster)
        app.router.add_post("/api/cluster", self._post_cluster)
        app.router.add_get("/events", self._events)

        async def end_streams(_: web.Application) -> None:
            self.hub.close()

        app.on_shutdown.append(end_streams)
        return app

    async def _get_graph(self, _: web.Request) -> web.Response:
        return web.json_response(self.hub.latest("graph"))

    async def _get_cluster(self, _: web.Request) -> web.Response:
        return web.json_response(self.hub.latest("cluster"))

    async def _post_cluster(self, request: web.Request) -> web.Response:
        try:
            report = parse_report(await request.read())
        except ClusterReportError as error:
            problems = {"error": "invalid cluster report", "problems": error.problems}
            return web.json_response(problems, status=400)
        document = self.board.apply(report, self._clock())
        self.hub.publish("cluster", document)
        return web.json_response(document)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        with self.hub.subscribe() as subscription:
            try:
                await response.write(b"retry: 1000\n\n")
                while True:
                    try:
                        async with asyncio.timeout(KEEPALIVE_SECONDS):
                            item = await subscription.next()
                    except TimeoutError:
                        await response.write(b": keepalive\n\n")
                        continue
                    if item is None:
                        break
                    await response.write(sse_frame(*item))
            except ConnectionError:
                pass
        return response


def _static(name: str, content_type: str) -> Callable[[web.Request], Any]:
    body = resources.files("lab.apps.management_ui").joinpath(name).read_bytes()

    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, charset="utf-8")

    return handler
