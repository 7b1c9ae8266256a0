"""The results table that the cache records (tvexplorer/pipeline/table.py), as the Results tab and the
/results endpoint show it, and the run that computes the rows it lacks into the cache the app may write
(the cache itself, or a read-only cache's work folder, as ATM does)."""
from __future__ import annotations

import pandas as pd

from ..pipeline.table import table_rows
from . import runs
from .work import missing_rows, table_work

TABLE = "table"  # the kind of run
NOTE = ("Accuracy (%) on the test subsets. Each merge method at the global scaling λ that was best on the "
        "validation subsets (grid 0 to 1.5 in steps of 0.05), its own parameters at their defaults; beside the "
        "zero-shot model, one fine-tuned model per task, and the multi-task model; normalized = accuracy / "
        "fine-tuned accuracy, averaged over tasks.")


def rows(ex) -> list[dict]:
    return table_rows(ex.atm_cache)  # the work folder's record when there is one: it holds the source's too


def frame(ex) -> pd.DataFrame:
    out = []
    for r in rows(ex):
        acc = r["accuracy"] or {}
        out.append({"method": r["label"], "best λ": r["best_scaling"],
                    **{f"{t} %": None if t not in acc else 100 * acc[t] for t in ex.tasks},
                    "average %": None if r["average"] is None else 100 * r["average"],
                    "normalized %": None if r["normalized_average"] is None else 100 * r["normalized_average"]})
    return pd.DataFrame(out).round(2)


def status_text(ex) -> str:
    run = runs.current(TABLE)
    if run is not None and run.running:
        p = run.progress()
        return f"… **{run.state.capitalize()}:** {run.label}; now {p.get('text', '')} ({p.get('done', 0)}/{p.get('total', 1)})."
    failed = f"✗ **Failed:** {run.error}\n\n" if run is not None and run.error else ""
    missing = [r["label"].split(" (")[0] for r in rows(ex) if r["accuracy"] is None]
    if not missing:
        return f"{failed}✓ {NOTE}"
    return (f"{failed}{NOTE}\n\n**Not computed yet:** {', '.join(missing)}. *Compute missing rows* measures them "
            f"(about half a minute each on the demo, on a CPU) and records them: {ex.where_saved()}")


def start_fill(ex) -> runs.Run | None:
    """Start computing the missing rows (one call per method); None when none is missing."""
    if runs.busy(TABLE):
        raise runs.Busy(runs.busy_message(TABLE, "filling the results table"))
    todo = missing_rows(ex.atm_cache)
    if not todo:
        return None
    root = ex.writable_atm_root()
    device = None if runs.ZERO_GPU else str(ex.evaluator.device)  # on ZeroGPU: the GPU lent to each call
    return runs.start(TABLE, f"{len(todo)} missing row(s)", table_work(str(root), todo, device), {"methods": todo},
                      parts=len(todo), what="filling the results table")
