"""Adding a person's own task to a finished cache, and removing it again.

`add_task` checks everything first (the name, the images: data/imagesource.py) and writes nothing
until all of it passed. Then, under the cache's writer lock, it fine-tunes the task exactly as a build
does (pipeline/tasks.py's `train_task` from theta0, with the cache's base model and recorded training
settings): g0, tau1 and tau, the trajectory rows, the zero-shot head from the base model's text tower,
zero-shot, linear-probe, 1-epoch and fine-tuned accuracy. The images themselves are kept in the cache
(data/<task>.safetensors, at the model's resolution), so that ATM and RegMean find them later.

What depends on the task set is brought up to date or set aside, and the summary says which:
- recomputed: task arithmetic (tau and tau1) at its best validation scaling, the instant preview
  (extended by the new vectors, `science.preview.extend_preview`), RegMean's Gram matrices of the new task;
- set aside (the `table` command and the app recompute them on demand): the other merges' reference
  rows (TIES, TSV-M, Iso-C and any results-table row), tuned coefficients, ATM runs, and the multi-task
  baseline (joint fine-tuning of every task, too costly to redo here).

Undo: pipeline/taskundo.py. Tasks come off in the reverse order they were added.

Resumable: the fine-tuned task is kept in .addtask/<task>/ until the manifest lists it, and a cache
whose manifest lists a task not yet finished (the metrics or preview were interrupted) is finished by
running the same `add_task` again. A shipped or read-only cache is never written: the work goes to its
work copy (core/workcopy.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from safetensors.torch import load_file

from ..core import workcopy
from ..core.additions import AddedTask
from ..core.cache import Cache
from ..core.device import resolve_device
from ..core.files import atomic_write, sha256_file, write_bytes, write_tensors
from ..core.manifest import MANIFEST, Manifest, write_manifest
from ..core.records import FileEntry, Metrics, SplitSizes, TaskRecord
from ..data.benchmarks import FOLDER_TEMPLATES
from ..data.imagesource import BadSource, ImageSource, SourceLimits, inspect_source, load_images
from ..data.sources import STORED, load_task, located
from ..models.clip import ModelSpec, build_image_encoder, load_clip, set_flat, zero_shot_head
from ..science.evaluation import Evaluator
from ..science.grams import add_grams
from ..science.preview import extend_preview
from ..science.training import prepare, steps_per_epoch
from .build import MULTITASK, linear_probe, task_arithmetic_metrics, task_metrics, write_eval
from .tasks import train_task
from .taskundo import UNDO, WORK, link_file, remove_empty, remove_task, reread

__all__ = ["inspect_source", "add_task", "fine_tune_task", "remove_task", "BadSource", "Cancelled"]

TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
HEADS, TRAJECTORY = "heads.safetensors", "trajectory.csv"
Progress = Callable[[int, int, str], None]


class Cancelled(Exception):
    """should_stop() said stop; nothing was committed (a later run starts again or finishes the task)."""


def check_task_name(cache: Cache, name: str) -> None:
    if not TASK_NAME.fullmatch(name or ""):
        raise BadSource(f"task name {name!r}: use a letter then letters, digits or underscores (at most 40), "
                        "e.g. my_flowers")
    if name.casefold() in {t.casefold() for t in cache.tasks}:
        raise BadSource(f"task name {name!r}: this cache already has a task of that name; choose another "
                        f"(its tasks: {', '.join(cache.tasks)})")


def check_templates(templates: list[str]) -> list[str]:
    if not templates:
        raise BadSource("give at least one prompt template, e.g. 'a photo of a {}.'")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise BadSource(f"prompt template {bad[0]!r}: it needs exactly one '{{}}' where the class name goes")
    return list(templates)


def check_cache(cache: Cache) -> None:
    """Refuse a cache that add-task cannot extend: one without recorded training settings."""
    if cache.manifest.training is None or not cache.has_gradient_record:
        raise BadSource(f"{cache.root} was imported from published checkpoints and records no training settings; "
                        "add-task needs a cache built by fine-tuning")


def _unfinished(cache: Cache, name: str) -> bool:
    added = cache.manifest.added_tasks
    return name in added and not added[name].finished


def add_task(cache: Cache, name: str, source: str | os.PathLike | ImageSource, templates: list[str] | None = None,
             device: str | None = None, progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
             limits: SourceLimits | None = None) -> dict:
    """Add the task `name` from the images at `source` (a folder or .zip; see data/imagesource.py) to
    `cache`, which must be writable (for a protected cache, its work copy: cli.common.writable,
    app.workspace). Returns a summary: the images, the task's accuracies, what was recomputed and what
    set aside, and the seconds each stage took."""
    clock = _Clock(progress)
    _check_writable(cache)
    if not _unfinished(cache, name):
        with cache.writing():
            _commit(cache, _fine_tuned(cache, name, source, templates, device, clock, should_stop, limits))
    return _finish(cache, name, device, clock)


def fine_tune_task(cache: Cache, name: str, source: str | os.PathLike | ImageSource, templates: list[str] | None = None,
                   device: str | None = None, progress: Progress | None = None,
                   should_stop: Callable[[], bool] | None = None, limits: SourceLimits | None = None) -> None:
    """The first part of `add_task` on its own: check and fine-tune the task, and keep it in
    .addtask/<task>/ (nothing listed yet); `add_task` with the same arguments then takes it from there.
    The app runs the two as separate GPU calls."""
    _check_writable(cache)
    if not _unfinished(cache, name):
        _fine_tuned(cache, name, source, templates, device, _Clock(progress), should_stop, limits)


def _check_writable(cache: Cache) -> None:
    why = workcopy.protected(cache.root)
    if why:
        raise BadSource(f"{cache.root} is {why}; add the task to its work copy (core/workcopy.py)")


def _fine_tuned(cache: Cache, name: str, source, templates, device, clock: _Clock, should_stop, limits) -> _Pending:
    """The task fine-tuned, or found fine-tuned with the same settings by an earlier run."""
    check_task_name(cache, name)
    check_cache(cache)
    templates = check_templates(templates or FOLDER_TEMPLATES)
    clock.stage("checking the images")
    source = source if isinstance(source, ImageSource) else inspect_source(source, limits)
    with cache.writing():
        check_task_name(cache, name)  # another process may have added it meanwhile
        pending = _Pending(cache, name, source, templates)
        if not pending.done:
            try:
                _train(cache, pending, source, limits, device, clock, should_stop)
            except Cancelled:
                pending.discard()
                raise
    return pending


class _Clock:
    """Progress, and the seconds each stage took: wall-clock, and this process's CPU time, which a
    machine shared with other work inflates less."""

    def __init__(self, progress: Progress | None):
        self.progress, self.seconds, self.cpu_seconds, self.name = progress, {}, {}, None
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        self.done, self.total = 0, 1

    def stage(self, name: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        if self.name:
            self.seconds[self.name] = round(self.seconds.get(self.name, 0.0) + now - self.start, 2)
            self.cpu_seconds[self.name] = round(self.cpu_seconds.get(self.name, 0.0) + cpu - self.cpu_start, 2)
        self.name, self.start, self.cpu_start = name, now, cpu
        self.report(self.done, self.total)

    def report(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self.progress:
            self.progress(done, total, self.name)


class _Pending:
    """.addtask/<task>/: the fine-tuned task and its files, kept until the manifest lists them."""

    def __init__(self, cache: Cache, name: str, source: ImageSource, templates: list[str]):
        self.cache, self.name, self.folder, self.templates = cache, name, cache.root / WORK / name, templates
        settings = {"name": name, "templates": templates, "files": source.files,
                    "training": cache.manifest.training.to_json(), "base": cache.base_sha256}
        self.key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        self.state: dict = {}
        path = self.folder / "state.json"
        if path.is_file():
            state = json.loads(path.read_text())
            intact = all((cache.root / rel).is_file() and sha256_file(cache.root / rel) == e["sha256"]
                         for rel, e in state.get("files", {}).items())
            if state.get("key") == self.key and intact:
                self.state = state
        self.done = bool(self.state)

    def files(self) -> dict[str, FileEntry]:
        return {rel: FileEntry(**e) for rel, e in self.state["files"].items()}

    def discard(self) -> None:
        """Delete what an unfinished run wrote (nothing of it is listed yet)."""
        root = self.cache.root
        for rel in [f"data/{self.name}.safetensors", f"vectors/{self.name}.safetensors", f"eval/{self.name}.safetensors"]:
            (root / rel).unlink(missing_ok=True)
        shutil.rmtree(self.folder, ignore_errors=True)
        remove_empty(root, [root / "data", root / "vectors", root / "eval", root / WORK])

    def save(self, state: dict) -> None:
        self.state = {"key": self.key, **state}
        atomic_write(self.folder / "state.json", lambda tmp: tmp.write_text(json.dumps(self.state, indent=1)))


def _train(cache: Cache, pending: _Pending, source: ImageSource, limits: SourceLimits | None, device, clock: _Clock,
           should_stop) -> None:
    """Fine-tune the task from theta0 as a build does; its files go to their places (not yet listed)."""
    name, root, model = pending.name, cache.root, cache.manifest.model
    info, cfg = model.encoder, cache.manifest.training
    device = resolve_device(device)
    clock.stage("decoding the images")
    splits = load_images(source, info.image_size, limits)
    data_rel = f"data/{name}.safetensors"
    spec = {"source": STORED, "name": name, "file": data_rel, "classnames": list(source.classnames),
            "templates": pending.templates}
    files = {data_rel: write_tensors(root, data_rel, {"train_images": splits["train"].images,
                                                       "train_labels": splits["train"].labels,
                                                       "test_images": splits["test"].images,
                                                       "test_labels": splits["test"].labels})}
    task = load_task(located(spec, root))
    clock.stage("zero-shot head")
    clip, tokenizer, _ = load_clip(ModelSpec(model.name, model.pretrained), root=root)
    head = zero_shot_head(clip, tokenizer, task.classnames, task.templates)
    del clip
    _, logit_scale = cache.heads()
    encoder = build_image_encoder(info)
    theta0 = cache.base()
    objectives = prepare(encoder, {name: head}, logit_scale, info, cfg, device)
    clock.stage("fine-tuning (g0, tau1, tau)")
    total = -(-len(task.train) // cfg.batch_size) + cfg.epochs * steps_per_epoch(len(task.train), cfg)
    done = 0

    def on_step(n: int) -> None:
        nonlocal done
        if should_stop and should_stop():
            raise Cancelled(f"adding {name} was cancelled; nothing was added")
        done += n
        clock.report(done, total)
    vectors, trajectory = train_task(encoder, cache.layout, theta0, objectives[name], task, len(cache.tasks), cfg,
                                     cache.vector_dtype, on_step=on_step)
    clock.stage("linear probe")
    set_flat(encoder, theta0)
    n_eval, n_val = _eval_sizes(cache)
    probe = linear_probe(encoder, info, task, n_eval, device)
    clock.stage("saving")
    files[f"vectors/{name}.safetensors"] = write_tensors(root, f"vectors/{name}.safetensors", vectors)
    files.update(write_eval(root, task, n_eval, n_val))
    head_rel = f"{WORK}/{name}/head.safetensors"
    write_tensors(root, head_rel, {"head": head})
    pending.save({"files": {rel: e.to_json() for rel, e in files.items()}, "head": head_rel, "spec": spec,
                  "probe": probe, "sizes": {"train": len(task.train), "val": len(task.val), "test": len(task.test)},
                  "trajectory": trajectory.to_csv(index=False), "source": source.summary()})


def _eval_sizes(cache: Cache) -> tuple[int | None, int | None]:
    """The caps on evaluation subsets that the build used (None: none was reached), read off its eval files."""
    caps = []
    for split in ("test", "val"):
        sizes = [(len(cache.eval_split(t, split)), getattr(cache.manifest.task(t).sizes, split)) for t in cache.tasks]
        capped = [kept for kept, held in sizes if kept < held]
        caps.append(max(capped) if capped else None)
    return caps[0], caps[1]


# ------------------------------------------------------------------ committing: the manifest lists the task

def _stale_records(manifest: Manifest) -> list[str]:
    """What the manifest records for the old task set that the new task makes stale, in words."""
    merges = [k for k in manifest.metrics.merges if not k.startswith("task_arithmetic")]
    runs = [f"{variant}: {len(run.rounds)} rounds" for variant, run in manifest.atm.items()]
    words = [f"ATM runs ({', '.join(runs)})"] if runs else []
    words += [f"tuned coefficients ({', '.join(manifest.tuning)})"] if manifest.tuning else []
    words += ["the multi-task baseline (joint fine-tuning)"] if MULTITASK in manifest.files else []
    words += [f"merge reference rows ({', '.join(merges)}; the table command recomputes them)"] if merges else []
    return words


def _commit(cache: Cache, pending: _Pending) -> None:
    """Keep the manifest and the files it will replace or drop under added/<task>/, write the new
    heads and trajectory, then the manifest that lists the task (marked unfinished until _finish)."""
    name, root, state, manifest = pending.name, cache.root, pending.state, cache.manifest
    undo = f"{UNDO}/{name}"
    files = dict(manifest.files)
    files[f"{undo}/{MANIFEST}"] = write_bytes(root, f"{undo}/{MANIFEST}", (root / MANIFEST).read_bytes())
    replaced = [r for r in files if r in (HEADS, TRAJECTORY) or r.startswith("preview/")]
    dropped = [r for r in files if r == MULTITASK or r.startswith("atm/")]
    set_aside = {rel: f"{undo}/{rel}" for rel in replaced + dropped}
    for rel, aside in set_aside.items():
        link_file(root / rel, root / aside)
        files[aside] = files[rel]
    heads = {k: v.clone() for k, v in cache.tensors(HEADS).items()}
    logit_scale = heads.pop("logit_scale")
    head = load_file(str(root / state["head"]))["head"]
    files[HEADS] = write_tensors(root, HEADS, {**heads, name: head, "logit_scale": logit_scale})
    if TRAJECTORY in files:
        files[TRAJECTORY] = _append_rows(root, TRAJECTORY, state["trajectory"])
    for rel in dropped:
        del files[rel]
    files.update(pending.files())
    old = manifest.metrics
    metrics = Metrics(zero_shot=old.zero_shot, one_epoch=old.one_epoch, finetuned=old.finetuned,
                      linear_probe={**(old.linear_probe or {}), name: state["probe"]})
    spec, sizes = state["spec"], SplitSizes(**state["sizes"])
    task = TaskRecord(name, tuple(spec["classnames"]), tuple(spec["templates"]), spec, sizes)
    added = AddedTask(state["source"], f"{undo}/{MANIFEST}", set_aside, tuple(_stale_records(manifest)), False)
    write_manifest(root, replace(manifest, tasks=(*manifest.tasks, task), files=files, metrics=metrics, preview=None,
                                 atm={}, tuning={}, added_tasks={**manifest.added_tasks, name: added}))
    reread(cache)
    for rel in dropped:
        (root / rel).unlink(missing_ok=True)
    shutil.rmtree(pending.folder, ignore_errors=True)
    remove_empty(root, [(root / rel).parent for rel in dropped] + [root / WORK])


def _append_rows(root: Path, rel: str, table_csv: str) -> FileEntry:
    """The table's rows after the file's own, as text, so that the rows already there stay byte for byte."""
    text = (root / rel).read_text()
    header, _, rows = table_csv.partition("\n")
    if text.partition("\n")[0] != header:
        raise ValueError(f"{rel}: its columns ({text.partition(chr(10))[0]}) are not the new task's ({header}); "
                         "rebuild the cache with this version of tvexplorer")
    return write_bytes(root, rel, (text + rows).encode())


# ------------------------------------------------------------------ finishing: metrics and preview

def _finish(cache: Cache, name: str, device, clock: _Clock) -> dict:
    """The task's accuracies, task arithmetic over the new task set, the extended preview and the
    new task's Gram matrices; then the task is marked finished."""
    device = resolve_device(device)
    with cache.writing():
        record = cache.manifest.added_tasks[name]
        previous = Manifest.from_json(json.loads((cache.root / record.undo).read_text()))
        clock.stage("accuracies (zero-shot, 1 epoch, fine-tuned)")
        test, val = Evaluator(cache, device=device), Evaluator(cache, device=device, split="val")
        own = task_metrics(cache, test, [name])
        clock.stage("task arithmetic (scaling chosen on validation)")
        merges = task_arithmetic_metrics(cache, val, test)

        def update(manifest: Manifest) -> Manifest:
            metrics = manifest.metrics
            for key, per_task in own.items():
                metrics = metrics.with_per_task(key, {**(getattr(metrics, key) or {}), **per_task})
            for key, merge in merges.items():
                metrics = metrics.with_merge(key, merge)
            return replace(manifest, metrics=metrics)
        cache.add_files({}, update)
        recomputed = ["task arithmetic (tau and tau1)"]
        if previous.preview is not None:
            clock.stage("instant preview (new vectors' JVPs)")
            extend_preview(cache, previous.preview, device, progress=lambda d, t, _: clock.report(d, t))
            recomputed.append("instant preview")
        if previous.grams is not None:
            clock.stage("Gram matrices (RegMean)")
            add_grams(cache, device)
            recomputed.append("RegMean's Gram matrices of the new task")
        cache.add_files({}, lambda manifest: replace(manifest, added_tasks={
            **manifest.added_tasks, name: replace(manifest.added_tasks[name], finished=True)}))
        clock.stage("")
    m, record = cache.manifest.metrics, cache.manifest.added_tasks[name]
    accuracy = {k: getattr(m, k)[name] for k in ("zero_shot", "linear_probe", "one_epoch", "finetuned")
                if getattr(m, k) is not None}
    return {"cache": str(cache.root), "task": name, "images": record.source, "accuracy": accuracy,
            "task_arithmetic": {k: {"best_scaling": m.merges[k].best_scaling, "average": m.merges[k].average}
                                for k in merges},
            "recomputed": recomputed, "set_aside": list(record.stale), "seconds": clock.seconds,
            "cpu_seconds": clock.cpu_seconds, "total_seconds": round(sum(clock.seconds.values()), 2),
            "total_cpu_seconds": round(sum(clock.cpu_seconds.values()), 2)}
