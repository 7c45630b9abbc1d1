"""The Stars demo on a live lab, watched in a real browser: the UI draws what the packets do.

Runs `LiveDemo` for Stars (nftables in node namespaces, real stars-probes polling each other
through the data plane, the real management UI in its pod) and opens the UI in Debian's Chromium
at the UI Service's NodePort on the host's loopback (http://127.0.0.1:30002/ unless another lab
holds it; the host never routes to a pod address). After each policy step is written and has
converged, the drawn SVG must show exactly the step's expected graph (visible services; each edge
bold when reachable, faint when blocked) within 2 s (`UPDATE_BUDGET`); then every edge is probed
for real and must be what the docs expect, and the cluster panel must list the step with its
convergence time and each node's status. Screenshots go to the test's tmp dir, and to
$KALIKO_SCREENSHOTS as ``live-<n>-<step>.png`` if set (committed under docs/screenshots/).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest
from live_lab_support import require_root
from playwright.async_api import async_playwright
from test_management_ui_browser import CHROMIUM, CHROMIUM_ARGS, MATCHES_JS

from lab.demos.catalog import load_demo
from lab.live_demo import LiveDemo, LiveOptions
from lab.processes import port_open

pytestmark = [pytest.mark.fv, pytest.mark.netns]

CALICO_NODE_PORT = 30002
"""The management UI Service's nodePort in Calico's manifest (and lab/demos/stars)."""
FIRST_BUDGET_MS = 15_000
"""Step 1: the pods have just started and the page is opened only now."""
UPDATE_BUDGET = 2.0
"""A policy change shows within 2 s of converging (stars-probes poll every 0.5 s, the UI every 0.5 s)."""


async def test_the_live_stars_ui_draws_what_the_packets_do(tmp_path: Path) -> None:
    require_root()
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    demo = load_demo("stars")
    calicos_port_free = not port_open("127.0.0.1", CALICO_NODE_PORT)
    live = LiveDemo(demo, LiveOptions(run_dir=tmp_path / "lab"))
    await asyncio.to_thread(live.__enter__)
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1300, "height": 820})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            for number, step in enumerate(demo.steps, start=1):
                written = await asyncio.to_thread(live.apply_step, step)
                converged = time.monotonic()
                if number == 1:
                    url = live.ui_url()
                    assert url is not None and url.startswith("http://127.0.0.1:")
                    if calicos_port_free:  # else another lab's UI holds it and ours took a free port
                        assert url == f"http://127.0.0.1:{CALICO_NODE_PORT}/"
                    await page.goto(url)
                    await page.wait_for_selector('#conn[data-state="live"]', timeout=5000)
                view = demo.expected_ui_graph(step)
                budget = FIRST_BUDGET_MS if number == 1 else UPDATE_BUDGET * 1000
                await page.wait_for_function(MATCHES_JS, arg=view, timeout=budget, polling=50)
                drawn_after = time.monotonic() - converged
                result = await asyncio.to_thread(live.probe_step, step, written)
                wrong = [e for e in result.edges if e.allowed != e.expected]
                assert not wrong, f"{step.name}: probes disagree with the docs: {wrong}"
                row = f'#steps tr[data-step="{step.name}"].current'
                await page.wait_for_selector(row, timeout=5000)
                shown = await page.get_attribute(f"{row} td[data-converged]", "data-converged")
                assert shown is not None and float(shown) == round(result.converged_seconds, 3)
                ready = page.locator('#cluster-nodes tbody tr[data-ready="true"]')
                assert await ready.count() == 2
                await page.wait_for_function(MATCHES_JS, arg=view, timeout=5000)  # still so
                shot = tmp_path / f"live-{number}-{step.name}.png"
                await page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                target = os.environ.get("KALIKO_SCREENSHOTS")
                if target:
                    Path(target).mkdir(parents=True, exist_ok=True)
                    shutil.copy(shot, Path(target) / shot.name)
                print(
                    f"{step.name}: converged {result.converged_seconds:.3f}s, drawn {drawn_after:.2f}s later"
                )
            assert errors == []
            await browser.close()
    finally:
        await asyncio.to_thread(live.__exit__)
