"""Commands that read a cache: info, preview, eval and align."""
from __future__ import annotations

import functools

from .common import UserError, cache_summary, key_value, layer_key_value, open_cache, pct, print_summary, table, writable


def cmd_info(args):
    cache = open_cache(args.cache)
    if args.verify:
        cache.verify()
    return cache_summary(cache)


def cmd_preview(args):
    from ..pipeline.build import add_preview
    from ..science.preview import Preview
    cache = writable(open_cache(args.cache))
    add_preview(cache, args.device)
    return {"cache": str(cache.root), "preview": cache.manifest.preview.to_json(), "note": Preview.open(cache).error_note()}


def _print_preview(r: dict) -> None:
    print(f"{r['cache']}: instant preview stored for {', '.join(r['preview']['kinds'])} vectors")
    rows = [[c["setting"], pct(c["preview_average"]), pct(c["exact_average"]), pct(c["max_abs_diff"]), c["worst_task"]]
            for c in r["preview"]["checks"]]
    print(table(rows, ["setting", "preview %", "exact %", "largest task difference (points)", "on"]))


def cmd_eval(args):
    from ..science.evaluation import Evaluator
    cache = open_cache(args.cache)
    coefficients = dict(key_value(c) for c in args.coef)
    layer_coefficients: dict[str, dict[str, float]] = {}
    for task, layer, value in map(layer_key_value, args.layer_coef):
        layer_coefficients.setdefault(task, {})[layer] = value
    params = dict(key_value(p) for p in args.param)
    method, scaling = args.method, args.scaling
    if args.tuned:
        if method or coefficients or layer_coefficients or scaling is not None:
            raise UserError("--tuned NAME gives the method, scaling and coefficients: leave out --method, --scaling, "
                            "--coef and --layer-coef")
        tuned = cache.manifest.tuned(args.tuned)
        method, scaling = tuned.method, tuned.scaling
        coefficients, layer_coefficients = tuned.coefficients or {}, tuned.layer_coefficients or {}
    elif not method:
        raise UserError("give --method M (or --tuned NAME for coefficients recorded by `tune`)")
    # data a method needs and the cache lacks (RegMean's Grams) is saved where the cache may be written
    evaluator = Evaluator(cache, device=args.device, store=functools.partial(writable, cache))
    result = evaluator.evaluate(method, coefficients=coefficients, scaling=scaling, vectors=args.vectors,
                                layer_coefficients=layer_coefficients, **params)
    return {"method": method, "scaling": scaling, "coefficients": coefficients, "layer_coefficients": layer_coefficients,
            "params": params, "vectors": args.vectors, **result.to_json(),
            "zero_shot": cache.manifest.metrics.zero_shot, "finetuned": cache.manifest.metrics.finetuned}


def _print_eval(r: dict) -> None:
    rows = [[t, pct(r["zero_shot"][t]), pct(a), pct(r["finetuned"][t]), pct(r["normalized"][t])] for t, a in r["accuracy"].items()]
    rows.append(["average", "", pct(r["average"]), "", pct(r["normalized_average"])])
    print(f"{r['method']} over {r['vectors']} vectors")
    print(table(rows, ["task", "zero-shot %", "merged %", "fine-tuned %", "normalized %"]))


def cmd_align(args):
    from ..science.alignment import task_alignment
    cache = open_cache(args.cache)
    if not cache.has_gradient_record:
        raise UserError(f"{args.cache} was imported from fine-tuned checkpoints and has no gradient record (tau1, g0); "
                        "build a cache by fine-tuning (`build`) to analyse alignment")
    tasks = [args.task] if args.task else cache.tasks
    for t in tasks:
        if t not in cache.tasks:
            raise UserError(f"unknown task {t!r}; this cache has: {', '.join(cache.tasks)}")
    training = cache.manifest.training  # a cache with a gradient record was built by fine-tuning, so it has one
    return {"optimizer": training.optimizer, "lr": training.lr,
            "tasks": {t: task_alignment(cache, t) for t in tasks}}


def _print_align(r: dict) -> None:
    from ..science.alignment import full_batch_identity_holds
    exact = full_batch_identity_holds(r["optimizer"])
    print(f"fine-tuned with {r['optimizer']}, lr {r['lr']}; " + (
        "tau1 = -lr*g0 holds by construction under 'gd' (the last column shows rounding only)" if exact else
        "its steps are not -lr*g, so tau1 = -lr*g0 is no test here: see the cosines, and `info` for the SGD theory record"))
    rows = [[t, f"{a['cos_tau_neg_g0']:.3f}", f"{a['cos_tau1_neg_g0']:.3f}", f"{a['cos_tau1_tau']:.3f}",
             f"{a['epochs'][0]['norm_share']:.2f}", *([f"{a['full_batch_rel_err']:.2e}"] if exact else [])]
            for t, a in r["tasks"].items()]
    print(table(rows, ["task", "cos(tau,-g0)", "cos(tau1,-g0)", "cos(tau1,tau)", "epoch-1 norm share",
                        *(["|tau1+lr g0|/|lr g0|"] if exact else [])]))
    for t, a in r["tasks"].items():
        print(f"{t}: per epoch cos(update,-g0) " + " ".join(f"{e['cos_update_neg_g0']:+.2f}" for e in a["epochs"])
              + " | norm share " + " ".join(f"{e['norm_share']:.2f}" for e in a["epochs"]))


def register(command) -> None:
    from ..merging import METHODS
    c = command("preview", cmd_preview, _print_preview,
                "(re)compute a cache's instant preview: linearised features at theta0, checked against exact")
    c.add_argument("cache", help="cache folder")
    c = command("info", cmd_info, print_summary, "tasks with zero-shot and fine-tuned accuracies, task arithmetic and ATM")
    c.add_argument("cache", help="cache folder, or hf://datasets/OWNER/NAME[/SUBFOLDER][@REVISION]")
    c.add_argument("--verify", action="store_true", help="check every file's sha256 now")
    c = command("eval", cmd_eval, _print_eval, "merge the task vectors with a method and evaluate exactly")
    c.add_argument("cache", help="cache folder, or hf://datasets/OWNER/NAME[/SUBFOLDER][@REVISION]")
    c.add_argument("--method", default=None, help=f"one of {', '.join(METHODS)}")
    c.add_argument("--scaling", type=float, default=None, help="global scaling (default: the method's own)")
    c.add_argument("--coef", nargs="*", default=[], metavar="TASK=VALUE", help="per-task coefficients (default 1)")
    c.add_argument("--layer-coef", nargs="*", default=[], metavar="TASK:LAYER=VALUE",
                   help="per-layer coefficients (default 1), multiplying the task's; layers: embedding, "
                        "resblocks.0, resblocks.1, ..., final")
    c.add_argument("--tuned", default=None, metavar="NAME",
                   help="the method, scaling and coefficients recorded by `tune`, e.g. task_arithmetic:per_layer "
                        "or adamerging:layer_wise")
    c.add_argument("--param", nargs="*", default=[], metavar="NAME=VALUE", help="method parameters, e.g. k=20 or p=0.5")
    c.add_argument("--vectors", choices=["tau", "tau1"], default="tau", help="full or 1-epoch task vectors")
    c = command("align", cmd_align, _print_align, "first-epoch gradient against the task vectors, per epoch")
    c.add_argument("cache", help="cache folder, or hf://datasets/OWNER/NAME[/SUBFOLDER][@REVISION]")
    c.add_argument("--task", default=None)
