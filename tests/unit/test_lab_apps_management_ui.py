"""kaliko/management-ui on loopback: the graph rule, the hub, the cluster panel, /api/graph and SSE."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from lab.apps.httpkit import start_site
from lab.apps.management_ui.client import ClusterPushError, push_cluster_report
from lab.apps.management_ui.cluster import ClusterBoard, ClusterReportError, parse_report
from lab.apps.management_ui.graph import ProbeTarget, Reading, build_graph, parse_targets
from lab.apps.management_ui.hub import Hub
from lab.apps.management_ui.scripted import ScriptedProbes
from lab.apps.management_ui.server import ManagementUI

TARGETS = [
    ProbeTarget("B", "http://backend.stars:6379/status"),
    ProbeTarget("F", "http://frontend.stars:80/status"),
    ProbeTarget("C", "http://client.client:9000/status"),
]
ALL = (
    "http://frontend.stars:80/status",
    "http://backend.stars:6379/status",
    "http://client.client:9000/status",
)


def _doc(name: str, reachable: dict[str, bool]) -> Reading:
    return Reading(
        {"name": name, "status": {"targets": [{"url": u, "reachable": r} for u, r in reachable.items()]}}
    )


# --- the graph rule -----------------------------------------------------------------------------------


def test_parse_targets_keeps_order_and_names_bad_items() -> None:
    assert parse_targets("F=http://frontend.stars:80/status, B=http://backend.stars:6379/status") == [
        ProbeTarget("F", "http://frontend.stars:80/status"),
        ProbeTarget("B", "http://backend.stars:6379/status"),
    ]
    with pytest.raises(ValueError, match=r"--targets\[1\]: 'http://x/status' is not ID=URL"):
        parse_targets("F=http://frontend.stars:80/status,http://x/status")
    with pytest.raises(ValueError, match=r"--targets\[1\]: id 'F' is used twice"):
        parse_targets("F=http://a:1/status,F=http://b:1/status")
    with pytest.raises(ValueError, match=r"--targets\[0\]: 'ftp://a/status' is not an absolute http"):
        parse_targets("F=ftp://a/status")


def test_full_connectivity_gives_every_edge_but_no_self_edges() -> None:
    everything = dict.fromkeys(ALL, True)
    readings = {
        "B": _doc("stars/backend", everything),
        "F": _doc("stars/frontend", everything),
        "C": _doc("client/client", dict.fromkeys(ALL[:2], True)),
    }
    graph = build_graph(TARGETS, readings)
    assert [(n["id"], n["visible"], n["name"]) for n in graph["nodes"]] == [
        ("B", True, "stars/backend"),
        ("F", True, "stars/frontend"),
        ("C", True, "client/client"),
    ]
    pairs = [("B", "F"), ("B", "C"), ("F", "B"), ("F", "C"), ("C", "B"), ("C", "F")]
    assert [(e["from"], e["to"], e["reachable"]) for e in graph["edges"]] == [(a, b, True) for a, b in pairs]


def test_unreachable_probe_is_hidden_with_its_edges() -> None:
    readings = {
        "B": Reading(None, "timed out"),
        "F": _doc("stars/frontend", {ALL[0]: True, ALL[1]: True, ALL[2]: False}),
        "C": _doc("client/client", {ALL[0]: False, ALL[1]: False}),
    }
    graph = build_graph(TARGETS, readings)
    assert [(n["id"], n["visible"], n["error"]) for n in graph["nodes"]] == [
        ("B", False, "timed out"),
        ("F", True, None),
        ("C", True, None),
    ]
    assert [(e["from"], e["to"], e["reachable"]) for e in graph["edges"]] == [
        ("F", "C", False),
        ("C", "F", False),
    ]


def test_nothing_polled_yet_shows_nothing() -> None:
    graph = build_graph(TARGETS, {})
    assert not any(n["visible"] for n in graph["nodes"]) and graph["edges"] == []
    assert {n["error"] for n in graph["nodes"]} == {"not polled yet"}


@pytest.mark.parametrize(
    ("status", "body", "error", "expected"),
    [
        (None, b"", "timed out", "timed out"),
        (503, b"{}", None, "HTTP 503"),
        (200, b"<html>", None, "status is not JSON"),
        (200, b'{"status": {}}', None, "status.targets is missing or not a list"),
        (
            200,
            b'{"status": {"targets": [{"url": "u", "reachable": "yes"}]}}',
            None,
            "reachable is not a boolean",
        ),
    ],
)
def test_only_a_200_with_a_status_document_counts(
    status: int | None, body: bytes, error: str | None, expected: str
) -> None:
    reading = Reading.from_http(status, body, error)
    assert reading.document is None and reading.error is not None and expected in reading.error


# --- the hub ------------------------------------------------------------------------------------------


async def test_hub_primes_new_subscribers_and_skips_to_the_latest_value() -> None:
    hub = Hub()
    hub.publish("graph", 1)
    with hub.subscribe() as subscription:
        assert await subscription.next() == ("graph", 1)
        assert not hub.publish("graph", 1), "an equal value is not a change"
        for value in (2, 3, 4):
            assert hub.publish("graph", value)
        hub.publish("cluster", "c")
        assert await subscription.next() == ("graph", 4)
        assert await subscription.next() == ("cluster", "c")
        waiting = asyncio.create_task(subscription.next())
        await asyncio.sleep(0)
        assert not waiting.done()
        hub.close()
        assert await waiting is None
    assert hub.subscriber_count == 0


# --- the cluster panel --------------------------------------------------------------------------------


def test_cluster_board_keeps_step_order_and_latest_nodes() -> None:
    board = ClusterBoard()
    nodes = [{"name": "node-1", "ready": True, "revision": 7}]
    board.apply(
        parse_report(json.dumps({"step": "create-apps", "converged_seconds": 0.5, "nodes": nodes})), 10.0
    )
    board.apply(parse_report('{"step": "default-deny", "converged_seconds": null}'), 11.0)
    document = board.apply(parse_report('{"step": "create-apps", "converged_seconds": 0.25}'), 12.0)
    assert document == {
        "steps": [
            {"step": "create-apps", "converged_seconds": 0.25, "reported_at": 12.0},
            {"step": "default-deny", "converged_seconds": None, "reported_at": 11.0},
        ],
        "nodes": nodes,
        "current_step": "create-apps",
    }
    assert board.apply(parse_report('{"nodes": []}'), 13.0)["nodes"] == []


def test_cluster_report_errors_name_every_bad_field() -> None:
    with pytest.raises(ClusterReportError) as caught:
        parse_report(
            '{"step": "", "converged_seconds": -1, "nodes": [{"name": "n", "ready": "yes"}], "x": 1}'
        )
    fields = [problem.split(":")[0] for problem in caught.value.problems]
    assert fields == ["step", "converged_seconds", "nodes[0].ready", "x"]


# --- the server on loopback ---------------------------------------------------------------------------


@pytest.fixture
async def stars() -> AsyncIterator[tuple[ScriptedProbes, str]]:
    probes = ScriptedProbes(["B", "F", "C"], watches={"C": ["F", "B"]})
    targets = await probes.start()
    ui = ManagementUI(targets, interval=0.2, timeout=0.2)
    runner, port = await start_site(ui.app(), "127.0.0.1", 0)
    poller = asyncio.create_task(ui.run())
    yield probes, f"http://127.0.0.1:{port}"
    poller.cancel()
    await runner.cleanup()
    await probes.close()


class SSEReader:
    """Reads `event:`/`data:` frames from an open /events response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next_event(self) -> tuple[str, Any]:
        topic, data = "", ""
        while True:
            line = (await self.response.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                topic = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and topic:
                return topic, json.loads(data)

    async def until(self, topic: str, predicate: Any, timeout: float) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                got, value = await self.next_event()
                if got == topic and predicate(value):
                    return value


def _edges(graph: dict[str, Any]) -> set[tuple[str, str, bool]]:
    return {(e["from"], e["to"], e["reachable"]) for e in graph["edges"]}


def _visible(graph: dict[str, Any]) -> set[str]:
    return {n["id"] for n in graph["nodes"] if n["visible"]}


async def test_api_graph_reflects_the_probes(stars: tuple[ScriptedProbes, str]) -> None:
    probes, base = stars
    probes.set({("F", "B"): True}, hidden=["C"])
    async with aiohttp.ClientSession() as session:
        for _ in range(50):
            async with session.get(f"{base}/api/graph") as response:
                graph = await response.json()
            if _visible(graph) == {"B", "F"}:
                break
            await asyncio.sleep(0.1)  # plain JSON polling, as a script would do; SSE is tested below
    assert _edges(graph) == {("F", "B", True), ("B", "F", False)}
    assert [n["name"] for n in graph["nodes"]] == ["scripted/B", "scripted/F", None]


async def test_sse_streams_a_reachability_flip_within_two_seconds(stars: tuple[ScriptedProbes, str]) -> None:
    probes, base = stars
    probes.set({("F", "B"): True, ("C", "F"): True})
    async with aiohttp.ClientSession() as session, session.get(f"{base}/events") as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = SSEReader(response)
        await events.until("graph", lambda g: ("C", "F", True) in _edges(g), timeout=3)

        flipped = time.monotonic()
        probes.set({("F", "B"): True, ("C", "F"): False, ("C", "B"): True})
        graph = await events.until("graph", lambda g: ("C", "F", False) in _edges(g), timeout=2)
        assert ("C", "B", True) in _edges(graph)
        assert time.monotonic() - flipped < 2.0

        flipped = time.monotonic()
        probes.set({}, hidden=["B", "F", "C"])
        graph = await events.until("graph", lambda g: not _visible(g), timeout=2)
        assert graph["edges"] == [] and time.monotonic() - flipped < 2.0


async def test_cluster_reports_are_validated_stored_and_streamed(stars: tuple[ScriptedProbes, str]) -> None:
    _, base = stars
    async with aiohttp.ClientSession() as session, session.get(f"{base}/events") as response:
        events = SSEReader(response)
        await events.until("cluster", lambda c: c["steps"] == [], timeout=2)
        document = await push_cluster_report(
            base,
            step="allow-ui",
            converged_seconds=0.42,
            nodes=[{"name": "node-1", "ready": True, "revision": 9}],
        )
        assert document["current_step"] == "allow-ui"
        streamed = await events.until("cluster", lambda c: c["steps"] != [], timeout=2)
        assert streamed == document
        assert streamed["nodes"] == [{"name": "node-1", "ready": True, "revision": 9}]

        async with session.post(f"{base}/api/cluster", data=b'{"nodes": [{"ready": true}]}') as bad:
            assert bad.status == 400
            assert (await bad.json())["problems"] == ["nodes[0].name: Field required"]
        async with session.get(f"{base}/api/cluster") as current:
            assert await current.json() == document, "a rejected report changes nothing"


async def test_push_fails_loudly_when_the_ui_is_not_there() -> None:
    with pytest.raises(ClusterPushError, match="api/cluster"):
        await push_cluster_report("http://127.0.0.1:9", step="x", timeout=1.0)


async def test_page_and_assets_are_served_without_external_urls(stars: tuple[ScriptedProbes, str]) -> None:
    _, base = stars
    async with aiohttp.ClientSession() as session:
        for path, kind in (("/", "text/html"), ("/app.js", "text/javascript"), ("/style.css", "text/css")):
            async with session.get(base + path) as response:
                assert response.status == 200 and response.content_type == kind
                text = await response.text()
                assert "https://" not in text and "cdn" not in text.lower(), path


async def test_shutdown_ends_open_event_streams_promptly() -> None:
    ui = ManagementUI(TARGETS[:1], interval=0.2, timeout=0.1)
    runner, port = await start_site(ui.app(), "127.0.0.1", 0)
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/events") as response:
        await SSEReader(response).until("graph", lambda g: True, timeout=2)
        started = time.monotonic()
        await runner.cleanup()
        assert time.monotonic() - started < 2.0
        await asyncio.wait_for(response.content.read(), 2)  # returns only at the end of the stream
        assert response.content.at_eof()
