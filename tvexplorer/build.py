"""Building a cache: heads, the gradient record, fine-tuning, trajectories and reference metrics.

For each task, from theta0: g0 (exact full-batch gradient of the training loss), then E epochs of
fine-tuning keeping tau1 and tau, then per-epoch statistics. Metrics are measured on the vectors
as stored (after any float16 rounding), so they agree with what the explorer evaluates later.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import __version__
from .alignment import trajectory_table
from .cache import DTYPES, SCHEMA_VERSION, Cache, write_manifest, write_table, write_tensors
from .data import load_task
from .evaluation import Evaluator
from .layout import Layout
from .merging import merge_flat
from .models import ModelSpec, load_clip, zero_shot_head
from .training import (TrainConfig, default_device, finetune, full_batch_gradient, get_flat, prepare, set_flat,
                       steps_per_epoch)

TA_GRID = tuple(round(0.05 * i, 2) for i in range(1, 21))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_cache(out: Path, spec: ModelSpec, task_specs: list[dict], cfg: TrainConfig,
                vector_dtype: str = "float32", device: str | None = None) -> Cache:
    out = Path(out)
    device = torch.device(device) if device else default_device()
    dtype = DTYPES[vector_dtype]
    model, tokenizer, encoder_info = load_clip(spec, root=out)
    data = [load_task(s) for s in task_specs]
    heads = {d.name: zero_shot_head(model, tokenizer, d.classnames, d.templates) for d in data}
    logit_scale = float(model.logit_scale.detach().exp())
    encoder = model.visual.float()
    del model  # the text tower is not needed past this point
    layout = Layout.of(dict(encoder.named_parameters()))
    theta0 = get_flat(encoder)
    objectives = prepare(encoder, heads, logit_scale, encoder_info, cfg, device)

    files = {"base.safetensors": write_tensors(out, "base.safetensors", layout.unflatten(theta0.clone())),
             "heads.safetensors": write_tensors(out, "heads.safetensors",
                                                {**heads, "logit_scale": torch.tensor([logit_scale])})}
    trajectories = []
    for i, task in enumerate(data):
        log(f"[{i + 1}/{len(data)}] {task.name}: gradient at theta0, then {cfg.epochs} epochs ({len(task.train)} training images)")
        objective = objectives[task.name]
        set_flat(encoder, theta0)
        g0 = full_batch_gradient(encoder, objective, task.train, cfg.batch_size)
        steps = cfg.epochs * steps_per_epoch(len(task.train), cfg)
        with tqdm(total=steps, desc=task.name, leave=False, file=sys.stderr) as bar:
            thetas = finetune(encoder, objective, task.train, cfg, i, on_step=bar.update)
        trajectories.append(trajectory_table(task.name, layout, theta0, thetas, g0))
        vectors = {"tau": thetas[-1] - theta0.to(thetas[-1].dtype), "tau1": thetas[0] - theta0.to(thetas[0].dtype), "g0": g0}
        rel = f"vectors/{task.name}.safetensors"
        files[rel] = write_tensors(out, rel, {k: v.to(dtype) for k, v in vectors.items()})
        rel = f"eval/{task.name}.safetensors"
        files[rel] = write_tensors(out, rel, {"test_images": task.test.images, "test_labels": task.test.labels,
                                              "val_images": task.val.images, "val_labels": task.val.labels})
    files["trajectory.csv"] = write_table(out, "trajectory.csv", pd.concat(trajectories, ignore_index=True))

    manifest = {
        "schema_version": SCHEMA_VERSION,
        "created_by": f"tvexplorer {__version__}",
        "model": {"name": spec.name, "pretrained": spec.pretrained, "encoder": encoder_info},
        "layout": layout.to_json(),
        "vector_dtype": vector_dtype,
        "tasks": [{"name": d.name, "classnames": list(d.classnames), "templates": list(d.templates), "data": s,
                   "sizes": {"train": len(d.train), "val": len(d.val), "test": len(d.test)}}
                  for d, s in zip(data, task_specs)],
        "training": cfg.to_json(),
        "metrics": {},
        "files": files,
    }
    manifest["metrics"] = reference_metrics(Cache(out, manifest), device)
    write_manifest(out, manifest)
    log(json.dumps({k: v for k, v in manifest["metrics"].items() if k.endswith("average")}))
    return Cache.open(out)


def reference_metrics(cache: Cache, device) -> dict:
    """Zero-shot, fine-tuned and 1-epoch accuracies per task, and task arithmetic with its scaling
    chosen on the validation subsets (for the full and the 1-epoch task vectors)."""
    test = Evaluator(cache, device=device)
    val = Evaluator(cache, device=device, split="val")
    metrics = {"zero_shot": test.accuracy(None)}
    for kind, key in (("tau", "finetuned"), ("tau1", "one_epoch")):
        metrics[key] = {t: test.accuracy(cache.vector(t, kind), [t])[t] for t in cache.tasks}
    for kind, key in (("tau", "task_arithmetic"), ("tau1", "task_arithmetic_one_epoch")):
        vectors = cache.vectors(kind)
        sweep = {s: val.accuracy(merge_flat("task_arithmetic", vectors, cache.layout, scaling=s)) for s in TA_GRID}
        best = max(TA_GRID, key=lambda s: sum(sweep[s].values()))
        accuracy = test.accuracy(merge_flat("task_arithmetic", vectors, cache.layout, scaling=best))
        metrics[key] = {"best_scaling": best, "accuracy": accuracy,
                        "val_average_by_scaling": {str(s): sum(a.values()) / len(a) for s, a in sweep.items()}}
    for key in ("zero_shot", "finetuned", "one_epoch"):
        metrics[f"{key}_average"] = sum(metrics[key].values()) / len(metrics[key])
    for key in ("task_arithmetic", "task_arithmetic_one_epoch"):
        acc = metrics[key]["accuracy"]
        metrics[f"{key}_average"] = sum(acc.values()) / len(acc)
    return metrics
