"""The "Add a task" tab: upload a zip of class folders (or a few images per class), see the classes and
counts found, name the task and start; progress and cancel as for every run (runs.py, work.py), and on
ZeroGPU the fine-tuning is GPU calls of the visitor's own. When the task is added, every tab shows it:
a coefficient slider, the charts, the alignment choices and ATM (which trains on it from then on)."""
from __future__ import annotations

import gradio as gr

from .. import addtask, runs
from ..addtask import ADD_TASK
from . import alignment, atm, merge
from .common import PRIVATE, Bundle, wire


def status_text(ex) -> str:
    run = runs.current(ADD_TASK)
    if run is None:
        return f"Nothing added in this session yet. {addtask.where_added(ex)}"
    s = run.status()
    p = s["progress"]
    if run.running:
        return (f"… **{s['state'].capitalize()}:** adding {s['task']}; now {p.get('text', '')} "
                f"({p.get('done', 0)}/{p.get('total', 1)} steps). {addtask.where_added(ex)}")
    return {"finished": f"✓ **Added** {s['task']} in {s['seconds']:.1f} s: {summary_text(run.result)}",
            "cancelled": f"■ **Cancelled:** {s['task']} was not added; the cache is as it was.",
            "failed": f"✗ **Failed:** {s['error']} ({s['task']} was not added)."}[s["state"]]


def summary_text(summary: dict | None) -> str:
    if not summary:
        return ""
    a = summary["accuracy"]
    words = ", ".join(f"{k.replace('_', ' ')} {100 * v:.1f} %" for k, v in a.items())
    ta = summary["task_arithmetic"].get("task_arithmetic")
    merged = f"; task arithmetic over all tasks {100 * ta['average']:.1f} % at scaling {ta['best_scaling']:g}" if ta else ""
    aside = f" Set aside until recomputed: {'; '.join(summary['set_aside'])}." if summary["set_aside"] else ""
    return f"{words}{merged}. It is now in every tab.{aside}"


def found(v: dict) -> dict:
    """What the upload (or the images collected per class) holds; a problem is one warning line."""
    source = addtask.inspect(v["zip"], v["staged"])
    return {"found": addtask.found_text(source), "table": addtask.found_table(source)}


def stage(v: dict) -> dict:
    """Add the chosen images to the class named, then show what the collection holds."""
    staging = addtask.Staging(v["staged"] or None)
    staging.add(v["classname"], v["images"] or [])
    out = {"staged": str(staging.folder), "images": None}
    try:
        return {**out, **found({"zip": None, "staged": str(staging.folder)})}
    except ValueError as e:  # too few images so far: say so, keep what was collected
        return {**out, "found": f"Collected so far — {e}", "table": None}


def everywhere(app) -> dict:
    """What the other tabs show once the task set changed: a slider per task, the alignment and ATM
    choices, the ATM tab (whose runs were set aside for the new task set) and the page's header."""
    ex = app.ex
    return {**merge.task_sliders(app), "header": app.header(), "method": gr.update(choices=ex.method_choices()),
            "align_task": gr.update(choices=alignment.task_choices(ex)),
            **{f"atm_{k}": v for k, v in atm.view(ex).items() if k not in ("method", "matrix_kind")},
            "matrix_kind": gr.update(choices=ex.matrix_choices())}


def start(app, v: dict, refresh=everywhere):
    """Start adding, follow the run, and when the task is in, explore it and show it in every tab."""
    ex = app.ex
    r = addtask.start(ex, v["name"], addtask.source_of(v["zip"], v["staged"]), v["templates"])
    for _ in r.follow():
        yield {"status": status_text(ex)}
    if r.complete:
        ex.reload()
        yield {"status": status_text(ex), **refresh(app)}
    else:
        yield {"status": status_text(ex)}
        if r.error:
            gr.Warning(f"adding the task failed: {r.error}")


def cancel(ex) -> dict:
    if runs.cancel(ADD_TASK):
        return {"status": "■ **Cancelling…** the task is not added; the cache stays as it was."}
    return {"status": status_text(ex)}


def build_add_task_tab(app, shown_elsewhere: Bundle) -> None:
    """The tab; `shown_elsewhere`: the other tabs' components that `everywhere` names, updated once a task is in."""
    ex = app.ex
    with gr.Tab("Add a task", id="add-task"):
        gr.Markdown("Bring your own task: a zip of `train/<class>/*` and `test/<class>/*` images, or of class "
                    "folders alone, or a few images per class below. The task is fine-tuned from the base model with "
                    "the cache's training settings and then merged with the others; `python -m tvexplorer "
                    "remove-task` takes it off again. " + addtask.limits_text(zero_gpu=runs.ZERO_GPU)
                    + f" Up to {merge.ADDED_SLOTS} tasks added while the app runs get a slider at once; more after a "
                    "restart.", elem_id="add-limits")
        with gr.Row():
            with gr.Column():
                zip_file = gr.File(label="Zip of class folders", file_types=[".zip"], type="filepath",
                                   elem_id="add-zip")
                with gr.Accordion("…or a few images per class", open=False):
                    classname = gr.Textbox(label="Class", placeholder="red disc", elem_id="add-class")
                    images = gr.File(label="Its images", file_count="multiple", file_types=["image"],
                                     type="filepath", elem_id="add-images")
                    stage_btn = gr.Button("Add these images to the class", size="sm", elem_id="add-stage")
                name = gr.Textbox(label="Task name", placeholder="my_discs", elem_id="add-name",
                                  info="a letter, then letters, digits or underscores")
                templates = gr.Textbox(label="Prompt template", value="a photo of a {}.", elem_id="add-template")
                with gr.Row():
                    start_btn = gr.Button("Add the task", variant="primary", elem_id="add-start")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="add-cancel")
            with gr.Column():
                found_md = gr.Markdown("Nothing uploaded yet.", elem_id="add-found")
                table = gr.Dataframe(label="Classes and images found", interactive=False, elem_id="add-table")
                status = gr.Markdown(status_text(ex), elem_id="add-status")
        staged = gr.State(None)
    settings = Bundle(zip=zip_file, staged=staged, name=name, templates=templates)
    view = Bundle(found=found_md, table=table, status=status, staged=staged, images=images)
    wire(zip_file.change, found, settings, view, names=["zip", "staged"],
         on_error=lambda line: {"found": f"⚠ {line}", "table": None}, **PRIVATE)
    wire(stage_btn.click, stage, Bundle(staged=staged, classname=classname, images=images), view,
         on_error=lambda line: {"found": f"⚠ {line}"}, **PRIVATE)
    everything = Bundle(**view.named, **shown_elsewhere.named)
    wire(start_btn.click, lambda v: start(app, {**v, "templates": [v["templates"]]}), settings, everything,
         stream=True, on_error=lambda line: {"status": f"⚠ {line}"}, concurrency_limit=None, show_progress="full",
         show_progress_on=[status], **PRIVATE)
    wire(cancel_btn.click, lambda v: cancel(ex), None, view, concurrency_limit=None, **PRIVATE)
