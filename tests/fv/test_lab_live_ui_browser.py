"""The Stars demo on a live lab, watched in a real browser: the UI draws what the packets do.

Runs `LiveDemo` for Stars (nftables in node namespaces, real stars-probes polling each other
through the data plane, the real management UI in its pod) and opens the UI in Debian's Chromium
through the lab's loopback port-forward (the host never routes to a pod address). After each step
— written, converged, every edge probed for real and as the docs expect — the drawn SVG must show
exactly the step's expected graph (visible services; each edge bold when reachable, faint when
blocked) within the probes' polling delay, and the cluster panel must list the step with its
convergence time. Screenshots go to the test's tmp dir, and to $KALIKO_SCREENSHOTS as
``live-<n>-<step>.png`` if set (committed under docs/screenshots/).
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

pytestmark = [pytest.mark.fv, pytest.mark.netns]

LIVE_BUDGET_MS = 10_000
"""stars-probes poll every 1 s (0.4 s timeout) and the UI every 0.5 s: a change shows within ~2 s."""


async def test_the_live_stars_ui_draws_what_the_packets_do(tmp_path: Path) -> None:
    require_root()
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    demo = load_demo("stars")
    live = LiveDemo(demo, LiveOptions(run_dir=tmp_path / "lab"))
    await asyncio.to_thread(live.__enter__)
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1300, "height": 820})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            for number, step in enumerate(demo.steps, start=1):
                result = await asyncio.to_thread(live.run_step, step)
                wrong = [e for e in result.edges if e.allowed != e.expected]
                assert not wrong, f"{step.name}: probes disagree with the docs: {wrong}"
                if number == 1:
                    url = live.ui_url()
                    assert url is not None and url.startswith("http://127.0.0.1:")
                    await page.goto(url)
                    await page.wait_for_selector('#conn[data-state="live"]', timeout=5000)
                view = demo.expected_ui_graph(step)
                applied = time.monotonic()
                await page.wait_for_function(MATCHES_JS, arg=view, timeout=LIVE_BUDGET_MS)
                drawn_after = time.monotonic() - applied
                row = f'#steps tr[data-step="{step.name}"].current'
                await page.wait_for_selector(row, timeout=LIVE_BUDGET_MS)
                shown = await page.get_attribute(f"{row} td[data-converged]", "data-converged")
                assert shown is not None and float(shown) == round(result.converged_seconds, 3)
                nodes = await page.locator("#cluster-nodes tbody tr").count()
                assert nodes == 2
                shot = tmp_path / f"live-{number}-{step.name}.png"
                await page.screenshot(path=str(shot))
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
