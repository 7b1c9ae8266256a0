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
from ..merging import METHODS
from ..science.evaluation import Evaluator
from .build import best_on_validation

# Reference rows, from the build's per-task metrics: (metric key, label).
REFERENCES = (("zero_shot", "zero-shot"), ("finetuned", "fine-tuned (one model per task)"),
              ("multitask", "multi-task (joint fine-tuning)"))


def default_params(method: str) -> dict[str, float | int]:
    return {p.name: p.check(method, p.default) for p in METHODS[method].params}


def check_methods(methods: list[str] | None) -> list[str]:
    """The registry's methods (all of them by default), refusing unknown names in one line."""
    if not methods:
        return list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown merge method(s) {', '.join(unknown)}; choose among: {', '.join(METHODS)}")
    return list(dict.fromkeys(methods))


def recorded(metrics: Metrics, method: str) -> bool:
    """Whether the metrics hold the method at its best validation scaling with default parameters (a
    record without params, as builds made them before, was measured at the defaults)."""
    record = metrics.merges.get(method)
    return record is not None and (record.params is None or record.params == default_params(method))


def fill_table(cache: Cache, methods: list[str] | None = None, device=None, progress=print) -> list[str]:
    """Compute and record every method of `methods` (default: all) that the cache does not hold yet;
    returns the methods computed. `cache` must be writable (the app passes its work folder)."""
    todo = [m for m in check_methods(methods) if not recorded(cache.manifest.metrics, m)]
    if not todo:
        return []
    val = Evaluator(cache, device=device, split="val")
    test = Evaluator(cache, device=device)
    for method in todo:
        progress(f"{METHODS[method].label}: scaling chosen on validation")
        record = replace(best_on_validation(method, val, test), params=default_params(method))
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
        if recorded(metrics, method):
            r = metrics.merges[method]
            rows.append(row(method, label, r.accuracy, r.best_scaling, r.params or default_params(method)))
        else:
            rows.append(row(method, label, None))
    return rows
