"""Slider release -> updated numbers in a real browser, on a cache (default: the shipped demo).

    python benchmarks/app_latency.py [--cache assets/demo] [--releases 9] [--screenshot docs/screenshot.png]

Starts the app on a free local port, drives Debian's Chromium through Playwright, releases a task
slider at several positions and prints the median and spread of the time from pointer-up to the
status line saying the numbers are up to date. Optionally saves a screenshot of the page.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the app tests' helpers; tvexplorer itself is installed (requirements-dev.txt)

import apphelpers  # noqa: E402  (turns gradio analytics off first)
from playwright.sync_api import sync_playwright  # noqa: E402
from test_app_browser import ARGS, CHROMIUM, TIMER_JS, UP_TO_DATE  # noqa: E402

from tvexplorer.app import ui  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default=str(ROOT / "assets" / "demo"))
    p.add_argument("--releases", type=int, default=9)
    p.add_argument("--screenshot", default=None)
    args = p.parse_args()
    with apphelpers.running_app(ui.load(args.cache, device="cpu")) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.wait_for_function(UP_TO_DATE)
        task = ui.load(args.cache, device="cpu").ex.tasks[1]
        page.evaluate(TIMER_JS)
        track = page.locator(f"#coef-{task} input[type=range]").bounding_box()
        y = track["y"] + track["height"] / 2
        x_of = lambda v: track["x"] + (v + 1) / 3 * track["width"]  # the slider spans [-1, 2]
        current = 1.0
        for i in range(args.releases):
            target = [0.2, 1.6, -0.4, 0.8, 1.2, 0.0, 1.9, 0.5, -0.8][i % 9] + 0.01 * (i // 9)
            page.mouse.move(x_of(current), y)
            page.mouse.down()
            page.mouse.move(x_of(target), y, steps=5)
            page.mouse.up()
            page.wait_for_function(UP_TO_DATE)
            page.wait_for_timeout(200)
            current = target
        ms = page.evaluate("window.__latencies")
        if args.screenshot:
            page.screenshot(path=args.screenshot, full_page=False)
        browser.close()
    print(json.dumps({"cache": args.cache, "task": task, "releases": len(ms), "median_ms": statistics.median(ms),
                      "min_ms": min(ms), "max_ms": max(ms), "all_ms": [round(x) for x in ms]}))


if __name__ == "__main__":
    main()
