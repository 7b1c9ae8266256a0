"""The results table, as FusionBench's papers print them: every merge method of the registry at its best
validation setting, beside the zero-shot model, the individually fine-tuned models and the multi-task
baseline, per task and on average, on the test subsets.

A method's setting is its scaling chosen on the validation subsets from the build's grid
(`build.SCALING_GRID`, by `build.best_on_validation`) with its own parameters at their defaults. What
the cache already records (the build records task arithmetic, TIES, TSV-M and Iso-C this way) is
reused; the rest is computed once and recorded in the manifest's metrics (`core.records.Metrics.with_merge`),
so the command line and the app show it at once afterwards.
"""
from __future__ import annotations

from dataclasses import replace

from ..core.cache import Cache
from ..core.records import Metrics
from ..merging import METHODS, default_params
from ..science.evaluation import Evaluator
from .build import best_on_validation

# Reference rows, from the build's per-task metrics: (metric key, label).
REFERENCES = (("zero_shot", "zero-shot"), ("finetuned", "fine-tuned (one model per task)"),
              ("multitask", "multi-task (joint fine-tuning)"))


def check_methods(methods: list[str] | None) -> list[str]:
    """The registry's methods (all of them by default), refusing unknown names in one line."""
    if not methods:
        return list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown merge method(s) {', '.join(unknown)}; choose among: {', '.join(METHODS)}")
    return list(dict.fromkeys(methods))


def recorded(metrics: Metrics, method: str, tasks: int) -> bool:
    """Whether the metrics hold the method at its best validation scaling with its default parameters
    for `tasks` tasks (a parameter that a record lacks, as older builds wrote them, was at its default)."""
    record = metrics.merges.get(method)
    defaults = default_params(method, tasks)
    return record is not None and defaults | (record.params or {}) == defaults


def fill_table(cache: Cache, methods: list[str] | None = None, device=None, progress=print,
               redo: list[str] = ()) -> list[str]:
    """Compute and record every method of `methods` (default: all) that the cache does not hold yet,
    and those of `redo` again (a method whose definition changed since); returns the methods computed.
    `cache` must be writable (the app passes its work folder)."""
    redo = check_methods(list(redo)) if redo else []
    todo = [m for m in check_methods(methods) if m in redo or not recorded(cache.manifest.metrics, m, len(cache.tasks))]
    if not todo:
        return []
    val = Evaluator(cache, device=device, split="val")
    test = Evaluator(cache, device=device)
    for method in todo:
        progress(f"{METHODS[method].label}: scaling chosen on validation")
        record = replace(best_on_validation(method, val, test), params=default_params(method, len(cache.tasks)))
        cache.add_files({}, lambda manifest, m=method, r=record: replace(manifest, metrics=manifest.metrics.with_merge(m, r)))
    return todo


def table_rows(cache: Cache, methods: list[str] | None = None) -> list[dict]:
    """One row per reference and per method of `methods` (default: all) that the cache records:
    {key, label, best_scaling (None for references), params, accuracy per task, average,
    normalized_average (the mean over tasks of accuracy / fine-tuned accuracy)}. Methods not yet
    recorded have accuracy None."""
    metrics = cache.manifest.metrics
    finetuned = metrics.require_finetuned()

    def row(key: str, label: str, accuracy: dict | None, best_scaling=None, params=None) -> dict:
        average = normalized = None
        if accuracy is not None:
            average = sum(accuracy.values()) / len(accuracy)
            normalized = sum(accuracy[t] / finetuned[t] for t in accuracy) / len(accuracy)
        return {"key": key, "label": label, "best_scaling": best_scaling, "params": params, "accuracy": accuracy,
                "average": average, "normalized_average": normalized}

    rows = [row(key, label, getattr(metrics, key)) for key, label in REFERENCES if getattr(metrics, key) is not None]
    for method in check_methods(methods):
        spec = METHODS[method]
        label = f"{spec.label} ({spec.paper})"
        if recorded(metrics, method, len(cache.tasks)):
            r = metrics.merges[method]
            params = default_params(method, len(cache.tasks)) | (r.params or {})
            rows.append(row(method, label, r.accuracy, r.best_scaling, params))
        else:
            rows.append(row(method, label, None))
    return rows
