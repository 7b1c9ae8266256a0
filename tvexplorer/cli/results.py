"""`table`: the results table, every merge method at its best validation setting beside the references."""
from __future__ import annotations

import sys
import time

from .common import UserError, open_cache, pct, table, writable


def cmd_table(args):
    from ..pipeline.table import check_methods, fill_table, table_rows
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    try:
        methods = check_methods(methods)
    except ValueError as e:
        raise UserError(str(e)) from None
    cache = writable(open_cache(args.cache))
    start = time.perf_counter()
    computed = fill_table(cache, methods, args.device, progress=lambda text: print(text, file=sys.stderr, flush=True))
    return {"cache": str(cache.root), "tasks": cache.tasks, "computed": computed,
            "seconds": round(time.perf_counter() - start, 1), "rows": table_rows(cache, methods)}


def _print_table(r: dict) -> None:
    from ..pipeline.build import SCALING_GRID
    tasks = r["tasks"]
    edge = max(SCALING_GRID)
    rows = [[x["label"], "" if x["best_scaling"] is None else f"{x['best_scaling']:g}" + ("*" if x["best_scaling"] == edge else ""),
             *(pct(x["accuracy"][t]) for t in tasks), pct(x["average"]), pct(x["normalized_average"])] for x in r["rows"]]
    print(table(rows, ["method", "best λ", *tasks, "average", "normalized"]))
    if any(x["best_scaling"] == edge for x in r["rows"]):
        print(f"* at the top of the scaling grid ({edge:g}): that method's best scaling may lie beyond it")
    print("accuracy (%) on the test subsets; λ chosen on validation, method parameters at their defaults; "
          + (f"computed now: {', '.join(r['computed'])} ({r['seconds']:g} s), the rest recorded in {r['cache']}"
             if r["computed"] else f"all recorded in {r['cache']}"))


def register(command) -> None:
    c = command("table", cmd_table, _print_table,
                "every merge method at its best validation scaling beside zero-shot, fine-tuned and multi-task; "
                "computes and records in the cache what is missing")
    c.add_argument("cache", help="cache folder (missing rows are recorded in its manifest; for the shipped demo or a "
                                 "read-only cache, in its work copy)")
    c.add_argument("--methods", default=None, metavar="M1,M2", help="comma-separated merge methods (default: all)")
