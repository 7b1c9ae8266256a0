"""Building a cache: heads, the gradient record, fine-tuning, trajectories and reference metrics.

For each task, from theta0: g0 (exact full-batch gradient of the training loss), then E epochs of
fine-tuning keeping tau1 and tau, then per-epoch statistics. Metrics are measured on the vectors
as stored (after any float16 rounding), so they agree with what the explorer evaluates later.

A build is resumable per task: each finished task's files are written at once and recorded in
OUT/.build/state.json together with the settings they were built with; a rerun with the same
settings skips every recorded task whose files are intact. The manifest is written last, so a
folder without one is never mistaken for a finished cache.

`import_checkpoints` makes the same cache from published fine-tuned image encoders instead of
fine-tuning; such a cache holds tau only (no g0, tau1 or trajectories).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..core.cache import DTYPES, VECTOR_KINDS, Cache
from ..core.device import resolve_device
from ..core.files import atomic_write, sha256_file, write_table, write_tensors, writer_lock
from ..core.layout import Layout
from ..core.manifest import Manifest, write_manifest
from ..core.records import (TUNED_METHODS, Encoder, FileEntry, Metrics, ModelRecord, SplitSizes, TaskRecord,
                            TunedMerge, average_key, mean)
from ..data.sources import load_task
from ..data.splits import TaskData
from ..merging import TaskDeltas
from ..models.clip import ModelSpec, get_flat, load_clip, set_flat, zero_shot_head
from ..science.evaluation import Evaluator
from ..science.grams import add_grams, supports_grams
from ..science.probe import features, probe_accuracy
from ..science.theory import theory_record
from ..science.training import TrainConfig, check_joint_optimizer, prepare, steps_per_epoch
from .tasks import checkpoint_tau, train_jointly, train_task

# Scalings tried on the validation subsets: 0 (theta0 itself) to 1.5, so that a best value at
# either end shows the grid, not the method, is the limit.
SCALING_GRID = tuple(round(0.05 * i, 2) for i in range(0, 31))
STATE = ".build/state.json"
MULTITASK = "multitask.safetensors"
THEORY = "theory.csv"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Start:
    """What every cache begins with: theta0, one zero-shot head per task, and the evaluation subsets."""

    def __init__(self, out: Path, spec: ModelSpec, task_specs: list[dict], n_eval: int | None, n_val: int | None):
        model, tokenizer, self.encoder_info = load_clip(spec, root=out)
        self.data: list[TaskData] = [load_task(s) for s in task_specs]
        self.heads = {d.name: zero_shot_head(model, tokenizer, d.classnames, d.templates) for d in self.data}
        self.logit_scale = float(model.logit_scale.detach().exp())
        self.encoder = model.visual.float()
        del model  # the text tower is not needed past this point
        self.layout = Layout.of(dict(self.encoder.named_parameters()))
        self.theta0 = get_flat(self.encoder)
        self.files = {
            "base.safetensors": write_tensors(out, "base.safetensors", self.layout.unflatten(self.theta0.clone())),
            "heads.safetensors": write_tensors(out, "heads.safetensors", {**self.heads, "logit_scale": torch.tensor([self.logit_scale])}),
        }
        self.out, self.n_eval, self.n_val = out, n_eval, n_val

    def write_eval(self, task: TaskData) -> dict[str, FileEntry]:
        return write_eval(self.out, task, self.n_eval, self.n_val)

    def manifest(self, spec: ModelSpec, task_specs: list[dict], training: TrainConfig | None, vector_dtype: str,
                 vector_kinds: tuple[str, ...], files: dict[str, FileEntry], source: dict) -> Manifest:
        return Manifest(
            created_by=f"tvexplorer {__version__}",
            model=ModelRecord(spec.name, spec.pretrained, self.encoder_info),
            layout=self.layout,
            vector_dtype=vector_dtype,
            vector_kinds=tuple(vector_kinds),
            source=source,
            tasks=tuple(TaskRecord(d.name, tuple(d.classnames), tuple(d.templates), s,
                                   SplitSizes(len(d.train), len(d.val), len(d.test)))
                        for d, s in zip(self.data, task_specs)),
            training=training,
            files={**self.files, **files},
        )


def write_eval(out: Path, task: TaskData, n_eval: int | None, n_val: int | None) -> dict[str, FileEntry]:
    """The fixed evaluation subsets (seeded, at most n_eval test and n_val validation images)."""
    test, val = task.test.take(n_eval), task.val.take(n_val)
    rel = f"eval/{task.name}.safetensors"
    return {rel: write_tensors(out, rel, {"test_images": test.images, "test_labels": test.labels,
                                          "val_images": val.images, "val_labels": val.labels})}


def _finish(out: Path, manifest: Manifest, device, measured: dict | None = None) -> Cache:
    """Reference metrics, the manifest, then the instant preview and RegMean's Gram matrices (a
    finished cache is usable without them).
    `measured`: metrics that the build took along the way (per task), added with their averages."""
    metrics = reference_metrics(Cache(out, manifest), device)
    for key, per_task in (measured or {}).items():
        metrics = metrics.with_per_task(key, per_task)
    write_manifest(out, replace(manifest, metrics=metrics))
    shutil.rmtree(out / ".build", ignore_errors=True)
    log(json.dumps({average_key(k): v for k, v in metrics.averages().items() if v is not None}))
    cache = Cache.open(out)
    add_preview(cache, device)
    if supports_grams(cache):
        add_grams(cache, device)
    return cache


def add_preview(cache: Cache, device) -> None:
    """The instant preview (tvexplorer/science/preview.py) of a finished cache, with a progress bar."""
    from ..science.preview import compute_preview
    with cache.writing(), tqdm(total=len(cache.tasks), desc="preview", unit="task", file=sys.stderr, leave=False) as bar:
        compute_preview(cache, device, progress=lambda done, total, what: bar.update(done - bar.n))


# ------------------------------------------------------------------ resumable per-task progress

class _State:
    """OUT/.build/state.json: the settings of an unfinished build and the tasks it has finished."""

    def __init__(self, out: Path, settings: dict):
        self.out, self.path = out, out / STATE
        self.key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        self.done: dict[str, dict[str, FileEntry]] = {}
        if self.path.is_file():
            saved = json.loads(self.path.read_text())
            if saved["key"] != self.key:
                raise ValueError(f"{out} holds an unfinished build with other settings; rerun with the same settings "
                                 f"to resume it, or delete {out / '.build'} (or choose another --out) to start over")
            self.done = {t: files for t, r in saved["done"].items()
                         if self._intact(files := {rel: FileEntry(**e) for rel, e in r["files"].items()})}

    def _intact(self, files: dict[str, FileEntry]) -> bool:
        return all((self.out / rel).is_file() and sha256_file(self.out / rel) == e.sha256 for rel, e in files.items())

    def record(self, task: str, files: dict[str, FileEntry]) -> None:
        self.done[task] = files
        done = {t: {"files": {rel: e.to_json() for rel, e in files.items()}} for t, files in self.done.items()}
        text = json.dumps({"key": self.key, "done": done}, indent=1)
        atomic_write(self.path, lambda tmp: tmp.write_text(text))


def _holding_writer_lock(build):
    """Hold OUT's writer lock for a whole build: two builds into one folder would mix their files."""
    @functools.wraps(build)
    def locked(out, *args, **kwargs):
        with writer_lock(out):
            return build(out, *args, **kwargs)
    return locked


@_holding_writer_lock
def build_cache(out: Path, spec: ModelSpec, task_specs: list[dict], cfg: TrainConfig, vector_dtype: str = "float32",
                device: str | None = None, n_eval: int | None = None, n_val: int | None = None,
                multitask: bool = False, theory: dict | None = None, ray: str | None = None) -> Cache:
    """Fine-tune every task from `spec` and write a cache to `out`, resuming an interrupted build.

    `multitask` adds the joint fine-tuning baseline (training.finetune_jointly); `theory` (keys
    tasks, lrs, epochs, n_train, batch_size) adds the SGD record of tvexplorer/science/theory.py.
    `ray` ('auto' or a cluster's address): the per-task work (and the baseline) as Ray tasks
    (pipeline/distributed.py); the results, the files and the resume state are the same."""
    out = Path(out)
    if multitask:
        check_joint_optimizer(cfg)
    device_asked, device = device, resolve_device(device)  # Ray workers choose their own device from what was asked
    dtype = DTYPES[vector_dtype]
    state = _State(out, {"model": [spec.name, spec.pretrained], "tasks": task_specs, "training": cfg.to_json(),
                         "vector_dtype": vector_dtype, "n_eval": n_eval, "n_val": n_val, "multitask": multitask,
                         "theory": theory})
    start = _Start(out, spec, task_specs, n_eval, n_val)
    objectives = prepare(start.encoder, start.heads, start.logit_scale, start.encoder_info, cfg, device)
    todo = [(i, d) for i, d in enumerate(start.data) if d.name not in state.done]
    if len(todo) < len(start.data):
        log(f"resuming: {len(start.data) - len(todo)} of {len(start.data)} tasks already built")
    joint = multitask and MULTITASK not in state.done
    save = functools.partial(_save_task, start, state)
    if ray:
        _build_on_ray(ray, start, task_specs, todo, cfg, dtype, device_asked, joint, save)
    else:
        joint_steps = cfg.epochs * sum(-(-len(d.train) // cfg.batch_size) for d in start.data)
        total = sum(-(-len(d.train) // cfg.batch_size) + cfg.epochs * steps_per_epoch(len(d.train), cfg) for _, d in todo)
        with tqdm(total=total + (joint_steps if joint else 0), unit="step", file=sys.stderr, dynamic_ncols=True) as bar:
            for i, task in todo:  # the bar's ETA spans every task left
                bar.set_description(f"[{i + 1}/{len(start.data)}] {task.name}: gradient at theta0, {cfg.epochs} epochs")
                save(task, *train_task(start.encoder, start.layout, start.theta0, objectives[task.name], task, i, cfg,
                                       dtype, on_step=bar.update))
            if joint:
                bar.set_description("multi-task baseline: all tasks jointly")
                save(None, train_jointly(start.encoder, start.theta0, objectives, start.data, cfg, dtype, on_step=bar.update))
    if theory and THEORY not in state.done:
        state.record(THEORY, {THEORY: write_table(out, THEORY, _theory_table(start, theory, device))})
    trajectory = pd.concat([pd.read_csv(out / f".build/{d.name}.trajectory.csv") for d in start.data], ignore_index=True)
    files = {rel: e for done in state.done.values() for rel, e in done.items()}
    files["trajectory.csv"] = write_table(out, "trajectory.csv", trajectory)
    set_flat(start.encoder, start.theta0)
    probe = {d.name: linear_probe(start.encoder, start.encoder_info, d, start.n_eval, device) for d in start.data}
    manifest = start.manifest(spec, task_specs, cfg, vector_dtype, VECTOR_KINDS, files, {"kind": "fine-tuned"})
    return _finish(out, manifest, device, {"linear_probe": probe})


def _save_task(start: _Start, state: _State, task: TaskData | None, vectors, trajectory=None) -> None:
    """A finished task's files (or, for task None, the multi-task baseline's delta), then its record."""
    if task is None:
        state.record(MULTITASK, {MULTITASK: write_tensors(start.out, MULTITASK, {"delta": vectors})})
        return
    rel = f"vectors/{task.name}.safetensors"
    files = {rel: write_tensors(start.out, rel, vectors), **start.write_eval(task)}
    write_table(start.out, f".build/{task.name}.trajectory.csv", trajectory)
    state.record(task.name, files)


def _build_on_ray(address: str, start: _Start, task_specs: list[dict], todo: list, cfg: TrainConfig, dtype,
                  device: str | None, joint: bool, save: Callable) -> None:
    """The serial loop's work as Ray tasks; each result is saved here, on the driver, as it arrives."""
    from .distributed import Base, build_tasks, cluster
    base = Base(start.encoder_info, start.theta0, start.heads, start.logit_scale)
    work = [(i, task_specs[i]) for i, _ in todo]
    with cluster(address):
        results = build_tasks(base, start.layout, work, cfg, dtype, device, task_specs if joint else None)
        for i, result in tqdm(results, total=len(work) + joint, desc="tasks on Ray", unit="task", file=sys.stderr,
                              dynamic_ncols=True):
            if i is None:
                save(None, result)
            else:
                save(start.data[i], *result)


def linear_probe(encoder, info: Encoder, task: TaskData, n_eval: int | None, device) -> float:
    """Linear-probe accuracy of the encoder's features (at theta0) on the task's evaluation subset
    (tvexplorer/science/probe.py)."""
    return probe_accuracy(*features(encoder, task.train, info.mean, info.std, device),
                          *features(encoder, task.test.take(n_eval), info.mean, info.std, device))


def _theory_table(start: _Start, theory: dict, device) -> pd.DataFrame:
    """The SGD record for the chosen tasks, in float64 (the encoder stays float64 afterwards)."""
    cfg = TrainConfig(optimizer="sgd", batch_size=theory["batch_size"])
    objectives = prepare(start.encoder, start.heads, start.logit_scale, start.encoder_info, cfg, device)
    names = [d.name for d in start.data]
    unknown = sorted(set(theory["tasks"]) - set(names))
    if unknown:
        raise ValueError(f"theory record: unknown task(s) {', '.join(unknown)}; choose among {', '.join(names)}")
    tables = []
    for name in tqdm(theory["tasks"], desc="theory record (SGD, float64)", unit="task", file=sys.stderr):
        task = start.data[names.index(name)]
        train = task.train.take(theory["n_train"])
        tables.append(theory_record(start.encoder, start.theta0, objectives[name], train, name, names.index(name),
                                    theory["lrs"], theory["epochs"], theory["batch_size"]))
    return pd.concat(tables, ignore_index=True)


@_holding_writer_lock
def import_checkpoints(out: Path, spec: ModelSpec, task_specs: list[dict], checkpoints: dict[str, Path],
                       base_checkpoint: Path | None = None, vector_dtype: str = "float32", device: str | None = None,
                       n_eval: int | None = None, n_val: int | None = None, ray: str | None = None) -> Cache:
    """A cache of tau = finetuned - theta0 from published fine-tuned image encoders (one file per task).

    theta0 is `spec`'s pretrained image encoder, or `base_checkpoint` (for example the task-arithmetic
    authors' zeroshot.pt) when given; the heads always come from `spec`'s text tower. `ray`: one Ray
    task per checkpoint (each node must see the checkpoint paths)."""
    from ..models.checkpoints import check_against, read_image_encoder
    out = Path(out)
    device = resolve_device(device)
    start = _Start(out, spec, task_specs, n_eval, n_val)
    names = [d.name for d in start.data]
    missing = [d.name for d in start.data if d.name not in checkpoints]
    if missing:
        raise ValueError(f"no checkpoint given for task(s) {', '.join(missing)}; pass TASK=PATH for each")
    base = start.layout.unflatten(start.theta0)
    if base_checkpoint is not None:
        base = read_image_encoder(base_checkpoint)
        check_against(base, dict(zip(start.layout.names, start.layout.shapes)), spec.name)
        start.theta0 = start.layout.flatten(base, dtype=torch.float32)
        start.files["base.safetensors"] = write_tensors(out, "base.safetensors", start.layout.unflatten(start.theta0.clone()))
    convert = (spec.name, DTYPES[vector_dtype])
    per_task = {}
    with contextlib.ExitStack() as stack:
        if ray:
            from .distributed import checkpoint_taus, cluster
            stack.enter_context(cluster(ray))
            taus = checkpoint_taus({d.name: checkpoints[d.name] for d in start.data}, base, start.layout, start.theta0, *convert)
        else:
            taus = ((d.name, checkpoint_tau(checkpoints[d.name], base, start.layout, start.theta0, *convert)) for d in start.data)
        for name, tau in tqdm(taus, total=len(start.data), desc="importing", unit="task", file=sys.stderr):
            rel = f"vectors/{name}.safetensors"
            per_task[name] = {rel: write_tensors(out, rel, {"tau": tau}), **start.write_eval(start.data[names.index(name)])}
    files = {rel: e for d in start.data for rel, e in per_task[d.name].items()}  # task order, however they finished
    source = {"kind": "imported", "checkpoints": {t: str(p) for t, p in checkpoints.items()},
              "base": str(base_checkpoint) if base_checkpoint else None}
    manifest = start.manifest(spec, task_specs, None, vector_dtype, ("tau",), files, source)
    return _finish(out, manifest, device)


def best_on_validation(method: str, val: Evaluator, test: Evaluator, vectors: str = "tau", **params) -> TunedMerge:
    """The method's merge (its parameters at `params`, else their defaults) at every scaling of
    SCALING_GRID on validation; the best one on test. Every method is linear in its final scaling,
    so the merge is computed once."""
    unit = val.merged(method, scaling=1.0, vectors=vectors, **params)
    scaled = lambda s: unit.map(lambda delta: delta * s) if isinstance(unit, TaskDeltas) else unit * s
    sweep = {s: val.accuracy(scaled(s)) for s in SCALING_GRID}
    best = max(SCALING_GRID, key=lambda s: sum(sweep[s].values()))
    accuracy = test.accuracy(scaled(best))
    return TunedMerge(best, accuracy, mean(accuracy), {str(s): mean(a) for s, a in sweep.items()})


# Per-task accuracies from the stored vectors (vector kind, metric), and task arithmetic of each kind.
PER_TASK_VECTORS = (("tau", "finetuned"), ("tau1", "one_epoch"))
TASK_ARITHMETIC = {"tau": "task_arithmetic", "tau1": "task_arithmetic_one_epoch"}


def task_metrics(cache: Cache, test: Evaluator, tasks: list[str]) -> dict[str, dict[str, float]]:
    """Zero-shot, fine-tuned and (with a gradient record) 1-epoch accuracy of each of `tasks`, each
    alone: these do not depend on the other tasks of the cache."""
    metrics = {"zero_shot": test.accuracy(None, tasks)}
    for kind, key in PER_TASK_VECTORS:
        if kind in cache.vector_kinds:
            metrics[key] = {t: test.accuracy(cache.vector(t, kind), [t])[t] for t in tasks}
    return metrics


def task_arithmetic_metrics(cache: Cache, val: Evaluator, test: Evaluator) -> dict[str, TunedMerge]:
    """Task arithmetic of every stored vector kind at its best validation scaling: these depend on the task set."""
    return {key: best_on_validation("task_arithmetic", val, test, kind)
            for kind, key in TASK_ARITHMETIC.items() if kind in cache.vector_kinds}


def reference_metrics(cache: Cache, device) -> Metrics:
    """Zero-shot and fine-tuned (and, with a gradient record, 1-epoch) accuracies per task; task
    arithmetic and the TUNED_METHODS with their scaling chosen on the validation subsets; the
    multi-task baseline when the cache holds one."""
    test = Evaluator(cache, device=device)
    val = Evaluator(cache, device=device, split="val")
    metrics = Metrics()
    for key, per_task in task_metrics(cache, test, cache.tasks).items():
        metrics = metrics.with_per_task(key, per_task)
    if MULTITASK in cache.manifest.files:
        metrics = metrics.with_per_task("multitask", test.accuracy(cache.tensors(MULTITASK)["delta"].float()))
    for key, merge in task_arithmetic_metrics(cache, val, test).items():
        metrics = metrics.with_merge(key, merge)
    for method in TUNED_METHODS:
        metrics = metrics.with_merge(method, best_on_validation(method, val, test))
    return metrics
