"""The Gradient alignment tab: task vectors against first-epoch gradients per task, per epoch and per
parameter tensor, the task-by-task cosine matrices, and the SGD theory record."""
from __future__ import annotations

import gradio as gr

from .. import figures, presenters
from ..inputs import ALL_TASKS
from .common import PRIVATE, Bundle, wire

BUSY = dict(concurrency_limit=2, concurrency_id="alignment")


def theory(ex) -> dict:
    """The Theory section: the SGD record, or a line saying there is none."""
    record = ex.theory()
    if record is None:
        return {"theory_note": "This cache has no SGD theory record; build one with `build --theory-tasks TASK ...` "
                               "(the demo recipe makes one).",
                "theory_plot": figures.empty("no SGD theory record in this cache")}
    first = [r["slope"] for r in record["slopes"] if r["epoch"] == 1]
    return {"theory_note": f"{record['note']} Measured slopes after one epoch: {min(first):.2f} to {max(first):.2f}.",
            "theory_plot": figures.theory_figure(record)}


def matrix(ex, kind) -> dict:
    labels = {k: label for label, k in ex.matrix_choices()}
    return {"matrix_plot": figures.matrix_figure(ex.cosine_matrix(kind),
                                                 f"Task-by-task cosine similarity: {labels.get(kind, kind)}")}


def alignment(ex, v: dict) -> dict:
    tasks = ex.check_task(v["task"])
    summary = presenters.alignment_summary(ex, tasks)
    for col in summary.columns[1:]:  # cosines to 4 decimals, norms and errors to 4 significant digits
        summary[col] = summary[col].map(lambda x, col=col: round(x, 4) if col.startswith("cos") else float(f"{x:.4g}"))
    return {"note": presenters.full_batch_text(ex, tasks), "table": summary,
            "epochs_plot": figures.epochs_figure({t: ex.task_alignment(t) for t in tasks}),
            "layers_plot": figures.layers_figure({t: ex.layer_table(t) for t in tasks}),
            **matrix(ex, v["matrix_kind"]), **theory(ex)}


def task_choices(ex) -> list[tuple[str, str]]:
    return [("all tasks", ALL_TASKS), *((t, t) for t in ex.tasks)]


def build_alignment_tab(app) -> Bundle:
    """The tab's components; returns the settings (the ATM tab updates the matrix choices)."""
    ex = app.ex
    with gr.Tab("Gradient alignment", id="alignment") as tab:
        with gr.Row():
            task = gr.Dropdown(task_choices(ex), value=ALL_TASKS, label="Task",
                               elem_id="align-task")
            matrix_kind = gr.Dropdown(ex.matrix_choices(), value="tau", label="Cosine matrix of", elem_id="matrix-kind")
        note = gr.Markdown()
        summary = gr.Dataframe(label="Alignment summary (norms in parameter units)", interactive=False,
                               buttons=["copy", "fullscreen"])
        epochs_plot = gr.Plot(label="Per epoch")
        with gr.Row():
            layers_plot = gr.Plot(label="Per parameter tensor")
            matrix_plot = gr.Plot(label="Task-by-task cosines", elem_id="matrix-plot")
        gr.Markdown("### Theory: paper B's theorem under plain SGD")
        theory_note = gr.Markdown(elem_id="theory-note")
        theory_plot = gr.Plot(label="Relative error against learning rate", elem_id="theory-plot")
    settings = Bundle(task=task, matrix_kind=matrix_kind)
    shown = Bundle(note=note, table=summary, epochs_plot=epochs_plot, layers_plot=layers_plot, matrix_plot=matrix_plot,
                   theory_note=theory_note, theory_plot=theory_plot)
    wire([task.input, tab.select], lambda v: alignment(ex, v), settings, shown,
         on_error=lambda line: {"note": f"⚠ {line}"}, trigger_mode="always_last", **BUSY, **PRIVATE)
    wire(matrix_kind.input, lambda v: matrix(ex, v["matrix_kind"]), settings, shown, names=["matrix_kind"],
         trigger_mode="always_last", **BUSY, **PRIVATE)
    return settings
