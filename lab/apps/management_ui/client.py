"""The demo runner's side of the cluster panel: push a report to a running management UI.

Owns `push_cluster_report`, a single HTTP POST to `/api/cluster`. It does not own the report's
validation (`cluster`, which the UI applies again) nor when reports are sent (the demo runner).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from lab.apps.management_ui.cluster import ClusterReport, NodeStatus

JSON_HEADERS = {"Content-Type": "application/json"}


class ClusterPushError(RuntimeError):
    """The UI refused the report or could not be reached."""


async def push_cluster_report(
    base_url: str,
    step: str | None = None,
    converged_seconds: float | None = None,
    nodes: Sequence[NodeStatus | Mapping[str, Any]] | None = None,
    timeout: float = 2.0,
) -> dict[str, Any]:
    """POST one report to `<base_url>/api/cluster`; return the UI's panel document.

    The report is validated here first (a `pydantic.ValidationError` names the bad field), so a
    malformed report never leaves the runner.
    """
    report = ClusterReport(
        step=step,
        converged_seconds=converged_seconds,
        nodes=None if nodes is None else [NodeStatus.model_validate(node) for node in nodes],
    )
    url = base_url.rstrip("/") + "/api/cluster"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(url, data=report.model_dump_json(), headers=JSON_HEADERS) as resp,
        ):
            body = await resp.json()
            if resp.status != 200:
                raise ClusterPushError(f"{url}: HTTP {resp.status}: {body}")
            return dict(body)
    except (aiohttp.ClientError, TimeoutError) as error:
        raise ClusterPushError(f"{url}: {type(error).__name__}: {error}") from error
