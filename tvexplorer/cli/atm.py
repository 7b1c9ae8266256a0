"""`atm`: more rounds of alternating tuning and merging, each saved as it finishes."""
from __future__ import annotations

import contextlib
import functools
import sys

from tqdm.auto import tqdm

from ..core.manifest import average_key
from .common import add_ray_option, open_cache, pct, table


def cmd_atm(args):
    from ..science.atm import run_atm
    cache = open_cache(args.cache)
    bar = None

    def progress(done, total, what):
        nonlocal bar
        bar = bar or tqdm(total=total, file=sys.stderr, leave=False)  # opened on the first step, after validation
        bar.set_description(what)
        bar.update(done - bar.n)

    try:
        with contextlib.ExitStack() as stack:
            tune_round = None
            if args.ray:
                from ..pipeline import distributed
                stack.enter_context(distributed.cluster(args.ray))
                tune_round = functools.partial(distributed.atm_round, device=args.device)
            records = run_atm(cache, args.rounds, variant=args.variant, coefficient=args.coefficient, device=args.device,
                              progress=progress, tune_round=tune_round)
    finally:
        if bar:
            bar.close()
    run = cache.atm_runs()[args.variant]
    return {"variant": args.variant, "coefficient": run["coefficient"],
            "task_arithmetic_average": cache.metrics[average_key("task_arithmetic")],
            "new_rounds": [r["round"] for r in records],
            "rounds": [{k: r[k] for k in ("round", "accuracy", "average", "normalized_average")} for r in run["rounds"]]}


def _print_atm(r: dict) -> None:
    print(f"ATM {r['variant']} (coefficient {r['coefficient']:.4g}); task arithmetic: {pct(r['task_arithmetic_average'])} %")
    tasks = list(r["rounds"][0]["accuracy"]) if r["rounds"] else []
    rows = [[x["round"], *(pct(x["accuracy"][t]) for t in tasks), pct(x["average"])] for x in r["rounds"]]
    print(table(rows, ["round", *tasks, "average"]))
    print(f"this run saved round(s) {', '.join(map(str, r['new_rounds']))}" if r["new_rounds"] else "this run saved no round")


def register(command) -> None:
    from ..science.atm import VARIANTS
    c = command("atm", cmd_atm, _print_atm, "run more rounds of ATM (alternating tuning and merging), saving each")
    c.add_argument("cache", help="cache folder, or hf://datasets/OWNER/NAME[/SUBFOLDER][@REVISION]")
    c.add_argument("--rounds", type=int, required=True, help="how many more rounds to run")
    c.add_argument("--variant", choices=list(VARIANTS), default="standard")
    c.add_argument("--coefficient", type=float, default=None, help="merge coefficient of a new run (default 1/T)")
    add_ray_option(c)
