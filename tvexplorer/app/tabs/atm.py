"""The ATM tab: run more rounds of Alternating Tuning and Merging on the cache (a cancellable run, see
runs.py; on ZeroGPU one GPU call per round inside the visitor's event), and every saved round as a chart
and a table. Each saved round also becomes a method of the Merge tab and a matrix of the alignment tab."""
from __future__ import annotations

import gradio as gr

from ...science.atm import VARIANTS
from .. import figures, presenters, runs
from ..explorer import ATM
from ..inputs import MAX_ATM_ROUNDS
from .common import PRIVATE, Bundle, wire


def status_text(ex) -> str:
    run, where = runs.current(ATM), ex.where_saved()
    if run is None:
        return f"No ATM run in this session yet. {where}"
    s = ex.atm_status()
    p, done, variant = s["progress"], s["rounds_finished"], s["variant"]
    if run.running:
        return (f"… **{s['state'].capitalize()}:** ATM {variant}, {s['rounds_requested']} round(s); "
                f"{done if done else 'no'} finished yet; now {p.get('text', '')} "
                f"({p.get('done', 0)}/{p.get('total', 1)} steps). {where}")
    text = {"finished": f"✓ **Finished** {done} round(s) of ATM {variant} in {s['seconds']:.1f} s.",
            "cancelled": f"■ **Cancelled** after {done} finished round(s) of ATM {variant}; "
                         "the unfinished round was not saved.",
            "failed": f"✗ **Failed:** {s['error']} ({done} round(s) finished and saved)."}[s["state"]]
    return f"{text} {where}"


def view(ex, status: str | None = None) -> dict:
    """The tab (and the choices that saved rounds add to the Merge and alignment tabs)."""
    return {"status": status or status_text(ex), "chart": figures.atm_figure(ex.atm_summary(), ex.tasks),
            "table": presenters.atm_table(ex), "method": gr.update(choices=ex.method_choices()),
            "matrix_kind": gr.update(choices=ex.matrix_choices())}


def run(ex, v: dict):
    """Start a run, then follow it, redrawing the chart after each saved round."""
    r = ex.start_atm(v["rounds"], v["variant"])
    seen = None
    for _ in r.follow():
        count = sum(len(x["rounds"]) for x in ex.atm_runs().values())
        if count != seen:
            seen = count
            yield view(ex)
    yield view(ex)
    if r.error:
        gr.Warning(f"ATM failed: {r.error}")


def cancel(ex) -> dict:
    if runs.cancel(ATM):
        gr.Info("Cancelling: the run stops after the task it is training; finished rounds stay saved.")
        return {"status": "■ **Cancelling…** the run stops after the task it is training now; finished rounds stay saved."}
    return {"status": status_text(ex)}


def build_atm_tab(app, method: gr.Dropdown, matrix_kind: gr.Dropdown) -> Bundle:
    """The tab; returns what it shows (the page load fills it)."""
    ex = app.ex
    with gr.Tab("ATM", id="atm"):
        with gr.Row():
            variant = gr.Radio(list(VARIANTS), value="standard", label="ATM variant", elem_id="atm-variant")
            rounds = gr.Slider(1, MAX_ATM_ROUNDS, value=1, step=1, label="Rounds to run", elem_id="atm-rounds")
            run_btn = gr.Button("Run more rounds", variant="primary", elem_id="atm-run")
            cancel_btn = gr.Button("Cancel", variant="stop", elem_id="atm-cancel")
        status = gr.Markdown(elem_id="atm-status")
        chart = gr.Plot(label="Accuracy per round", elem_id="atm-chart")
        table = gr.Dataframe(label="Saved rounds (%)", interactive=False, elem_id="atm-table", buttons=["copy", "fullscreen"])
    shown = Bundle(status=status, chart=chart, table=table, method=method, matrix_kind=matrix_kind)
    wire(run_btn.click, lambda v: run(ex, v), Bundle(variant=variant, rounds=rounds), shown, stream=True,
         on_error=lambda line: view(ex, f"⚠ {line}"), concurrency_limit=None, show_progress="full",
         show_progress_on=[status], **PRIVATE)
    wire(cancel_btn.click, lambda v: cancel(ex), None, shown, concurrency_limit=None, **PRIVATE)
    return shown
