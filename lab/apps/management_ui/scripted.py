"""Scripted stars-probes: fake /status servers on loopback whose answers the caller sets.

Owns a stand-in for the three stars-probes when there is no lab: one aiohttp server per id on
an ephemeral loopback port, each answering `GET /status` with the document a real
`kaliko/stars-probe` would serve for the reachability the caller set, or HTTP 503 when the caller
hides it (as if policy blocked the UI). The browser tests and the screenshot tool use it to drive
the management UI through the Stars steps. It does not poll anything or decide any policy.

Invariants: `targets` lists the ids in the order given, with their status URLs; a pair not set
is unreachable; a probe's status lists every other probe it `watches` (default: all others) under
its `names` entry (default `scripted/<id>`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from aiohttp import web

from lab.apps.httpkit import close_after_response, start_site
from lab.apps.management_ui.graph import ProbeTarget


class ScriptedProbes:
    """Fake stars-probes; `set()` changes what their /status says, effective on the next fetch."""

    def __init__(
        self,
        ids: Sequence[str],
        watches: Mapping[str, Sequence[str]] | None = None,
        names: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.ids = list(ids)
        self.names = {i: (names or {}).get(i, f"scripted/{i}") for i in ids}
        self.watches = {i: list((watches or {}).get(i, [j for j in ids if j != i])) for i in ids}
        self.host = host
        self.targets: list[ProbeTarget] = []
        self._runners: list[web.AppRunner] = []
        self._reachable: dict[tuple[str, str], bool] = {}
        self._hidden: set[str] = set()

    async def start(self) -> list[ProbeTarget]:
        """Start one server per id; return the UI's `--targets` (id and status URL)."""
        for probe_id in self.ids:
            app = web.Application(middlewares=[close_after_response])
            app.router.add_get("/status", self._handler(probe_id))
            runner, port = await start_site(app, self.host, 0)
            self._runners.append(runner)
            self.targets.append(ProbeTarget(probe_id, f"http://{self.host}:{port}/status"))
        return self.targets

    def set(self, reachable: Mapping[tuple[str, str], bool], hidden: Iterable[str] = ()) -> None:
        """Say which (from, to) pairs are reachable and which probes the UI cannot fetch."""
        unknown = {i for pair in reachable for i in pair} | set(hidden)
        unknown -= set(self.ids)
        if unknown:
            raise ValueError(f"unknown probe id(s): {', '.join(sorted(unknown))}")
        self._reachable = dict(reachable)
        self._hidden = set(hidden)

    def status(self, probe_id: str) -> dict[str, object]:
        """The /status document `probe_id` serves now."""
        url = {t.id: t.url for t in self.targets}
        targets = [
            {"url": url[other], "reachable": self._reachable.get((probe_id, other), False),
             "checked_at": None, "error": None}
            for other in self.watches[probe_id]
        ]  # fmt: skip
        return {"name": self.names[probe_id], "status": {"targets": targets}}

    def _handler(self, probe_id: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(_: web.Request) -> web.Response:
            if probe_id in self._hidden:
                return web.Response(status=503, text="hidden by script\n")
            return web.json_response(self.status(probe_id))

        return handle

    async def close(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners = []
