"""The Results tab: the results table that the cache records (tvexplorer/pipeline/table.py), shown at
once, and a button that computes the rows it lacks into the cache the app may write (the cache
itself, or a read-only cache's work folder, as ATM does)."""
from __future__ import annotations

import gradio as gr
import pandas as pd

from ..core.errors import first_line
from ..pipeline.table import fill_table, table_rows
from .explorer import Explorer, clean
from .ui import USER_ERRORS, api_errors

NOTE = ("Accuracy (%) on the test subsets. Each merge method at the global scaling λ that was best on the "
        "validation subsets (grid 0 to 1.5 in steps of 0.05), its own parameters at their defaults; beside the "
        "zero-shot model, one fine-tuned model per task, and the multi-task model; normalized = accuracy / "
        "fine-tuned accuracy, averaged over tasks.")


class Results:
    """Handlers of the Results tab and its API endpoint, for one Explorer."""

    def __init__(self, explorer: Explorer):
        self.ex = explorer

    def rows(self) -> list[dict]:
        return table_rows(self.ex.atm_cache)  # the work folder's record when there is one: it holds the source's too

    def frame(self) -> pd.DataFrame:
        out = []
        for r in self.rows():
            acc = r["accuracy"] or {}
            out.append({"method": r["label"], "best λ": r["best_scaling"],
                        **{f"{t} %": None if t not in acc else 100 * acc[t] for t in self.ex.tasks},
                        "average %": None if r["average"] is None else 100 * r["average"],
                        "normalized %": None if r["normalized_average"] is None else 100 * r["normalized_average"]})
        return pd.DataFrame(out).round(2)

    def status(self) -> str:
        missing = [r["label"].split(" (")[0] for r in self.rows() if r["accuracy"] is None]
        if not missing:
            return f"✓ {NOTE}"
        return (f"{NOTE}\n\n**Not computed yet:** {', '.join(missing)}. *Compute missing rows* measures them "
                f"(about half a minute each on the demo, on a CPU) and records them: {self.ex.where_saved()}")

    def view(self):
        """UI: (status, table)."""
        return self.status(), self.frame()

    def fill(self, progress=gr.Progress()):
        """UI: compute the rows the cache lacks, then (status, table)."""
        try:
            self.ex.writable_atm_root()
            fill_table(self.ex.atm_cache, device=self.ex.evaluator.device, progress=lambda text: progress(0, desc=text))
        except USER_ERRORS as e:
            gr.Warning(first_line(e))
            return f"⚠ {first_line(e)}", gr.skip()
        return self.view()

    def api_results(self) -> dict:
        """The results table as recorded: per row its label, best scaling, parameters, accuracy per task
        (in [0, 1]; null where not computed yet), average and normalized average."""
        return api_errors(lambda: clean({"tasks": self.ex.tasks, "rows": self.rows()}))()
