"""The Merge tab's tuning panel: "Tune on validation" and AdaMerging as a cancellable run (see runs.py),
the table of recorded results against grid task arithmetic, and applying a result to the Merge controls.
The work is in app/tuning.py (plain data, no gradio)."""
from __future__ import annotations

import json
import math

import gradio as gr
import pandas as pd

from .. import runs, tuning
from ..work import DEFAULT_STEPS
from . import merge
from .common import PRIVATE, Bundle, wire


def _pct(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(100 * x, 2)


def table(ex) -> pd.DataFrame:
    rows = tuning.summary(ex)["rows"]
    return pd.DataFrame([{"merge": r["name"], "validation %": _pct(r["val_average"]), "test %": _pct(r["average"]),
                          "scaling": r["scaling"], "seconds": r["seconds"]} for r in rows])


def status_text(ex) -> str:
    run = tuning.current()
    where = f"Results are recorded in {ex.atm_root}/manifest.json."
    if run is None:
        return f"No tuning run in this session yet. {where}"
    p = run.progress()
    if run.running:
        return f"… **{run.state.capitalize()}:** {run.label}; {p.get('text', '')} ({p.get('done', 0)}/{p.get('total', 1)})."
    if run.state == "finished":
        r = run.result
        return (f"✓ **Finished** {run.label} in {run.seconds:.1f} s: validation {_pct(r['val_average'])} %, "
                f"test {_pct(r['average'])} %. {where}")
    return {"cancelled": "■ **Cancelled**; nothing was recorded.", "failed": f"✗ **Failed:** {run.error}"}[run.state]


def view(ex, status: str | None = None) -> dict:
    return {"status": status or status_text(ex), "table": table(ex),
            "pick": gr.update(choices=list(tuning.summary(ex)["records"]))}


def run(ex, objective: str, v: dict):
    """Start a run with the panel's settings, then follow it (on ZeroGPU, following is what runs it)."""
    r = tuning.start(ex, objective, v["per_layer"], v["steps" if objective == "accuracy" else "ada_steps"])
    for _ in r.follow():
        yield view(ex)
    yield view(ex)


def cancel(ex) -> dict:
    """The status once the run has stopped (or, if it takes long, that it is stopping: its own event then
    shows the end)."""
    tuning.cancel(wait=runs.CANCEL_WAIT)
    return {"status": status_text(ex)}


def apply(app, name) -> dict:
    """A recorded result on the Merge controls (and the per-layer box)."""
    records = tuning.summary(app.ex)["records"]
    if name not in records:
        raise ValueError(f"choose a recorded result first; recorded: {', '.join(records) or '(none)'}")
    fitted = tuning.fit_to_ranges(records[name], app.ex.tasks)
    layers = json.dumps(fitted["layer_coefficients"]) if fitted["layer_coefficients"] else ""
    return {**merge.settings_updates(app, fitted["method"], fitted["scaling"], fitted["coefficients"]), "layers": layers}


def build_tuning_panel(app, tab: merge.MergeTab, demo: gr.Blocks) -> None:
    """Inside the Merge tab's advanced accordion."""
    ex = app.ex
    with tab.advanced:
        with gr.Row():
            per_layer = gr.Checkbox(label="Per layer", elem_id="tune-per-layer")
            steps = gr.Number(DEFAULT_STEPS["accuracy"], label="Tuning steps", precision=0, minimum=1,
                              maximum=tuning.MAX_STEPS, elem_id="tune-steps")
            ada_steps = gr.Number(DEFAULT_STEPS["entropy"], label="AdaMerging steps", precision=0, minimum=1,
                                  maximum=tuning.MAX_STEPS, elem_id="adamerging-steps")
        with gr.Row():
            buttons = {"accuracy": gr.Button("Tune on validation", size="sm", elem_id="tune-run"),
                       "entropy": gr.Button("AdaMerging", size="sm", elem_id="adamerging-run")}
            cancel_btn = gr.Button("Cancel", variant="stop", size="sm", elem_id="tune-cancel")
        status = gr.Markdown(elem_id="tune-status")
        recorded = gr.Dataframe(label="Grid task arithmetic against tuned coefficients (averages)",
                                interactive=False, elem_id="tune-table")
        with gr.Row():
            pick = gr.Dropdown([], label="Recorded result", elem_id="tune-pick")
            apply_btn = gr.Button("Apply to the controls", size="sm", elem_id="tune-apply")
    settings = Bundle(per_layer=per_layer, steps=steps, ada_steps=ada_steps, pick=pick)
    shown = Bundle(status=status, table=recorded, pick=pick)
    for objective, button in buttons.items():
        wire(button.click, lambda v, o=objective: run(ex, o, v), settings, shown,
             on_error=lambda line: {"status": f"⚠ {line}"}, names=["per_layer", "steps", "ada_steps"], stream=True,
             concurrency_limit=None, show_progress="full", show_progress_on=[status], **PRIVATE)
    wire(cancel_btn.click, lambda v: cancel(ex), None, shown, concurrency_limit=None, **PRIVATE)
    applied = Bundle(**tab.controls.named, layers=tab.settings.layers)
    tab.then_evaluate(wire(apply_btn.click, lambda v: apply(app, v["pick"]), settings, applied, names=["pick"],
                           queue=False, **PRIVATE))
    wire(demo.load, lambda v: view(ex), None, shown, **PRIVATE)
