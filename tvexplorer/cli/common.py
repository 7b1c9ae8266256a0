"""What every command shares: one-line errors, number formatting, opening a cache, and the cache summary
that build, import and info print."""
from __future__ import annotations

import argparse
import sys

from ..core import workcopy
from ..core.cache import Cache
from ..core.checks import finite
from ..core.hub import resolve_location


class UserError(Exception):
    """Bad input from the command line, reported as one line."""


class CommandParser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        raise UserError(f"{self.prog}: {message} (see --help)")


def add_ray_option(c) -> None:
    c.add_argument("--ray", nargs="?", const="auto", default=None, metavar="auto|ADDRESS",
                   help="spread the per-task work over a Ray cluster: 'auto' (the default value) joins the cluster "
                        "this machine belongs to, else starts a local one; or give the head's HOST:PORT")


def key_value(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UserError(f"expected NAME=VALUE, got {text!r}")
    try:
        return key, finite(key, value)
    except ValueError:
        raise UserError(f"{key}: {value} is not a finite number") from None


def layer_key_value(text: str) -> tuple[str, str, float]:
    """TASK:LAYER=VALUE -> (task, layer, value)."""
    key, value = key_value(text)
    task, sep, layer = key.partition(":")
    if not sep or not task or not layer:
        raise UserError(f"expected TASK:LAYER=VALUE (e.g. digits:resblocks.0=0.5), got {text!r}")
    return task, layer, value


def finite_scaling(scaling: float) -> None:
    try:
        finite("--scaling", scaling)
    except ValueError:
        raise UserError(f"--scaling {scaling} is not a finite number") from None


def pct(x: float | None) -> str:
    return "    -" if x is None else f"{100 * x:5.1f}"


def table(rows: list[list], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), *(line(r) for r in rows)])


def open_cache(location: str) -> Cache:
    return Cache.open(resolve_location(location))


def writable(cache: Cache) -> Cache:
    """`cache`, or, when it must not be written (the shipped demo, a read-only folder: `workcopy.protected`),
    its copy-on-write work copy, made on first need, as the app's ATM uses."""
    why = workcopy.protected(cache.root)
    if why is None:
        return cache
    work = workcopy.make_work_copy(cache, workcopy.work_folder(cache))
    print(f"{cache.root} is {why}: recording into its work copy {work.root}", file=sys.stderr, flush=True)
    return work


def cache_summary(cache: Cache) -> dict:
    from ..core.records import AVERAGED_METRICS, PER_TASK_METRICS
    manifest = cache.manifest
    m, per_task = manifest.metrics, manifest.metrics.per_task()
    return {
        "cache": str(cache.root),
        "model": manifest.model.name,
        "parameters": cache.layout.numel,
        "training": None if manifest.training is None else manifest.training.to_json(),
        "source": manifest.provenance,
        "tasks": {t.name: {"classes": len(t.classnames), **{k: per_task.get(k, {}).get(t.name) for k in PER_TASK_METRICS}}
                  for t in manifest.tasks},
        "averages": m.averages(),
        "task_arithmetic_best_scaling": m.merge("task_arithmetic").best_scaling,
        "best_scalings": {k: m.merges[k].best_scaling for k in AVERAGED_METRICS if k in m.merges},
        "atm": {v: [{"round": r.round, "average": r.average} for r in run.rounds] for v, run in manifest.atm.items()},
        "theory_slopes": theory_slopes(cache),
    }


def theory_slopes(cache: Cache) -> list[dict] | None:
    """Slopes of log relative error against log lr in the cache's SGD record (the theorem says 1)."""
    from ..science.theory import error_slopes
    table = cache.theory()
    return None if table is None else error_slopes(table).to_dict("records")


def print_summary(info: dict) -> None:
    from ..core.records import PER_TASK_METRICS
    print(f"{info['cache']}: {info['model']}, {info['parameters']:,} image-encoder parameters, {len(info['tasks'])} tasks")
    rows = [[t, v["classes"], *(pct(v[k]) for k in PER_TASK_METRICS)] for t, v in info["tasks"].items()]
    a = info["averages"]
    rows.append(["average", "", *(pct(a[k]) for k in PER_TASK_METRICS)])
    print(table(rows, ["task", "classes", "zero-shot %", "linear probe %", "1 epoch %", "fine-tuned %", "multi-task %"]))
    print(f"task arithmetic (scaling {info['task_arithmetic_best_scaling']} chosen on validation): {pct(a['task_arithmetic'])} %"
          + (f"; with 1-epoch vectors: {pct(a['task_arithmetic_one_epoch'])} %" if a["task_arithmetic_one_epoch"] is not None
             else "; imported task vectors, no 1-epoch record"))
    others = [f"{k} {pct(a[k])} % (scaling {info['best_scalings'][k]})" for k in ("ties", "tsv", "iso_c") if a.get(k) is not None]
    if others:
        print("at their best validation scaling: " + ", ".join(others))
    for variant, rounds in info["atm"].items():
        print(f"ATM {variant}: " + ", ".join(f"round {r['round']} {pct(r['average'])} %" for r in rounds))
    if info.get("theory_slopes"):
        first = [r["slope"] for r in info["theory_slopes"] if r["epoch"] == 1 and r["prediction"] == "sum_of_epoch_gradients"]
        print(f"SGD theory record: slope of log error against log lr after one epoch {min(first):.2f} to {max(first):.2f} (theorem: 1)")
    if "diagnostics" in info:
        d = info["diagnostics"]
        print(table([[str(v) for v in d.values()]], list(d)))
