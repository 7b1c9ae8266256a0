"""`atm`: more rounds of alternating tuning and merging, each saved as it finishes."""
from __future__ import annotations

import contextlib
import functools
import sys

from tqdm.auto import tqdm

from .common import add_ray_option, open_cache, pct, table


def cmd_atm(args):
    from ..science.atm import new_settings, run_atm
    from ..science.atm_report import atm_report
    settings = new_settings(args.variant, alpha=args.alpha, alpha_rule=args.alpha_rule, weighting=args.weighting,
                            budget_epochs=args.budget, optimizer=args.optimizer, lr=args.lr)
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
            records = run_atm(cache, args.rounds, variant=args.variant, settings=settings, device=args.device,
                              progress=progress, tune_round=tune_round)
    finally:
        if bar:
            bar.close()
    run = atm_report(cache)["runs"][args.variant]
    return {"variant": args.variant, "description": run["description"], "settings": run["settings"],
            "task_arithmetic_average": cache.manifest.metrics.average("task_arithmetic"), "gap_closed": run["gap_closed"],
            "new_rounds": [r["round"] for r in records],
            "rounds": [{k: r[k] for k in ("round", "budget", "alpha", "accuracy", "average", "normalized_average", "mean_abs_cosine")}
                       for r in run["rounds"]]}


def _print_atm(r: dict) -> None:
    print(f"ATM {r['variant']}, {r['description']}; task arithmetic: {pct(r['task_arithmetic_average'])} %")
    tasks = list(r["rounds"][0]["accuracy"]) if r["rounds"] else []
    rows = [[x["round"], f"{x['budget']:.2f}", f"{x['alpha']:.3g}", *(pct(x["accuracy"][t]) for t in tasks), pct(x["average"])]
            for x in r["rounds"]]
    print(table(rows, ["round", "budget (x fine-tuning)", "alpha", *tasks, "average"]))
    if r["gap_closed"]:
        print("share of the task arithmetic -> fine-tuned gap closed: "
              + ", ".join(f"{v:.2f} at round {k}" for k, v in r["gap_closed"].items()))
    print(f"this run saved round(s) {', '.join(map(str, r['new_rounds']))}" if r["new_rounds"] else "this run saved no round")


def register(command) -> None:
    from ..science.atm import ALPHA_RULES, ROUND_OPTIMIZERS, VARIANTS, WEIGHTINGS
    c = command("atm", cmd_atm, _print_atm, "run more rounds of ATM (alternating tuning and merging), saving each")
    c.add_argument("cache", help="cache folder, or hf://datasets/OWNER/NAME[/SUBFOLDER][@REVISION]")
    c.add_argument("--rounds", type=int, required=True, help="how many more rounds to run")
    c.add_argument("--variant", choices=list(VARIANTS), default="standard")
    new = "of a new run (an existing run keeps its own)"
    c.add_argument("--alpha", type=float, default=None, help=f"merge coefficient {new}; default 1/T, the paper's")
    c.add_argument("--alpha-rule", choices=ALPHA_RULES, default=None,
                   help=f"fixed (the paper's) or line_search on validation (tvexplorer's extension), {new}")
    c.add_argument("--weighting", choices=WEIGHTINGS, default=None,
                   help=f"uniform (the paper's) or loss: each task's update weighted by its validation loss, {new}")
    c.add_argument("--budget", type=float, default=None, help=f"epochs of training per task and round {new} (default 1)")
    c.add_argument("--optimizer", choices=ROUND_OPTIMIZERS, default=None, help=f"the rounds' optimizer {new}")
    c.add_argument("--lr", type=float, default=None, help=f"the rounds' learning rate {new} (default: fine-tuning's)")
    add_ray_option(c)
