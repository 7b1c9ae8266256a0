"""The ATM tab: run more rounds of Alternating Tuning and Merging on the cache (a cancellable run, see
runs.py; on ZeroGPU one GPU call per round inside the visitor's event); every saved run with its settings,
its accuracy against the training it cost, the orthogonality of each round's task updates (and any
round's cosine matrix), and each task's gain or loss against task arithmetic. Each saved round also
becomes a method of the Merge tab and a matrix of the alignment tab."""
from __future__ import annotations

import gradio as gr

from ...science.atm import VARIANTS
from .. import atm_figures, figures, presenters, runs
from ..explorer import ATM
from ..inputs import MAX_ATM_ROUNDS
from .common import PRIVATE, Bundle, wire

DEFAULT_VARIANT = "adaptive"  # the demo's default run: tvexplorer's extension (the paper's rule is "standard")


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


def view(ex, status: str | None = None, variant: str | None = None, matrix: str | None = None) -> dict:
    """The tab (and the choices that saved rounds add to the Merge and alignment tabs)."""
    report = ex.atm_summary()
    saved = [v for v, run in report["runs"].items() if run["rounds"]]
    variant = variant if variant in saved else (DEFAULT_VARIANT if DEFAULT_VARIANT in saved else (saved or [None])[0])
    rounds = [(label, key) for label, key in ex.matrix_choices() if key.startswith("atm:")]
    matrix = matrix if matrix in [k for _, k in rounds] else (rounds[-1][1] if rounds else None)
    return {"status": status or status_text(ex), "runs": presenters.atm_runs_text(ex),
            "chart": atm_figures.budget_figure(report), "orthogonality": atm_figures.orthogonality_figure(report),
            "gains_variant": gr.update(choices=saved, value=variant),
            "gains": atm_figures.gains_figure(report, variant) if variant else figures.empty("No ATM round saved yet"),
            "round_matrix": gr.update(choices=rounds, value=matrix),
            "round_cosines": round_cosines(ex, matrix),
            "table": presenters.atm_table(ex), "method": gr.update(choices=ex.method_choices()),
            "matrix_kind": gr.update(choices=ex.matrix_choices())}


def round_cosines(ex, key: str | None):
    """The task-by-task cosines of one saved round's updates (key "atm:<variant>:<round>")."""
    if not key:
        return figures.empty("No ATM round saved yet")
    labels = {k: label for label, k in ex.matrix_choices()}
    return figures.matrix_figure(ex.cosine_matrix(key), labels[key])


def run(ex, v: dict):
    """Start a run, then follow it, redrawing the chart after each saved round."""
    r = ex.start_atm(v["rounds"], v["variant"])
    seen = None
    for _ in r.follow():
        count = sum(len(x.rounds) for x in ex.atm_runs().values())
        if count != seen:
            seen = count
            yield view(ex)
    yield view(ex)
    if r.error:
        gr.Warning(f"ATM failed: {r.error}")


def cancel(ex) -> dict:
    """The status once the run has stopped after the task it is training (or, if that takes long, that it is
    stopping: its own event then shows the end); finished rounds stay saved."""
    runs.cancel(ATM, wait=runs.CANCEL_WAIT)
    return {"status": status_text(ex)}


def build_atm_tab(app, method: gr.Dropdown, matrix_kind: gr.Dropdown) -> Bundle:
    """The tab; returns what it shows (the page load fills it)."""
    ex = app.ex
    with gr.Tab("ATM", id="atm"):
        with gr.Row():
            variant = gr.Radio(list(VARIANTS), value=DEFAULT_VARIANT, label="ATM variant", elem_id="atm-variant",
                               info="standard and posthoc: the paper's rule (alpha = 1/T); adaptive: tvexplorer's extension "
                                    "(half-epoch rounds, alpha by a line search on validation, tasks weighted by their loss)")
            rounds = gr.Slider(1, MAX_ATM_ROUNDS, value=1, step=1, label="Rounds to run", elem_id="atm-rounds")
            run_btn = gr.Button("Run more rounds", variant="primary", elem_id="atm-run")
            cancel_btn = gr.Button("Cancel", variant="stop", elem_id="atm-cancel")
        status = gr.Markdown(elem_id="atm-status")
        runs_text = gr.Markdown(elem_id="atm-runs")
        chart = gr.Plot(label="Accuracy against the training budget", elem_id="atm-chart")
        with gr.Row():
            orthogonality = gr.Plot(label="Orthogonality of the task updates", elem_id="atm-orthogonality")
            with gr.Column():
                round_matrix = gr.Dropdown(label="A round's task-update cosines", elem_id="atm-round-matrix")
                round_cosines = gr.Plot(elem_id="atm-round-cosines")
        gains_variant = gr.Dropdown(label="Per-task gains of the run", elem_id="atm-gains-variant")
        gains = gr.Plot(label="Each task against task arithmetic", elem_id="atm-gains")
        table = gr.Dataframe(label="Saved rounds", interactive=False, elem_id="atm-table", buttons=["copy", "fullscreen"])
    shown = Bundle(status=status, runs=runs_text, chart=chart, orthogonality=orthogonality, gains_variant=gains_variant,
                   gains=gains, round_matrix=round_matrix, round_cosines=round_cosines, table=table, method=method,
                   matrix_kind=matrix_kind)
    wire(run_btn.click, lambda v: run(ex, v), Bundle(variant=variant, rounds=rounds), shown, stream=True,
         on_error=lambda line: view(ex, f"⚠ {line}"), concurrency_limit=None, show_progress="full",
         show_progress_on=[status], **PRIVATE)
    wire(cancel_btn.click, lambda v: cancel(ex), None, shown, concurrency_limit=None, **PRIVATE)
    wire(gains_variant.input, lambda v: {"gains": atm_figures.gains_figure(ex.atm_summary(), v["gains_variant"])},
         Bundle(gains_variant=gains_variant), shown, **PRIVATE)
    wire(round_matrix.input, lambda v: {"round_cosines": round_cosines(ex, v["round_matrix"])},
         Bundle(round_matrix=round_matrix), shown, **PRIVATE)
    return shown
