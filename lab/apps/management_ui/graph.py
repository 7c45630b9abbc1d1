"""The Stars graph, computed from the stars-probes' /status documents (pure; no I/O, no clock).

Owns the rule Calico's star-collect draws by: one node per probe whose /status the UI could fetch;
for each target URL listed in node N's `status.targets[]` that equals the status URL of another
visible node M, one edge N -> M whose `reachable` is the target's flag. A probe the UI cannot
fetch is hidden, and so are its edges. It does not own fetching (`server`) nor drawing (`app.js`).

Invariants: the output depends only on the targets and the current readings (never on earlier
readings); nodes keep the order of `--targets`; edges are ordered by (source, target) in that
order; there are no self-edges.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lab.apps.httpkit import check_http_url

Graph = dict[str, Any]


@dataclass(frozen=True)
class ProbeTarget:
    """One stars-probe the UI watches: its id in the graph (`F`) and its status URL."""

    id: str
    url: str


@dataclass(frozen=True)
class Reading:
    """The last fetch of one probe's /status: the parsed document, or why there is none."""

    document: Mapping[str, Any] | None
    error: str | None = None

    @classmethod
    def from_http(cls, status: int | None, body: bytes, error: str | None) -> Reading:
        """Interpret an HTTP answer: only a 200 with a well-formed status document counts."""
        if status is None:
            return cls(None, error or "no answer")
        if status != 200:
            return cls(None, f"HTTP {status}")
        try:
            document = json.loads(body)
        except ValueError:
            return cls(None, "status is not JSON")
        problem = status_problem(document)
        return cls(None, problem) if problem else cls(document)


def status_problem(document: object) -> str | None:
    """Why `document` is not a stars-probe /status document, or None if it is one."""
    if not isinstance(document, dict):
        return "status is not a JSON object"
    status = document.get("status")
    targets = status.get("targets") if isinstance(status, dict) else None
    if not isinstance(targets, list):
        return "status.targets is missing or not a list"
    for index, target in enumerate(targets):
        if not isinstance(target, dict) or not isinstance(target.get("url"), str):
            return f"status.targets[{index}].url is missing"
        if not isinstance(target.get("reachable"), bool):
            return f"status.targets[{index}].reachable is not a boolean"
    return None


def parse_targets(text: str) -> list[ProbeTarget]:
    """Parse `F=http://frontend.stars:80/status,B=...`; errors name the item and the reason."""
    targets: list[ProbeTarget] = []
    for index, item in enumerate(part.strip() for part in text.split(",") if part.strip()):
        field = f"--targets[{index}]"
        node_id, sep, url = item.partition("=")
        node_id = node_id.strip()
        if not sep or not node_id:
            raise ValueError(f"{field}: {item!r} is not ID=URL")
        if any(t.id == node_id for t in targets):
            raise ValueError(f"{field}: id {node_id!r} is used twice")
        targets.append(ProbeTarget(node_id, check_http_url(url.strip(), field)))
    return targets


def build_graph(targets: Sequence[ProbeTarget], readings: Mapping[str, Reading]) -> Graph:
    """The graph document served at /api/graph and streamed as the SSE `graph` event."""
    visible = {t.id: readings[t.id].document for t in targets if t.id in readings and readings[t.id].document}
    by_url = {t.url: t.id for t in targets if t.id in visible}
    nodes = []
    for target in targets:
        document = visible.get(target.id)
        reading = readings.get(target.id)
        nodes.append(
            {
                "id": target.id,
                "url": target.url,
                "visible": document is not None,
                "name": document.get("name") if document else None,
                "error": None if document else (reading.error if reading else "not polled yet"),
            }
        )
    edges = []
    for target in targets:
        document = visible.get(target.id)
        if not document:
            continue
        reachable = {t["url"]: t["reachable"] for t in document["status"]["targets"]}
        for other in targets:
            if other.id != target.id and other.url in reachable and other.url in by_url:
                edges.append({"from": target.id, "to": other.id, "reachable": reachable[other.url]})
    return {"nodes": nodes, "edges": edges}
