"""The Results tab: every merge method at its best validation scaling beside the references, shown at
once, and a button that computes the rows the cache lacks (a run, see runs.py and app/results.py)."""
from __future__ import annotations

import gradio as gr

from .. import results
from .common import PRIVATE, Bundle, wire


def view(ex) -> dict:
    return {"status": results.status_text(ex), "table": results.frame(ex)}


def fill(ex):
    """Compute the missing rows, showing the table as each is recorded."""
    run = results.start_fill(ex)
    for _ in run.follow() if run is not None else ():
        yield view(ex)
    yield view(ex)


def build_results_tab(app) -> None:
    ex = app.ex
    with gr.Tab("Results table", id="results") as tab:
        status = gr.Markdown(elem_id="results-status")
        table = gr.Dataframe(label="Every merge method at its best validation scaling (%)", interactive=False,
                             elem_id="results-table", buttons=["copy", "fullscreen"])
        fill_btn = gr.Button("Compute missing rows", elem_id="results-fill")
    shown = Bundle(status=status, table=table)
    wire(tab.select, lambda v: view(ex), None, shown, **PRIVATE)
    wire(fill_btn.click, lambda v: fill(ex), None, shown, stream=True, on_error=lambda line: {"status": f"⚠ {line}"},
         concurrency_limit=1, show_progress="full", **PRIVATE)
