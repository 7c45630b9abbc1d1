"""The cluster panel's data: demo-step convergence times and node status, as pushed by the demo runner.

Owns the `POST /api/cluster` document and its validation

    {"step": "default-deny", "converged_seconds": 0.84,
     "nodes": [{"name": "node-1", "ready": true, "revision": 42}]}

and `ClusterBoard`, the pure store that turns a sequence of such reports into the panel's
document (`{"steps": [...], "nodes": [...], "current_step": ...}`). It does not own HTTP
(`server`) nor who pushes (the demo runner, via `client.push_cluster_report`).

Invariants: a report is validated whole before anything changes; a step keeps the position of
its first report and takes the latest values; `nodes` omitted (null) keeps the previous nodes,
`nodes: []` clears them; `reported_at` comes from the caller's clock.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class NodeStatus(BaseModel):
    """One cluster node as the demo runner sees it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    ready: bool
    revision: int | None = Field(default=None, ge=0)


class ClusterReport(BaseModel):
    """One push from the demo runner: a step's convergence time and/or the nodes' status."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: str | None = Field(default=None, min_length=1)
    converged_seconds: float | None = Field(default=None, ge=0)
    nodes: list[NodeStatus] | None = None


class ClusterReportError(ValueError):
    """A report failed validation; `problems` lists `field.path: reason` strings."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _path(location: tuple[int | str, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(document)"


def parse_report(body: bytes | str) -> ClusterReport:
    """Validate a JSON body (strictly: no "true" for true) or raise `ClusterReportError` naming each field."""
    try:
        return ClusterReport.model_validate_json(body, strict=True)
    except ValidationError as error:
        raise ClusterReportError([f"{_path(e['loc'])}: {e['msg']}" for e in error.errors()]) from None


class ClusterBoard:
    """The panel's state: every step reported so far (in first-report order) and the latest nodes."""

    def __init__(self) -> None:
        self._steps: dict[str, dict[str, Any]] = {}
        self._nodes: list[dict[str, Any]] = []
        self._current: str | None = None

    def apply(self, report: ClusterReport, now: float) -> dict[str, Any]:
        """Fold one validated report in; return the new panel document."""
        if report.step is not None:
            self._steps[report.step] = {
                "step": report.step,
                "converged_seconds": report.converged_seconds,
                "reported_at": now,
            }
            self._current = report.step
        if report.nodes is not None:
            self._nodes = [node.model_dump() for node in report.nodes]
        return self.document()

    def document(self) -> dict[str, Any]:
        """The document served at GET /api/cluster and streamed as the SSE `cluster` event."""
        steps = list(self._steps.values())
        return {"steps": steps, "nodes": list(self._nodes), "current_step": self._current}
