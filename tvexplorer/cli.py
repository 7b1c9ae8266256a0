"""`python -m tvexplorer`: build caches, inspect them, evaluate merges, analyse alignment, run ATM.

Every command prints a readable summary, or JSON with --json. Bad input ends with one line on
stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

from tqdm.auto import tqdm

from .cache import Cache, CacheError

EXIT_BAD_INPUT = 2


class UserError(Exception):
    """Bad input from the command line, reported as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        raise UserError(f"{self.prog}: {message} (see --help)")


def _key_value(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UserError(f"expected NAME=VALUE, got {text!r}")
    try:
        number = float(value)
    except ValueError:
        raise UserError(f"{key}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise UserError(f"{key}: {value} is not a finite number")
    return key, number


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}"


def _table(rows: list[list], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), *(line(r) for r in rows)])


# ------------------------------------------------------------------ commands

def cmd_build_demo(args):
    from .demo.build import build_demo
    cache = build_demo(args.out, quick=args.quick, device=args.device)
    return _info(cache)


def cmd_build(args):
    from .build import build_cache
    from .demo.build import demo_task_specs
    from .demo.world import TASKS
    from .models import ModelSpec
    from .training import TrainConfig
    source, _, names = args.tasks.partition(":")
    if source != "demo":
        raise UserError(f"--tasks {args.tasks!r}: this version builds from the demo world only ('demo' or 'demo:name,name')")
    names = names.split(",") if names else list(TASKS)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise UserError(f"unknown demo task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    cfg = TrainConfig(optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, batch_size=args.batch_size,
                      epochs=args.epochs, grad_clip=args.grad_clip, seed=args.seed)
    specs = demo_task_specs({"n_train": args.n_train, "n_test": args.n_test, "seed": args.seed, "only": names})
    cache = build_cache(args.out, ModelSpec(args.model, args.pretrained), specs, cfg, vector_dtype=args.dtype, device=args.device)
    return _info(cache)


def _info(cache: Cache) -> dict:
    m = cache.metrics
    return {
        "cache": str(cache.root),
        "model": cache.manifest["model"]["name"],
        "parameters": cache.layout.numel,
        "training": cache.training,
        "tasks": {t: {"classes": len(cache.task(t)["classnames"]), "zero_shot": m["zero_shot"][t],
                      "finetuned": m["finetuned"][t], "one_epoch": m["one_epoch"][t]} for t in cache.tasks},
        "averages": {k: m[f"{k}_average"] for k in ("zero_shot", "finetuned", "one_epoch", "task_arithmetic", "task_arithmetic_one_epoch")},
        "task_arithmetic_best_scaling": m["task_arithmetic"]["best_scaling"],
        "atm": {v: [{"round": r["round"], "average": r["average"]} for r in run["rounds"]] for v, run in cache.atm_runs().items()},
    }


def cmd_info(args):
    cache = Cache.open(args.cache)
    if args.verify:
        cache.verify()
    return _info(cache)


def _print_info(info: dict) -> None:
    print(f"{info['cache']}: {info['model']}, {info['parameters']:,} image-encoder parameters, {len(info['tasks'])} tasks")
    rows = [[t, v["classes"], _pct(v["zero_shot"]), _pct(v["one_epoch"]), _pct(v["finetuned"])] for t, v in info["tasks"].items()]
    a = info["averages"]
    rows.append(["average", "", _pct(a["zero_shot"]), _pct(a["one_epoch"]), _pct(a["finetuned"])])
    print(_table(rows, ["task", "classes", "zero-shot %", "1 epoch %", "fine-tuned %"]))
    print(f"task arithmetic (scaling {info['task_arithmetic_best_scaling']} chosen on validation): {_pct(a['task_arithmetic'])} %"
          f"; with 1-epoch vectors: {_pct(a['task_arithmetic_one_epoch'])} %")
    for variant, rounds in info["atm"].items():
        print(f"ATM {variant}: " + ", ".join(f"round {r['round']} {_pct(r['average'])} %" for r in rounds))


def cmd_eval(args):
    from .evaluation import Evaluator
    cache = Cache.open(args.cache)
    coefficients = dict(_key_value(c) for c in args.coef)
    params = dict(_key_value(p) for p in args.param)
    result = Evaluator(cache, device=args.device).evaluate(args.method, coefficients=coefficients, scaling=args.scaling,
                                                            vectors=args.vectors, **params)
    return {"method": args.method, "scaling": args.scaling, "coefficients": coefficients, "params": params,
            "vectors": args.vectors, **result.to_json(),
            "zero_shot": cache.metrics["zero_shot"], "finetuned": cache.metrics["finetuned"]}


def _print_eval(r: dict) -> None:
    rows = [[t, _pct(r["zero_shot"][t]), _pct(a), _pct(r["finetuned"][t]), _pct(r["normalized"][t])] for t, a in r["accuracy"].items()]
    rows.append(["average", "", _pct(r["average"]), "", _pct(r["normalized_average"])])
    print(f"{r['method']} over {r['vectors']} vectors")
    print(_table(rows, ["task", "zero-shot %", "merged %", "fine-tuned %", "normalized %"]))


def cmd_align(args):
    from .alignment import task_alignment
    cache = Cache.open(args.cache)
    tasks = [args.task] if args.task else cache.tasks
    for t in tasks:
        if t not in cache.tasks:
            raise UserError(f"unknown task {t!r}; this cache has: {', '.join(cache.tasks)}")
    return {"optimizer": cache.training["optimizer"], "lr": cache.training["lr"],
            "tasks": {t: task_alignment(cache, t) for t in tasks}}


def _print_align(r: dict) -> None:
    print(f"fine-tuned with {r['optimizer']}, lr {r['lr']}; full-batch check tau1 = -lr*g0 is exact only under 'gd'")
    rows = [[t, f"{a['cos_tau_neg_g0']:.3f}", f"{a['cos_tau1_neg_g0']:.3f}", f"{a['cos_tau1_tau']:.3f}",
             f"{a['epochs'][0]['norm_share']:.2f}", f"{a['full_batch_rel_err']:.2e}"] for t, a in r["tasks"].items()]
    print(_table(rows, ["task", "cos(tau,-g0)", "cos(tau1,-g0)", "cos(tau1,tau)", "epoch-1 norm share", "|tau1+lr g0|/|lr g0|"]))
    for t, a in r["tasks"].items():
        print(f"{t}: per epoch cos(update,-g0) " + " ".join(f"{e['cos_update_neg_g0']:+.2f}" for e in a["epochs"])
              + " | norm share " + " ".join(f"{e['norm_share']:.2f}" for e in a["epochs"]))


def cmd_atm(args):
    from .atm import run_atm
    cache = Cache.open(args.cache)
    bar = None

    def progress(done, total, what):
        nonlocal bar
        bar = bar or tqdm(total=total, file=sys.stderr, leave=False)  # opened on the first step, after validation
        bar.set_description(what)
        bar.update(done - bar.n)

    try:
        run_atm(cache, args.rounds, variant=args.variant, coefficient=args.coefficient, device=args.device, progress=progress)
    finally:
        if bar:
            bar.close()
    run = cache.atm_runs()[args.variant]
    return {"variant": args.variant, "coefficient": run["coefficient"],
            "task_arithmetic_average": cache.metrics["task_arithmetic_average"],
            "rounds": [{k: r[k] for k in ("round", "accuracy", "average", "normalized_average")} for r in run["rounds"]]}


def _print_atm(r: dict) -> None:
    print(f"ATM {r['variant']} (coefficient {r['coefficient']:.4g}); task arithmetic: {_pct(r['task_arithmetic_average'])} %")
    tasks = list(r["rounds"][0]["accuracy"]) if r["rounds"] else []
    rows = [[x["round"], *(_pct(x["accuracy"][t]) for t in tasks), _pct(x["average"])] for x in r["rounds"]]
    print(_table(rows, ["round", *tasks, "average"]))


COMMANDS = {
    "build-demo": (cmd_build_demo, _print_info),
    "build": (cmd_build, _print_info),
    "info": (cmd_info, _print_info),
    "eval": (cmd_eval, _print_eval),
    "align": (cmd_align, _print_align),
    "atm": (cmd_atm, _print_atm),
}


def parser() -> argparse.ArgumentParser:
    from .atm import VARIANTS
    from .cache import DTYPES
    from .merging import METHODS
    from .training import OPTIMIZERS, TrainConfig
    p = _Parser(prog="tvexplorer", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name, help_):
        c = sub.add_parser(name, help=help_, description=help_)
        c.add_argument("--json", action="store_true", help="print JSON instead of a summary")
        c.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
        return c

    c = command("build-demo", "build the demo world (tiny CLIP, tasks, cache, ATM rounds) from nothing")
    c.add_argument("--out", required=True)
    c.add_argument("--quick", action="store_true", help="a miniature world for tests (about a minute)")
    c = command("build", "fine-tune every task from a base model and write a cache")
    c.add_argument("--out", required=True)
    c.add_argument("--model", required=True, help="open_clip name (ViT-B-32), local-dir:PATH or hf-hub:ORG/REPO")
    c.add_argument("--pretrained", default=None, help="pretrained tag for a built-in model name (e.g. openai)")
    c.add_argument("--tasks", default="demo", help="'demo' or 'demo:task,task'")
    d = TrainConfig()
    c.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    for name in ("lr", "weight_decay", "grad_clip"):
        c.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    for name in ("batch_size", "epochs", "seed"):
        c.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    c.add_argument("--n-train", type=int, default=2500)
    c.add_argument("--n-test", type=int, default=250)
    c.add_argument("--dtype", choices=list(DTYPES), default="float32", help="storage dtype of the task vectors")
    c = command("info", "tasks with zero-shot and fine-tuned accuracies, task arithmetic and ATM")
    c.add_argument("cache")
    c.add_argument("--verify", action="store_true", help="check every file's sha256 now")
    c = command("eval", "merge the task vectors with a method and evaluate exactly")
    c.add_argument("cache")
    c.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)}")
    c.add_argument("--scaling", type=float, default=None, help="global scaling (default: the method's own)")
    c.add_argument("--coef", nargs="*", default=[], metavar="TASK=VALUE", help="per-task coefficients (default 1)")
    c.add_argument("--param", nargs="*", default=[], metavar="NAME=VALUE", help="method parameters, e.g. k=20 or p=0.5")
    c.add_argument("--vectors", choices=["tau", "tau1"], default="tau", help="full or 1-epoch task vectors")
    c = command("align", "first-epoch gradient against the task vectors, per epoch")
    c.add_argument("cache")
    c.add_argument("--task", default=None)
    c = command("atm", "run more rounds of ATM (alternating tuning and merging), saving each")
    c.add_argument("cache")
    c.add_argument("--rounds", type=int, required=True, help="how many more rounds to run")
    c.add_argument("--variant", choices=list(VARIANTS), default="standard")
    c.add_argument("--coefficient", type=float, default=None, help="merge coefficient of a new run (default 1/T)")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        if getattr(args, "scaling", None) is not None and not math.isfinite(args.scaling):
            raise UserError(f"--scaling {args.scaling} is not a finite number")
        run, show = COMMANDS[args.command]
        result = run(args)
    except (UserError, CacheError, ValueError, KeyError, FileNotFoundError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; finished work was saved", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        show(result)
    return 0
