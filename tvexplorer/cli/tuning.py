"""`tune`: merge coefficients tuned on validation (per task or per layer), or learned by AdaMerging."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm

from .common import UserError, open_cache, pct, table, writable

OBJECTIVES = ("accuracy", "entropy")


def cmd_tune(args):
    from ..merging import METHODS
    from ..science.tuning import grid_baseline
    if args.method not in METHODS:
        raise UserError(f"unknown merge method {args.method!r}; choose one of: {', '.join(METHODS)}")
    if args.objective == "entropy" and args.method != "task_arithmetic":
        raise UserError("--objective entropy is AdaMerging, which learns task-arithmetic coefficients: "
                        "use --method task_arithmetic (the default)")
    if args.steps is not None and args.steps < (1 if args.objective == "entropy" else 0):
        raise UserError(f"--steps {args.steps}: give a positive number of steps")
    if args.lr is not None and not 0 < args.lr < float("inf"):
        raise UserError(f"--lr {args.lr}: give a positive, finite learning rate")
    cache = writable(open_cache(args.cache))
    bar = None

    def progress(done, total, what):
        nonlocal bar
        bar = bar or tqdm(total=total, file=sys.stderr, leave=False)
        bar.set_description(what[:60])
        bar.update(done - bar.n)

    options = {k: v for k, v in (("steps", args.steps), ("lr", args.lr)) if v is not None}
    try:
        if args.objective == "entropy":
            from ..science.adamerging import adamerging, record_name
            result = adamerging(cache, layer_wise=args.per_layer, device=args.device, progress=progress, **options)
            name = record_name(args.per_layer)
        else:
            from ..science.tuning import record_name, tune
            result = tune(cache, args.method, per_layer=args.per_layer, device=args.device, progress=progress, **options)
            name = record_name(args.method, args.per_layer)
    finally:
        if bar:
            bar.close()
    return {"cache": str(cache.root), "record": name, "tuned": result, "grid_task_arithmetic": grid_baseline(cache),
            "finetuned": cache.manifest.metrics.finetuned, "zero_shot": cache.manifest.metrics.zero_shot}


def _print_tune(r: dict) -> None:
    tuned, grid = r["tuned"], r["grid_task_arithmetic"]
    how = "AdaMerging (entropy on unlabelled test images)" if "entropy" in tuned["objective"] else "tuned on validation"
    shape = "per layer" if tuned.get("per_layer") or tuned.get("layer_wise") else "per task"
    print(f"{tuned['method']} coefficients {shape}, {how}, in {tuned['seconds']:.1f} s on {tuned['device']}")
    tasks = list(tuned["accuracy"])
    rows = [[t, pct(r["zero_shot"][t]), pct(grid["accuracy"][t]), pct(tuned["accuracy"][t]), pct(r["finetuned"][t])]
            for t in tasks]
    print(table(rows, ["task (test)", "zero-shot %", f"grid TA (λ={grid['scaling']:g}) %", "tuned %", "fine-tuned %"]))
    print(table([["grid task arithmetic", pct(grid["val_average"]), pct(grid["average"])],
                 ["tuned", pct(tuned["val_average"]), pct(tuned["average"])]],
                ["average", "validation %", "test %"]))
    if tuned.get("surrogate"):
        s = tuned["surrogate"]
        print(f"surrogate: validation cross-entropy {s['cross_entropy_start']:.4f} -> {s['cross_entropy_end']:.4f}, "
              f"predicted accuracy {pct(s['predicted_val_average_start'])} -> {pct(s['predicted_val_average_end'])} %; "
              f"exact step taken: {s['step_taken']:g} of it")
    if "test_entropy_start" in tuned:
        print(f"entropy over the test images: {tuned['test_entropy_start']:.4f} -> {tuned['test_entropy_end']:.4f}")
    print(f"recorded in {r['cache']}; evaluate again with `eval {r['cache']} --tuned {r['record']}`")


def register(command) -> None:
    from ..merging import METHODS
    c = command("tune", cmd_tune, _print_tune,
                "tune per-task or per-layer merge coefficients on validation, or learn them with AdaMerging")
    c.add_argument("cache", help="cache folder")
    c.add_argument("--method", default="task_arithmetic", help=f"one of {', '.join(METHODS)} (default task_arithmetic)")
    c.add_argument("--per-layer", action="store_true", help="one coefficient per task and layer (default: per task)")
    c.add_argument("--objective", choices=OBJECTIVES, default="accuracy",
                   help="accuracy: validation accuracy via the linearised surrogate and exact search; "
                        "entropy: AdaMerging on unlabelled test images")
    c.add_argument("--steps", type=int, default=None, help="gradient steps (default: 200 surrogate steps; AdaMerging 1000)")
    c.add_argument("--lr", type=float, default=None, help="learning rate (default: 0.02 surrogate; AdaMerging 1e-3)")
