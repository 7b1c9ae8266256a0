"""Commands that make a cache: build-demo and complete-demo, build (fine-tune every task) and import
(published checkpoints, from files or from the Hugging Face hub)."""
from __future__ import annotations

import sys
from pathlib import Path

from .common import UserError, add_ray_option, cache_summary, open_cache, print_summary


def cmd_build_demo(args):
    from ..demo.build import build_demo, diagnostics
    cache = build_demo(args.out, quick=args.quick, device=args.device, recipe_path=args.recipe, ray=args.ray)
    return {**cache_summary(cache), "diagnostics": diagnostics(cache)}


def cmd_complete_demo(args):
    from ..demo.build import recipe
    from ..demo.complete import complete
    steps = recipe(path=args.recipe).get("complete", {})
    if not steps:
        raise UserError(f"the recipe {args.recipe or 'tvexplorer/demo/recipe.json'} has no 'complete' section: nothing to do")
    redo = [m.strip() for m in args.redo.split(",") if m.strip()] if args.redo else []
    cache = open_cache(args.cache)  # written in place, on purpose: this command finishes the shipped demo
    done = complete(cache, steps, args.device, progress=lambda text: print(text, file=sys.stderr, flush=True), redo=redo)
    return {"cache": str(cache.root), "steps": done}


def _print_complete(r: dict) -> None:
    for step, d in r["steps"].items():
        added = ", ".join(d["added"]) if d["added"] else "nothing (already recorded)"
        print(f"{step}: {added} ({d['seconds']:g} s)")
    print(f"{r['cache']} is complete")


def _task_specs(args, spec) -> list[dict]:
    """Data specs of the tasks named by --suite / --tasks / --folder (demo tasks, benchmarks, image folders)."""
    from ..data.benchmarks import benchmark_specs
    from ..data.world import TASKS
    from ..demo.build import demo_task_specs
    if args.suite and args.tasks:
        raise UserError("give either --suite or --tasks, not both")
    tasks = args.suite or args.tasks
    if tasks is None and not args.folder:
        raise UserError("choose the tasks: --suite 8|14|20, --tasks NAME,NAME (benchmarks or 'demo[:task,...]'), or --folder NAME=DIR")
    size = _image_size(args, spec)
    specs = []
    if tasks and (tasks == "demo" or tasks.startswith("demo:")):
        names = tasks.partition(":")[2].split(",") if ":" in tasks else list(TASKS)
        unknown = [n for n in names if n not in TASKS]
        if unknown:
            raise UserError(f"unknown demo task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
        # The demo world draws 24-pixel images; a model of another resolution gets them resized.
        specs = demo_task_specs({"n_train": args.n_train, "n_test": args.n_test, "seed": args.seed, "only": names,
                                 "image_size": size})
    elif tasks:
        from_hub = _data_source(args) == "hf"
        if args.data_root is None and not from_hub:
            raise UserError("real benchmarks need --data-root DIR (the folder that holds, or will hold, the datasets), "
                            "or --data hf to load them from the Hugging Face hub")
        if from_hub:
            from ..data.hubdata import hub_specs
            specs = hub_specs(tasks, args.data_root, size)
        else:
            specs = benchmark_specs(tasks, args.data_root, size, args.download)
    for item in args.folder:
        name, sep, folder = item.partition("=")
        if not sep or not name:
            raise UserError(f"--folder expects NAME=DIR, got {item!r}")
        specs.append({"source": "folder", "name": name, "root": folder, "image_size": size})
    return specs


def _image_size(args, spec) -> int:
    size = spec.model_config(Path(args.out))["vision_cfg"]["image_size"]
    return size[0] if isinstance(size, (list, tuple)) else size


def _data_source(args) -> str:
    """--data, whose default is the hub's datasets for --hub imports and torchvision's formats otherwise."""
    return args.data or ("hf" if getattr(args, "hub", None) else "torchvision")


def cmd_build(args):
    from ..core.device import resolve_device
    from ..models.clip import ModelSpec
    from ..pipeline.build import build_cache
    from ..science.training import FLOAT64_OPTIMIZERS, TrainConfig, default_precision
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
                        n_eval=args.n_eval, n_val=args.n_val, multitask=args.multitask, theory=theory, ray=args.ray)
    return cache_summary(cache)


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


def _import_from_hub(args):
    """import --hub fusionbench: the published fine-tunes of a whole suite, evaluated on the hub's datasets."""
    from ..models import fusionbench
    from ..pipeline.build import import_checkpoints
    given = [flag for flag, value in (("--checkpoint", args.checkpoint), ("--checkpoint-dir", args.checkpoint_dir),
                                      ("--base", args.base), ("--pretrained", args.pretrained), ("--tasks", args.tasks),
                                      ("--folder", args.folder)) if value]
    if given:
        raise UserError(f"--hub {args.hub} chooses the checkpoints, base weights and tasks itself: leave out {', '.join(given)}")
    if args.suite is None:
        raise UserError(f"--hub {args.hub} needs --suite 8|14|20")
    if _data_source(args) != "hf":
        raise UserError(f"--hub {args.hub}: FusionBench's fine-tunes are evaluated on its own hub datasets "
                        "(EMNIST is its letters split): use --data hf, the default with --hub")
    from ..data.hubdata import hub_specs
    spec = fusionbench.model_spec(args.model)
    specs = hub_specs(fusionbench.suite_tasks(args.suite), args.data_root, _image_size(args, spec))
    fetched = fusionbench.download(args.model, args.suite)
    cache = import_checkpoints(args.out, fetched.spec, specs, fetched.checkpoints, base_checkpoint=fetched.base,
                               vector_dtype=args.dtype, device=args.device, n_eval=args.n_eval, n_val=args.n_val)
    return cache_summary(cache)


def cmd_import(args):
    from ..data.sources import task_name
    from ..models.clip import ModelSpec
    from ..pipeline.build import import_checkpoints
    if args.hub:
        return _import_from_hub(args)
    spec = ModelSpec(args.model, args.pretrained)
    specs = _task_specs(args, spec)
    names = [task_name(s) for s in specs]
    files = _checkpoint_files(args, names)
    unknown = sorted(set(files) - set(names))
    if unknown:
        raise UserError(f"--checkpoint names task(s) {', '.join(unknown)} that are not among the tasks ({', '.join(names)})")
    cache = import_checkpoints(args.out, spec, specs, files, base_checkpoint=Path(args.base) if args.base else None,
                               vector_dtype=args.dtype, device=args.device, n_eval=args.n_eval, n_val=args.n_val,
                               ray=args.ray)
    return cache_summary(cache)


def register(command) -> None:
    from ..core.cache import DTYPES
    from ..models.fusionbench import HUBS
    from ..core.training import OPTIMIZERS, PRECISIONS, TrainConfig
    d = TrainConfig()
    c = command("build-demo", cmd_build_demo, print_summary, "build the demo world (tiny CLIP, tasks, cache, ATM rounds) from nothing")
    c.add_argument("--out", required=True)
    c.add_argument("--quick", action="store_true", help="a miniature world for tests (about a minute)")
    c.add_argument("--recipe", default=None, help="a recipe file like tvexplorer/demo/recipe.json (default: that one)")
    add_ray_option(c)
    c = command("complete-demo", cmd_complete_demo, _print_complete,
                "finish a built demo in place with the recipe's last steps: RegMean's Grams, every method's row of the "
                "results table, tuned coefficients (what it holds already is kept)")
    c.add_argument("cache", help="the demo cache folder, written in place (e.g. assets/demo)")
    c.add_argument("--redo", default=None, metavar="M1,M2",
                   help="table rows to compute again although recorded (methods whose definition changed, e.g. magmax)")
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
        c.add_argument("--data", choices=["torchvision", "hf"], default=None,
                       help="where benchmarks come from: torchvision's formats under --data-root, or the Hugging Face "
                            "datasets FusionBench uses (hf; local copies under --data-root when given); default: "
                            "hf with --hub, else torchvision")
        c.add_argument("--n-eval", type=int, default=1000, help="test images kept per task for evaluation (seeded subset)")
        c.add_argument("--n-val", type=int, default=500, help="validation images kept per task (seeded subset)")
        c.add_argument("--n-train", type=int, default=2500, help="demo tasks only: training images per task")
        c.add_argument("--n-test", type=int, default=250, help="demo tasks only: test images per task")
        c.add_argument("--seed", type=int, default=d.seed)
        c.add_argument("--dtype", choices=list(DTYPES), default="float32", help="storage dtype of the task vectors")
        add_ray_option(c)

    c = command("build", cmd_build, print_summary,
                "fine-tune every task from a base model and write a cache (resumes an interrupted build)")
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
    c = command("import", cmd_import, print_summary, "make a cache from published fine-tuned image encoders instead of fine-tuning")
    tasks_and_data(c)
    c.add_argument("--checkpoint", nargs="*", default=[], metavar="TASK=PATH",
                   help="a task-arithmetic .pt, an open_clip state dict, or a Hugging Face CLIPVisionModel file")
    c.add_argument("--checkpoint-dir", default=None,
                   help="folder with TASK/finetuned.pt, TASK/model.safetensors, TASK/pytorch_model.bin or TASK.pt per task")
    c.add_argument("--base", default=None, help="theta0 from a checkpoint file (e.g. zeroshot.pt) instead of the pretrained model")
    c.add_argument("--hub", choices=HUBS, default=None,
                   help="fetch a published suite of fine-tunes from the Hugging Face hub instead (with --model and --suite)")
