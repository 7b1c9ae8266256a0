"""The demo's finishing steps, the last part of `build-demo` and, on a cache built before them,
`complete-demo`: what the app would otherwise compute on a first click, recorded once in the cache.

The recipe's "complete" section names them: RegMean's Gram matrices ("grams"), every registry
method's row of the results table at its best validation scaling ("table", `pipeline.table`), and
merge coefficients tuned on validation ("tuning": a list of {method, per_layer}). What the cache
already holds is kept, so running the steps again on a complete cache does nothing.
"""
from __future__ import annotations

import time
from typing import Callable

from ..core.cache import Cache
from ..pipeline.build import log
from ..pipeline.table import check_methods, fill_table
from ..science.grams import add_grams, missing_grams, supports_grams
from ..science.tuning import record_name, tune

STEPS = ("grams", "table", "tuning")


def check_steps(steps: dict) -> dict:
    """The recipe's "complete" section, refused in one line when it names an unknown step."""
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise ValueError(f"the recipe's 'complete' section names unknown step(s) {', '.join(unknown)}; "
                         f"its steps are: {', '.join(STEPS)}")
    for item in steps.get("tuning", []):
        if set(item) != {"method", "per_layer"}:
            raise ValueError(f"each 'tuning' entry of the recipe's 'complete' section is {{\"method\": M, \"per_layer\": "
                             f"true|false}}; got {item!r}")
    return steps


def complete(cache: Cache, steps: dict, device=None, progress: Callable[[str], None] = log, redo: list[str] = ()) -> dict:
    """Run the finishing `steps` on `cache` (written in place); returns {step: what it added, seconds}.
    `redo`: methods whose table rows are computed again although recorded (their definition changed)."""
    check_steps(steps)
    check_methods(list(redo))  # an unknown name is refused before any work
    done = {}

    def timed(step: str, run: Callable[[], object]) -> None:
        start = time.perf_counter()
        added = run()
        done[step] = {"added": added, "seconds": round(time.perf_counter() - start, 1)}

    if steps.get("grams") and supports_grams(cache):
        def grams():
            missing = missing_grams(cache)
            add_grams(cache, device)
            return missing
        timed("grams", grams)
    if steps.get("table"):
        timed("table", lambda: fill_table(cache, device=device, progress=progress, redo=redo))
    for item in steps.get("tuning", []):
        name = record_name(item["method"], item["per_layer"])

        def tuned(item=item, name=name):
            if name in cache.manifest.tuning:
                return []
            progress(f"tuning {name} on validation")
            tune(cache, item["method"], per_layer=item["per_layer"], device=device)
            return [name]
        timed(f"tuning {name}", tuned)
    return done
