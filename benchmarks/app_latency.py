"""Slider release -> numbers on screen, in a real browser, on a cache (default: the shipped demo).

    python benchmarks/app_latency.py [--cache assets/demo] [--releases 9] [--plan cpu-basic] [--screenshot FILE]

Starts `python app.py` in its own process on a free local port, laid out as on a Space (app.py in a folder
of its own, with the evaluation plan beside it when --plan names a CPU flavor: pipeline/evalplan.py,
timed here), drives Debian's Chromium through Playwright, releases a task slider at several positions
and prints, per release, the time from pointer-up to the status line showing
- the first-order preview ("◔", task arithmetic and averaging only),
- the first exact number ("◑ Exact 1/N", or everything at once),
- every exact number ("✓ Up to date"),
with their medians, and the app process's peak resident memory (VmHWM). With --overlap each release comes
0.3 s after the last one's preview, while its exact evaluation still runs: the preview times show whether
the page answers meanwhile, and no release but the last should reach "✓ Up to date" (a superseded
evaluation stops at its next task and shows nothing more).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the app tests' helpers; tvexplorer itself is installed (requirements-dev.txt)

import apphelpers  # noqa: E402  (turns gradio analytics off first)
from playwright.sync_api import sync_playwright  # noqa: E402
from test_app_browser import ARGS, CHROMIUM, UP_TO_DATE  # noqa: E402

from tvexplorer.core.cache import Cache  # noqa: E402
from tvexplorer.pipeline import evalplan  # noqa: E402

# Per release: milliseconds from pointer-up to the first status line of each kind.
MILESTONES_JS = """() => {
  window.__releases = [];
  document.addEventListener('pointerup', () => { window.__releases.push({t: performance.now()}); }, true);
  const status = document.querySelector('#merge-status');
  const kinds = [['preview', '◔'], ['first_exact', '◑'], ['up_to_date', '✓']];
  new MutationObserver(() => {
    const r = window.__releases[window.__releases.length - 1];
    if (!r) return;
    const text = status.innerText.trim();
    for (const [name, mark] of kinds) {
      if (text.startsWith(mark) && r[name] === undefined) r[name] = performance.now() - r.t;
    }
    if (text.startsWith('✓') && r.first_exact === undefined) r.first_exact = r.up_to_date;
  }).observe(status, {subtree: true, childList: true, characterData: true});
}"""
PREVIEWED_JS = "() => { const r = window.__releases; return r.length && r[r.length - 1].preview !== undefined; }"
SETTLED_JS = "() => { const r = window.__releases; return r.length && r[r.length - 1].up_to_date !== undefined; }"
POSITIONS = [0.2, 1.6, -0.4, 0.8, 1.2, 0.0, 1.9, 0.5, -0.8]


def peak_memory_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default=str(ROOT / "assets" / "demo"))
    p.add_argument("--releases", type=int, default=9)
    p.add_argument("--plan", default=None, choices=sorted(evalplan.SPACE_CPUS),
                   help="plan the exact evaluation for this CPU flavor (timed here) and serve with its vCPUs as threads")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the app (default: the flavor's vCPUs, else 2)")
    p.add_argument("--overlap", action="store_true", help="release again while the last release's exact evaluation runs")
    p.add_argument("--screenshot", default=None)
    args = p.parse_args()
    cache = Cache.open(args.cache)
    threads = args.threads or evalplan.SPACE_CPUS.get(args.plan, 2)
    with tempfile.TemporaryDirectory(prefix="tvexplorer-latency-") as folder:
        releases, task, header, memory, plan = measure(args, cache, threads, Path(folder))
    summary = {name: round(statistics.median(r[name] for r in releases)) for name in ("preview", "first_exact", "up_to_date")
               if all(name in r for r in releases)}
    if args.overlap:
        summary["last_up_to_date"] = round(releases[-1]["up_to_date"])
        summary["earlier_releases_shown_up_to_date"] = sum("up_to_date" in r for r in releases[:-1])
    print(json.dumps({"cache": args.cache, "task": task, "threads": threads, "releases": len(releases),
                      "plan": plan.describe() if plan else None, "header": header.splitlines()[-1],
                      "median_ms": summary, "app_peak_memory_mib": memory,
                      "all_ms": [{k: round(v) for k, v in r.items() if k != "t"} for r in releases]}, indent=1))


def measure(args, cache: Cache, threads: int, folder: Path):
    """(releases, task, header, peak memory, plan) of the app served from `folder`."""
    plan = None
    if args.plan:
        plan = evalplan.plan_evaluation(cache, args.plan)
        (folder / evalplan.PLAN_FILE).write_text(evalplan.plan_text(plan))
    with apphelpers.app_process(args.cache, folder, "--device", "cpu", env={"OMP_NUM_THREADS": str(threads)}) as (url, server):
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(180_000)
            page.goto(url)
            page.wait_for_function(UP_TO_DATE)
            header = page.locator("h1").first.evaluate("h => h.parentElement.innerText")
            page.evaluate(MILESTONES_JS)
            task = cache.tasks[1]
            track = page.locator(f"#coef-{task} input[type=range]").bounding_box()
            y = track["y"] + track["height"] / 2
            x_of = lambda v: track["x"] + (v + 1) / 3 * track["width"]  # the slider spans [-1, 2]
            current = 1.0
            for i in range(args.releases):
                target = POSITIONS[i % len(POSITIONS)] + 0.01 * (i // len(POSITIONS))
                page.mouse.move(x_of(current), y)
                page.mouse.down()
                page.mouse.move(x_of(target), y, steps=5)
                page.mouse.up()
                page.wait_for_function(PREVIEWED_JS if args.overlap else SETTLED_JS)
                page.wait_for_timeout(300 if args.overlap else 200)
                current = target
            page.wait_for_function(SETTLED_JS)
            releases = page.evaluate("window.__releases")
            if args.screenshot:
                page.screenshot(path=args.screenshot, full_page=False)
            browser.close()
        memory = peak_memory_mib(server.pid)
    return releases, task, header, memory, plan

if __name__ == "__main__":
    main()
