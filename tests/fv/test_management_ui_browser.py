"""The management UI in a real browser (Debian's Chromium through Playwright), fed by scripted probes.

Walks the Stars demo's steps from `lab/demos/stars/steps.yaml`: for each step the scripted
stars-probes are set to the connectivity the docs describe, and the drawn SVG must match within
2 s: the services the UI may reach are drawn (`g.node[data-service]`), the others are absent;
each edge is bold when reachable and faint when blocked. A screenshot of each step is saved to
the test's tmp dir (and to $KALIKO_SCREENSHOTS if set).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from lab.apps.httpkit import start_site
from lab.apps.management_ui.client import push_cluster_report
from lab.apps.management_ui.scripted import ScriptedProbes
from lab.apps.management_ui.server import ManagementUI
from lab.demos.catalog import load_demo

pytestmark = pytest.mark.fv

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
UPDATE_BUDGET_MS = 2000

# True once the SVG shows exactly `expected`: the visible nodes, and each edge with its style.
MATCHES_JS = """
(expected) => {
  const drawn = [...document.querySelectorAll('#nodes g.node')].map(g => g.dataset.service).sort();
  if (JSON.stringify(drawn) !== JSON.stringify([...expected.visible].sort())) return false;
  const paths = [...document.querySelectorAll('#edges path.edge')];
  if (paths.length !== expected.edges.length) return false;
  return expected.edges.every(e => {
    const p = document.querySelector(`#edges path.edge[data-from="${e.from}"][data-to="${e.to}"]`);
    return p && p.dataset.reachable === String(e.reachable)
      && p.classList.contains(e.reachable ? 'reachable' : 'blocked');
  });
}
"""

STYLES_JS = """
() => [...document.querySelectorAll('#edges path.edge')].map(p => {
  const style = getComputedStyle(p);
  return {from: p.dataset.from, to: p.dataset.to, reachable: p.dataset.reachable === 'true',
          width: parseFloat(style.strokeWidth), opacity: parseFloat(style.opacity), display: style.display};
})
"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def stars_ui() -> AsyncIterator[tuple[ScriptedProbes, str]]:
    names = {"B": "stars/backend", "F": "stars/frontend", "C": "client/client"}
    probes = ScriptedProbes(["B", "F", "C"], watches={"C": ["F", "B"]}, names=names)
    targets = await probes.start()
    ui = ManagementUI(targets, interval=0.2, timeout=0.2)
    runner, port = await start_site(ui.app(), "127.0.0.1", 0)
    poller = asyncio.create_task(ui.run())
    yield probes, f"http://127.0.0.1:{port}"
    poller.cancel()
    await runner.cleanup()
    await probes.close()


def _script(view: dict[str, Any]) -> tuple[dict[tuple[str, str], bool], list[str]]:
    """Scripted-probe settings that produce `view`: reachability per pair, and the hidden services."""
    reachable = {(e["from"], e["to"]): e["reachable"] for e in view["edges"]}
    hidden = [service for service in ("B", "F", "C") if service not in view["visible"]]
    return reachable, hidden


def _save(page_png: Path) -> None:
    target = os.environ.get("KALIKO_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(page_png, Path(target) / page_png.name)


async def _open(browser: Browser, base: str) -> Page:
    page = await browser.new_page(viewport={"width": 1300, "height": 820})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(base + "/")
    await page.wait_for_selector('#conn[data-state="live"]', timeout=5000)
    assert errors == []
    return page


async def test_stars_steps_are_drawn_as_the_docs_describe(
    browser: Browser, stars_ui: tuple[ScriptedProbes, str], tmp_path: Path
) -> None:
    probes, base = stars_ui
    demo = load_demo("stars")
    page = await _open(browser, base)
    for number, step in enumerate(demo.steps, start=1):
        view = demo.expected_ui_graph(step)
        flipped = time.monotonic()
        probes.set(*_script(view))
        await page.wait_for_function(MATCHES_JS, arg=view, timeout=UPDATE_BUDGET_MS)
        elapsed = time.monotonic() - flipped
        assert elapsed < UPDATE_BUDGET_MS / 1000, f"{step.name}: drawn after {elapsed:.2f} s"

        nodes = [{"name": f"node-{i}", "ready": True, "revision": 10 + number} for i in (1, 2)]
        await push_cluster_report(base, step=step.name, converged_seconds=0.1 * number, nodes=nodes)
        await page.wait_for_selector(f'#steps tr[data-step="{step.name}"].current', timeout=UPDATE_BUDGET_MS)

        for service in ("B", "F", "C"):
            drawn = await page.locator(f'#nodes g.node[data-service="{service}"]').count()
            assert drawn == (1 if service in view["visible"] else 0), f"{step.name}: node {service}"
        for edge in await page.evaluate(STYLES_JS):
            if edge["reachable"]:
                assert edge["width"] >= 8 and edge["opacity"] > 0.9, f"{step.name}: bold {edge}"
            else:
                assert edge["width"] <= 4 and edge["opacity"] < 0.3, f"{step.name}: faint {edge}"
        shot = tmp_path / f"stars-{number}-{step.name}.png"
        await page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
        _save(shot)
    rows = await page.locator("#steps tbody tr").count()
    assert rows == len(demo.steps)


async def test_blocked_edges_can_be_hidden_and_node_status_is_listed(
    browser: Browser, stars_ui: tuple[ScriptedProbes, str]
) -> None:
    probes, base = stars_ui
    probes.set({("F", "B"): True, ("B", "F"): False}, hidden=["C"])
    page = await _open(browser, base)
    view = {"visible": ["B", "F"], "edges": [{"from": "B", "to": "F", "reachable": False},
                                             {"from": "F", "to": "B", "reachable": True}]}  # fmt: skip
    await page.wait_for_function(MATCHES_JS, arg=view, timeout=UPDATE_BUDGET_MS)
    assert await page.locator('#services li[data-node-status="C"][data-visible="false"]').count() == 1

    await page.click("#toggle-blocked")
    shown = {(e["from"], e["to"]): e["display"] for e in await page.evaluate(STYLES_JS)}
    assert shown == {("B", "F"): "none", ("F", "B"): "inline"}
    assert await page.get_attribute("#toggle-blocked", "aria-pressed") == "false"

    nodes = [{"name": "node-1", "ready": True, "revision": 41}, {"name": "node-2", "ready": False}]
    await push_cluster_report(base, nodes=nodes)
    await page.wait_for_selector('#cluster-nodes tr[data-node="node-2"][data-ready="false"]', timeout=2000)
    assert await page.locator("#cluster-nodes tbody tr").count() == 2
