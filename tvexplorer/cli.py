"""`python -m tvexplorer`: build caches, inspect them, evaluate merges, analyse alignment, run ATM.

Every command prints a readable summary, or JSON with --json. Bad input ends with one line on
stderr and exit status 2, a file that cannot be written (a full disk) with one line and status 1;
never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm.auto import tqdm

from .core.cache import Cache
from .core.checks import finite
from .core.errors import CacheError
from .core.files import WriteError
from .core.hub import resolve_location
from .core.manifest import average_key

EXIT_WRITE_FAILED = 1
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
        return key, finite(key, value)
    except ValueError:
        raise UserError(f"{key}: {value} is not a finite number") from None


def _finite_scaling(scaling: float) -> None:
    try:
        finite("--scaling", scaling)
    except ValueError:
        raise UserError(f"--scaling {scaling} is not a finite number") from None


def _pct(x: float | None) -> str:
    return "    -" if x is None else f"{100 * x:5.1f}"


def _table(rows: list[list], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), *(line(r) for r in rows)])


# ------------------------------------------------------------------ commands

def cmd_build_demo(args):
    from .demo.build import build_demo, diagnostics
    cache = build_demo(args.out, quick=args.quick, device=args.device, recipe_path=args.recipe)
    return {**_info(cache), "diagnostics": diagnostics(cache)}


def _task_specs(args, spec) -> list[dict]:
    """Data specs of the tasks named by --suite / --tasks / --folder (demo tasks, benchmarks, image folders)."""
    from .data.benchmarks import benchmark_specs
    from .data.world import TASKS
    from .demo.build import demo_task_specs
    if args.suite and args.tasks:
        raise UserError("give either --suite or --tasks, not both")
    tasks = args.suite or args.tasks
    if tasks is None and not args.folder:
        raise UserError("choose the tasks: --suite 8|14|20, --tasks NAME,NAME (benchmarks or 'demo[:task,...]'), or --folder NAME=DIR")
    specs = []
    if tasks and (tasks == "demo" or tasks.startswith("demo:")):
        names = tasks.partition(":")[2].split(",") if ":" in tasks else list(TASKS)
        unknown = [n for n in names if n not in TASKS]
        if unknown:
            raise UserError(f"unknown demo task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
        specs = demo_task_specs({"n_train": args.n_train, "n_test": args.n_test, "seed": args.seed, "only": names})
    elif tasks or args.folder:
        if args.data_root is None:
            raise UserError("real benchmarks need --data-root DIR (the folder that holds, or will hold, the datasets)")
        size = spec.model_config(Path(args.out))["vision_cfg"]["image_size"]
        size = size[0] if isinstance(size, (list, tuple)) else size
        specs = benchmark_specs(tasks, args.data_root, size, args.download) if tasks else []
        for item in args.folder:
            name, sep, folder = item.partition("=")
            if not sep or not name:
                raise UserError(f"--folder expects NAME=DIR, got {item!r}")
            specs.append({"source": "folder", "name": name, "root": folder, "image_size": size})
    return specs


def cmd_build(args):
    from .core.device import resolve_device
    from .models.clip import ModelSpec
    from .pipeline.build import build_cache
    from .science.training import FLOAT64_OPTIMIZERS, TrainConfig, default_precision
    spec = ModelSpec(args.model, args.pretrained)
    precision = default_precision(resolve_device(args.device)) if args.precision == "auto" else args.precision
    cfg = TrainConfig(optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, batch_size=args.batch_size,
                      epochs=args.epochs, grad_clip=args.grad_clip, seed=args.seed,
                      precision="float32" if args.optimizer in FLOAT64_OPTIMIZERS else precision)
    theory = None
    if args.theory_tasks:
        theory = {"tasks": args.theory_tasks, "lrs": args.theory_lrs, "epochs": args.theory_epochs,
                  "n_train": args.theory_n_train, "batch_size": args.theory_batch_size}
    cache = build_cache(args.out, spec, _task_specs(args, spec), cfg, vector_dtype=args.dtype, device=args.device,
                        n_eval=args.n_eval, n_val=args.n_val, multitask=args.multitask, theory=theory)
    return _info(cache)


def _checkpoint_files(args, tasks: list[str]) -> dict[str, Path]:
    """TASK=PATH pairs, else each task's file under --checkpoint-dir in the layouts published checkpoints use."""
    files = {}
    for item in args.checkpoint:
        task, sep, path = item.partition("=")
        if not sep or not task:
            raise UserError(f"--checkpoint expects TASK=PATH, got {item!r}")
        files[task] = Path(path)
    if args.checkpoint_dir:
        root = Path(args.checkpoint_dir)
        folders = {p.name.lower(): p for p in root.iterdir()} if root.is_dir() else {}
        for task in tasks:
            if task in files:
                continue
            folder = folders.get(task.lower())
            candidates = [folder / n for n in ("finetuned.pt", "model.safetensors", "pytorch_model.bin")] if folder else []
            candidates += [root / f"{task}.pt", root / f"{task}.safetensors"]
            found = [c for c in candidates if c.is_file()]
            if not found:
                raise UserError(f"no checkpoint for task {task} under {root}: looked for {task}/finetuned.pt, "
                                f"{task}/model.safetensors, {task}/pytorch_model.bin and {task}.pt")
            files[task] = found[0]
    for task, path in files.items():
        if not path.is_file():
            raise UserError(f"checkpoint for task {task}: {path} does not exist")
    return files


def cmd_import(args):
    from .models.clip import ModelSpec
    from .pipeline.build import import_checkpoints
    spec = ModelSpec(args.model, args.pretrained)
    specs = _task_specs(args, spec)
    names = [s.get("dataset") or s.get("name") or s.get("task") for s in specs]
    files = _checkpoint_files(args, names)
    unknown = sorted(set(files) - set(names))
    if unknown:
        raise UserError(f"--checkpoint names task(s) {', '.join(unknown)} that are not among the tasks ({', '.join(names)})")
    cache = import_checkpoints(args.out, spec, specs, files, base_checkpoint=Path(args.base) if args.base else None,
                               vector_dtype=args.dtype, device=args.device, n_eval=args.n_eval, n_val=args.n_val)
    return _info(cache)


def _info(cache: Cache) -> dict:
    from .core.manifest import AVERAGED_METRICS, PER_TASK_METRICS, averages
    m = cache.metrics
    return {
        "cache": str(cache.root),
        "model": cache.manifest["model"]["name"],
        "parameters": cache.layout.numel,
        "training": cache.training,
        "source": cache.manifest.get("source", {"kind": "fine-tuned"}),
        "tasks": {t: {"classes": len(cache.task(t)["classnames"]), **{k: m.get(k, {}).get(t) for k in PER_TASK_METRICS}}
                  for t in cache.tasks},
        "averages": averages(m),
        "task_arithmetic_best_scaling": m["task_arithmetic"]["best_scaling"],
        "best_scalings": {k: m[k]["best_scaling"] for k in AVERAGED_METRICS if isinstance(m.get(k), dict) and "best_scaling" in m[k]},
        "atm": {v: [{"round": r["round"], "average": r["average"]} for r in run["rounds"]] for v, run in cache.atm_runs().items()},
        "theory_slopes": _theory_slopes(cache),
    }


def _theory_slopes(cache: Cache) -> list[dict] | None:
    """Slopes of log relative error against log lr in the cache's SGD record (the theorem says 1)."""
    from .science.theory import error_slopes
    table = cache.theory()
    return None if table is None else error_slopes(table).to_dict("records")


def cmd_info(args):
    cache = Cache.open(resolve_location(args.cache))
    if args.verify:
        cache.verify()
    return _info(cache)


def cmd_preview(args):
    from .pipeline.build import add_preview
    from .science.preview import Preview
    cache = Cache.open(resolve_location(args.cache))
    add_preview(cache, args.device)
    return {"cache": str(cache.root), "preview": cache.manifest["preview"], "note": Preview.open(cache).error_note()}


def _print_preview(r: dict) -> None:
    print(f"{r['cache']}: instant preview stored for {', '.join(r['preview']['kinds'])} vectors")
    rows = [[c["setting"], _pct(c["preview_average"]), _pct(c["exact_average"]), _pct(c["max_abs_diff"]), c["worst_task"]]
            for c in r["preview"]["checks"]]
    print(_table(rows, ["setting", "preview %", "exact %", "largest task difference (points)", "on"]))


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_bench_suite():
    """The benchmark suite, which lives in the source checkout's benchmarks/, not in the installed package."""
    if not (BENCHMARKS / "bench" / "__init__.py").is_file():
        raise UserError(f"bench runs from a source checkout: no {BENCHMARKS / 'bench'}")
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    import bench
    return bench


def cmd_bench(args):
    bench = load_bench_suite()
    only = args.only.split(",") if args.only else None
    unknown = sorted(set(only or ()) - set(bench.SECTIONS))
    if unknown:
        raise UserError(f"--only {args.only!r}: unknown section(s) {', '.join(unknown)}; choose from {', '.join(bench.SECTIONS)}")
    return bench.run(quick=args.quick, only=only, device=args.device, app_cache=args.app_cache)


def _print_bench(result: dict) -> None:
    print(load_bench_suite().format_report(result))


def _print_info(info: dict) -> None:
    from .core.manifest import PER_TASK_METRICS
    print(f"{info['cache']}: {info['model']}, {info['parameters']:,} image-encoder parameters, {len(info['tasks'])} tasks")
    rows = [[t, v["classes"], *(_pct(v[k]) for k in PER_TASK_METRICS)] for t, v in info["tasks"].items()]
    a = info["averages"]
    rows.append(["average", "", *(_pct(a[k]) for k in PER_TASK_METRICS)])
    print(_table(rows, ["task", "classes", "zero-shot %", "linear probe %", "1 epoch %", "fine-tuned %", "multi-task %"]))
    print(f"task arithmetic (scaling {info['task_arithmetic_best_scaling']} chosen on validation): {_pct(a['task_arithmetic'])} %"
          + (f"; with 1-epoch vectors: {_pct(a['task_arithmetic_one_epoch'])} %" if a["task_arithmetic_one_epoch"] is not None
             else "; imported task vectors, no 1-epoch record"))
    others = [f"{k} {_pct(a[k])} % (scaling {info['best_scalings'][k]})" for k in ("ties", "tsv", "iso_c") if a.get(k) is not None]
    if others:
        print("at their best validation scaling: " + ", ".join(others))
    for variant, rounds in info["atm"].items():
        print(f"ATM {variant}: " + ", ".join(f"round {r['round']} {_pct(r['average'])} %" for r in rounds))
    if info.get("theory_slopes"):
        first = [r["slope"] for r in info["theory_slopes"] if r["epoch"] == 1 and r["prediction"] == "sum_of_epoch_gradients"]
        print(f"SGD theory record: slope of log error against log lr after one epoch {min(first):.2f} to {max(first):.2f} (theorem: 1)")
    if "diagnostics" in info:
        d = info["diagnostics"]
        print(_table([[str(v) for v in d.values()]], list(d)))


def cmd_eval(args):
    from .science.evaluation import Evaluator
    cache = Cache.open(resolve_location(args.cache))
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
    from .science.alignment import task_alignment
    cache = Cache.open(resolve_location(args.cache))
    if not cache.has_gradient_record:
        raise UserError(f"{args.cache} was imported from fine-tuned checkpoints and has no gradient record (tau1, g0); "
                        "build a cache by fine-tuning (`build`) to analyse alignment")
    tasks = [args.task] if args.task else cache.tasks
    for t in tasks:
        if t not in cache.tasks:
            raise UserError(f"unknown task {t!r}; this cache has: {', '.join(cache.tasks)}")
    return {"optimizer": cache.training["optimizer"], "lr": cache.training["lr"],
            "tasks": {t: task_alignment(cache, t) for t in tasks}}


def _print_align(r: dict) -> None:
    from .science.alignment import full_batch_identity_holds
    exact = full_batch_identity_holds(r["optimizer"])
    print(f"fine-tuned with {r['optimizer']}, lr {r['lr']}; " + (
        "tau1 = -lr*g0 holds by construction under 'gd' (the last column shows rounding only)" if exact else
        "its steps are not -lr*g, so tau1 = -lr*g0 is no test here: see the cosines, and `info` for the SGD theory record"))
    rows = [[t, f"{a['cos_tau_neg_g0']:.3f}", f"{a['cos_tau1_neg_g0']:.3f}", f"{a['cos_tau1_tau']:.3f}",
             f"{a['epochs'][0]['norm_share']:.2f}", *([f"{a['full_batch_rel_err']:.2e}"] if exact else [])]
            for t, a in r["tasks"].items()]
    print(_table(rows, ["task", "cos(tau,-g0)", "cos(tau1,-g0)", "cos(tau1,tau)", "epoch-1 norm share",
                        *(["|tau1+lr g0|/|lr g0|"] if exact else [])]))
    for t, a in r["tasks"].items():
        print(f"{t}: per epoch cos(update,-g0) " + " ".join(f"{e['cos_update_neg_g0']:+.2f}" for e in a["epochs"])
              + " | norm share " + " ".join(f"{e['norm_share']:.2f}" for e in a["epochs"]))


def cmd_atm(args):
    from .science.atm import run_atm
    cache = Cache.open(resolve_location(args.cache))
    bar = None

    def progress(done, total, what):
        nonlocal bar
        bar = bar or tqdm(total=total, file=sys.stderr, leave=False)  # opened on the first step, after validation
        bar.set_description(what)
        bar.update(done - bar.n)

    try:
        records = run_atm(cache, args.rounds, variant=args.variant, coefficient=args.coefficient, device=args.device,
                          progress=progress)
    finally:
        if bar:
            bar.close()
    run = cache.atm_runs()[args.variant]
    return {"variant": args.variant, "coefficient": run["coefficient"],
            "task_arithmetic_average": cache.metrics[average_key("task_arithmetic")],
            "new_rounds": [r["round"] for r in records],
            "rounds": [{k: r[k] for k in ("round", "accuracy", "average", "normalized_average")} for r in run["rounds"]]}


def _print_atm(r: dict) -> None:
    print(f"ATM {r['variant']} (coefficient {r['coefficient']:.4g}); task arithmetic: {_pct(r['task_arithmetic_average'])} %")
    tasks = list(r["rounds"][0]["accuracy"]) if r["rounds"] else []
    rows = [[x["round"], *(_pct(x["accuracy"][t]) for t in tasks), _pct(x["average"])] for x in r["rounds"]]
    print(_table(rows, ["round", *tasks, "average"]))
    print(f"this run saved round(s) {', '.join(map(str, r['new_rounds']))}" if r["new_rounds"] else "this run saved no round")


COMMANDS = {
    "build-demo": (cmd_build_demo, _print_info),
    "build": (cmd_build, _print_info),
    "import": (cmd_import, _print_info),
    "preview": (cmd_preview, _print_preview),
    "bench": (cmd_bench, _print_bench),
    "info": (cmd_info, _print_info),
    "eval": (cmd_eval, _print_eval),
    "align": (cmd_align, _print_align),
    "atm": (cmd_atm, _print_atm),
}


def parser() -> argparse.ArgumentParser:
    from .core.cache import DTYPES
    from .merging import METHODS
    from .science.atm import VARIANTS
    from .science.training import OPTIMIZERS, PRECISIONS, TrainConfig
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
    c.add_argument("--recipe", default=None, help="a recipe file like tvexplorer/demo/recipe.json (default: that one)")
    def tasks_and_data(c):
        c.add_argument("--out", required=True)
        c.add_argument("--model", required=True, help="open_clip name (ViT-B-32), local-dir:PATH or hf-hub:ORG/REPO")
        c.add_argument("--pretrained", default=None, help="pretrained tag for a built-in model name (e.g. openai)")
        c.add_argument("--suite", choices=["8", "14", "20"], default=None, help="a standard benchmark suite")
        c.add_argument("--tasks", default=None, help="benchmark names (MNIST,SVHN,...), or 'demo' / 'demo:task,task'")
        c.add_argument("--folder", nargs="*", default=[], metavar="NAME=DIR",
                       help="extra tasks from image folders (DIR/train/<class>/*, DIR/test/<class>/*)")
        c.add_argument("--data-root", default=None, help="folder that holds the benchmark datasets")
        c.add_argument("--download", action="store_true", help="let torchvision download datasets that it can")
        c.add_argument("--n-eval", type=int, default=1000, help="test images kept per task for evaluation (seeded subset)")
        c.add_argument("--n-val", type=int, default=500, help="validation images kept per task (seeded subset)")
        c.add_argument("--n-train", type=int, default=2500, help="demo tasks only: training images per task")
        c.add_argument("--n-test", type=int, default=250, help="demo tasks only: test images per task")
        c.add_argument("--seed", type=int, default=d.seed)
        c.add_argument("--dtype", choices=list(DTYPES), default="float32", help="storage dtype of the task vectors")

    d = TrainConfig()
    c = command("build", "fine-tune every task from a base model and write a cache (resumes an interrupted build)")
    tasks_and_data(c)
    c.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    for name in ("lr", "weight_decay", "grad_clip"):
        c.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    for name in ("batch_size", "epochs"):
        c.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    c.add_argument("--precision", choices=["auto", *PRECISIONS], default="auto",
                   help="fine-tuning forward pass: bf16 autocast or float32 (auto: bf16 on a GPU); g0 is always float32")
    c.add_argument("--multitask", action="store_true", help="also fine-tune on all tasks jointly (the multi-task baseline)")
    c.add_argument("--theory-tasks", nargs="*", default=[], metavar="TASK",
                   help="record paper B's SGD test (tvexplorer/science/theory.py) for these tasks")
    c.add_argument("--theory-lrs", nargs="+", type=float, default=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2], metavar="LR")
    c.add_argument("--theory-epochs", type=int, default=3)
    c.add_argument("--theory-n-train", type=int, default=512, help="training images per task in the SGD record")
    c.add_argument("--theory-batch-size", type=int, default=32)
    c = command("import", "make a cache from published fine-tuned image encoders instead of fine-tuning")
    tasks_and_data(c)
    c.add_argument("--checkpoint", nargs="*", default=[], metavar="TASK=PATH",
                   help="a task-arithmetic .pt, an open_clip state dict, or a Hugging Face CLIPVisionModel file")
    c.add_argument("--checkpoint-dir", default=None,
                   help="folder with TASK/finetuned.pt, TASK/model.safetensors, TASK/pytorch_model.bin or TASK.pt per task")
    c.add_argument("--base", default=None, help="theta0 from a checkpoint file (e.g. zeroshot.pt) instead of the pretrained model")
    c = command("preview", "(re)compute a cache's instant preview: linearised features at theta0, checked against exact")
    c.add_argument("cache", help="cache folder")
    c = command("bench", "benchmarks: merging against memory bandwidth and FusionBench, evaluation, opening a cache, the app")
    c.add_argument("--quick", action="store_true", help="a small smoke run (seconds) instead of ViT-B/32 sizes")
    c.add_argument("--only", default=None, help="comma-separated sections: merge, fusionbench, evaluation, cache, app")
    c.add_argument("--app-cache", default=None, help="the cache the app section serves (default: the shipped demo)")
    c = command("info", "tasks with zero-shot and fine-tuned accuracies, task arithmetic and ATM")
    c.add_argument("cache", help="cache folder, or hf://datasets/OWNER/NAME[/SUBFOLDER][@REVISION]")
    c.add_argument("--verify", action="store_true", help="check every file's sha256 now")
    c = command("eval", "merge the task vectors with a method and evaluate exactly")
    c.add_argument("cache", help="cache folder, or hf://datasets/OWNER/NAME[/SUBFOLDER][@REVISION]")
    c.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)}")
    c.add_argument("--scaling", type=float, default=None, help="global scaling (default: the method's own)")
    c.add_argument("--coef", nargs="*", default=[], metavar="TASK=VALUE", help="per-task coefficients (default 1)")
    c.add_argument("--param", nargs="*", default=[], metavar="NAME=VALUE", help="method parameters, e.g. k=20 or p=0.5")
    c.add_argument("--vectors", choices=["tau", "tau1"], default="tau", help="full or 1-epoch task vectors")
    c = command("align", "first-epoch gradient against the task vectors, per epoch")
    c.add_argument("cache", help="cache folder, or hf://datasets/OWNER/NAME[/SUBFOLDER][@REVISION]")
    c.add_argument("--task", default=None)
    c = command("atm", "run more rounds of ATM (alternating tuning and merging), saving each")
    c.add_argument("cache", help="cache folder, or hf://datasets/OWNER/NAME[/SUBFOLDER][@REVISION]")
    c.add_argument("--rounds", type=int, required=True, help="how many more rounds to run")
    c.add_argument("--variant", choices=list(VARIANTS), default="standard")
    c.add_argument("--coefficient", type=float, default=None, help="merge coefficient of a new run (default 1/T)")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        if getattr(args, "scaling", None) is not None:
            _finite_scaling(args.scaling)
        run, show = COMMANDS[args.command]
        result = run(args)
    except WriteError as e:  # not bad input: the disk is full or the folder read-only
        print(f"error: {e}", file=sys.stderr)
        return EXIT_WRITE_FAILED
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
