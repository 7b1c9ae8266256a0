"""tvexplorer web app: layout and event wiring only.

    python app.py                      # the demo cache in assets/demo (or $TVEXPLORER_CACHE)
    python app.py --cache DIR          # another cache
    python app.py --port 7860 --host 0.0.0.0

Every computation lives in the package (tvexplorer.app: the explorer service, presenters, figures,
handlers, jobs); see README.md for the API endpoints and deployment on Hugging Face Spaces.
"""
from __future__ import annotations

import argparse

import gradio as gr

from tvexplorer.app import results, ui
from tvexplorer.app.tuning_ui import LAYER_PLACEHOLDER, TuningHandlers
from tvexplorer.app.explorer import MAX_ATM_ROUNDS, PRESETS, VECTOR_KINDS
from tvexplorer.pipeline.export import FORMATS
from tvexplorer.science.atm import VARIANTS

EVAL = dict(concurrency_limit=4, concurrency_id="evaluate")


def add_api(h, th=None) -> None:
    """Named endpoints for gradio_client; each returns plain JSON."""
    gr.api(h.api_info, api_name="info")
    gr.api(h.api_methods, api_name="methods")
    gr.api(h.api_evaluate, api_name="evaluate", **EVAL)
    gr.api(h.api_preview, api_name="preview")
    gr.api(h.api_preset, api_name="preset")
    gr.api(h.api_alignment, api_name="alignment", concurrency_limit=2)
    gr.api(h.api_atm, api_name="atm", concurrency_limit=None)  # the run lock answers "busy" at once
    gr.api(h.api_atm_status, api_name="atm_status", concurrency_limit=None)
    gr.api(h.api_atm_cancel, api_name="atm_cancel", concurrency_limit=None)
    if th is not None:
        gr.api(th.api_tune, api_name="tune", concurrency_limit=None)  # the run lock answers "busy" at once
        gr.api(th.api_tune_status, api_name="tune_status", concurrency_limit=None)
        gr.api(th.api_tune_cancel, api_name="tune_cancel", concurrency_limit=None)


def build(h) -> gr.Blocks:
    with gr.Blocks(title="Task vector explorer") as demo:
        th = None if isinstance(h, ui.Unavailable) else TuningHandlers(h)
        add_api(h, th)  # first, so that the endpoints own their names
        if isinstance(h, ui.Unavailable):
            gr.Markdown(h.banner(), elem_classes="tvx-banner")
            return demo
        gr.Markdown(h.header())
        with gr.Tabs():
            # ---------------------------------------------------------------- merge
            with gr.Tab("Merge", id="merge"):
                with gr.Row():
                    with gr.Column(scale=2, min_width=320):
                        method = gr.Dropdown(h.ex.method_choices(), value="task_arithmetic", label="Merge method",
                                             elem_id="method")
                        hint = gr.Markdown(h.settings_updates("task_arithmetic")[-1])
                        vectors = gr.Radio([(label, key) for key, label in VECTOR_KINDS.items()], value="tau",
                                           label="Task vectors", elem_id="vectors")
                        # the app opens on the task-arithmetic merge chosen on validation
                        scaling = gr.Slider(**h.slider_args("scaling"), value=h.ex.preset("best_val")["scaling"],
                                            label="Global scaling λ", elem_id="scaling", elem_classes="tvx-control")
                        groups, params = [], []
                        for m in h.param_methods:
                            with gr.Group(visible=False) as group:
                                for name, p in h.params:
                                    if name != m:
                                        continue
                                    label = f"{m.upper()} {p.name}"
                                    if p.integer:
                                        params.append(gr.Number(label=label, info=p.help, elem_id=f"param-{m}-{p.name}",
                                                                **h.param_args(p)))
                                    else:
                                        params.append(gr.Slider(label=label, info=p.help, elem_id=f"param-{m}-{p.name}",
                                                                elem_classes="tvx-control", **h.param_args(p)))
                            groups.append(group)
                        with gr.Row():
                            presets = {k: gr.Button(label, size="sm", elem_id=f"preset-{k}") for k, label in PRESETS.items()}
                        with gr.Accordion("Per-task coefficients", open=True):
                            task_sliders = [gr.Slider(**h.slider_args("coefficient"), value=1.0, label=t,
                                                      elem_id=f"coef-{t}", elem_classes="tvx-control") for t in h.tasks]
                        with gr.Accordion("Advanced: per-layer coefficients and tuning", open=False):
                            layer_box = gr.Textbox(label="Per-layer coefficients (JSON)", info=th.layer_help(),
                                                   placeholder=LAYER_PLACEHOLDER, lines=2, elem_id="layer-coefficients")
                            with gr.Row():
                                tune_per_layer = gr.Checkbox(label="Per layer", elem_id="tune-per-layer")
                                tune_steps = gr.Number(label="Steps (blank: default)", precision=0, elem_id="tune-steps")
                            with gr.Row():
                                tune_btn = gr.Button("Tune on validation", size="sm", elem_id="tune-run")
                                ada_btn = gr.Button("AdaMerging", size="sm", elem_id="adamerging-run")
                                tune_cancel = gr.Button("Cancel", variant="stop", size="sm", elem_id="tune-cancel")
                            tune_status = gr.Markdown(elem_id="tune-status")
                            tune_table = gr.Dataframe(label="Grid task arithmetic against tuned coefficients (averages)",
                                                      interactive=False, elem_id="tune-table")
                            with gr.Row():
                                tuned_pick = gr.Dropdown([], label="Recorded result", elem_id="tune-pick")
                                apply_btn = gr.Button("Apply to the controls", size="sm", elem_id="tune-apply")
                        evaluate_btn = gr.Button("Evaluate", variant="primary", elem_id="evaluate")
                    with gr.Column(scale=3, elem_id=ui.RESULTS_ID):
                        status = gr.Markdown("… Loading", elem_id=ui.STATUS_ID)
                        plot = gr.Plot(label="Accuracy per task", elem_id="merge-plot")
                        table = gr.Dataframe(label="Accuracy (%) — copy with the button, or download as CSV",
                                             elem_id="merge-table", interactive=False, buttons=["copy", "fullscreen"])
                        download = gr.DownloadButton("Download CSV", elem_id="merge-csv", size="sm")
                        with gr.Row():
                            model_format = gr.Radio([(label, key) for key, label in FORMATS.items()], value="open_clip",
                                                    label="Merged model format", elem_id="model-format")
                            model_button = gr.Button("Download merged model", size="sm", elem_id="model-download")
                        model_file = gr.File(label="Merged model (zip) for the current settings", elem_id="model-file")
                        with gr.Accordion("Result as JSON", open=False):
                            raw = gr.JSON(label="evaluate() result")
            # ---------------------------------------------------------------- gradient alignment
            with gr.Tab("Gradient alignment", id="alignment") as align_tab:
                with gr.Row():
                    align_task = gr.Dropdown(h.task_choices(), value="all", label="Task", elem_id="align-task")
                    matrix_kind = gr.Dropdown(h.ex.matrix_choices(), value="tau", label="Cosine matrix of",
                                              elem_id="matrix-kind")
                note = gr.Markdown()
                align_table = gr.Dataframe(label="Alignment summary (norms in parameter units)", interactive=False,
                                           buttons=["copy", "fullscreen"])
                epochs_plot = gr.Plot(label="Per epoch")
                with gr.Row():
                    layers_plot = gr.Plot(label="Per parameter tensor")
                    matrix_plot = gr.Plot(label="Task-by-task cosines", elem_id="matrix-plot")
                gr.Markdown("### Theory: paper B's theorem under plain SGD")
                theory_note = gr.Markdown(elem_id="theory-note")
                theory_plot = gr.Plot(label="Relative error against learning rate", elem_id="theory-plot")
            # ---------------------------------------------------------------- ATM
            with gr.Tab("ATM", id="atm"):
                with gr.Row():
                    variant = gr.Radio(list(VARIANTS), value="standard", label="ATM variant", elem_id="atm-variant")
                    rounds = gr.Slider(1, MAX_ATM_ROUNDS, value=1, step=1, label="Rounds to run", elem_id="atm-rounds")
                    run_btn = gr.Button("Run more rounds", variant="primary", elem_id="atm-run")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="atm-cancel")
                atm_status = gr.Markdown(elem_id="atm-status")
                atm_chart = gr.Plot(label="Accuracy per round", elem_id="atm-chart")
                atm_table = gr.Dataframe(label="Saved rounds (%)", interactive=False, elem_id="atm-table",
                                         buttons=["copy", "fullscreen"])
            # ---------------------------------------------------------------- results table
            with gr.Tab("Results table", id="results") as results_tab:
                results_status = gr.Markdown(elem_id="results-status")
                results_table = gr.Dataframe(label="Every merge method at its best validation scaling (%)",
                                             interactive=False, elem_id="results-table", buttons=["copy", "fullscreen"])
                results_fill = gr.Button("Compute missing rows", elem_id="results-fill")
            # ---------------------------------------------------------------- about
            with gr.Tab("About", id="about"):
                gr.Markdown(h.about())

        # -------------------------------------------------------------------- merge wiring
        settings = [method, scaling, vectors, *groups, *task_sliders, hint]
        inputs = [method, vectors, scaling, *params, *task_sliders, layer_box]
        outputs = [status, plot, table, download, raw]
        sliders = [scaling, *task_sliders, *(c for c in params if isinstance(c, gr.Slider))]
        numbers = [c for c in params if isinstance(c, gr.Number)]
        commit = [s.release for s in sliders] + [n.submit for n in numbers] + [n.blur for n in numbers] \
            + [vectors.input, evaluate_btn.click, layer_box.submit]
        evaluating = dict(trigger_mode="always_last", show_progress="minimal", show_progress_on=[status],
                          api_visibility="private", **EVAL)

        model_button.click(h.download_model, [model_format, *inputs], [model_file], api_visibility="private",
                           concurrency_limit=1, concurrency_id="export")
        gr.on([s.input for s in sliders] + [n.input for n in numbers], None, None, [status],
              js=ui.STALE_ON_INPUT_JS, queue=False, show_progress="hidden")
        gr.on(commit, None, None, [status], js=ui.STALE_ON_RUN_JS, queue=False, show_progress="hidden")
        # The first-order preview answers at once (task arithmetic and averaging), the exact numbers replace it.
        previewing = dict(queue=False, show_progress="hidden", api_visibility="private")
        gr.on(commit, h.preview, inputs, outputs, trigger_mode="always_last", **previewing) \
            .then(h.evaluate, inputs, outputs, **evaluating).success(None, [status], None, js=ui.FRESH_JS)

        def then_evaluate(dep):
            dep.then(None, None, [status], js=ui.STALE_ON_RUN_JS, queue=False, show_progress="hidden") \
               .then(h.preview, inputs, outputs, **previewing) \
               .then(h.evaluate, inputs, outputs, **evaluating).success(None, [status], None, js=ui.FRESH_JS)

        then_evaluate(method.input(h.on_method, [method], settings, queue=False, api_visibility="private"))
        for key, button in presets.items():
            then_evaluate(button.click(h.preset(key), [method, vectors, scaling], settings, queue=False,
                                       api_visibility="private"))

        tune_view = [tune_status, tune_table, tuned_pick]
        for button, objective in ((tune_btn, "accuracy"), (ada_btn, "entropy")):
            button.click(th.run(objective), [tune_per_layer, tune_steps], tune_view, concurrency_limit=None,
                         show_progress="full", show_progress_on=[tune_status], api_visibility="private")
        tune_cancel.click(th.cancel, None, [tune_status], concurrency_limit=None, api_visibility="private")
        then_evaluate(apply_btn.click(th.apply, [tuned_pick], [*settings, layer_box], queue=False,
                                      api_visibility="private"))
        demo.load(th.view, None, tune_view, api_visibility="private")

        # -------------------------------------------------------------------- alignment wiring
        gr.on([align_task.input, align_tab.select], h.alignment, [align_task, matrix_kind],
              [note, align_table, epochs_plot, layers_plot, matrix_plot, theory_note, theory_plot], trigger_mode="always_last",
              concurrency_limit=2, concurrency_id="alignment", api_visibility="private")
        matrix_kind.input(h.matrix, [matrix_kind], [matrix_plot], trigger_mode="always_last",
                          concurrency_limit=2, concurrency_id="alignment", api_visibility="private")

        # -------------------------------------------------------------------- ATM wiring
        atm_view = [atm_status, atm_chart, atm_table, method, matrix_kind]
        run_btn.click(h.atm_run, [variant, rounds], atm_view, concurrency_limit=None, show_progress="full",
                      show_progress_on=[atm_status], api_visibility="private")
        cancel_btn.click(h.atm_cancel, None, [atm_status], concurrency_limit=None, api_visibility="private")

        # -------------------------------------------------------------------- results table wiring
        r = results.Results(h.ex)
        gr.api(r.api_results, api_name="results")
        results_tab.select(r.view, None, [results_status, results_table], api_visibility="private")
        results_fill.click(r.fill, None, [results_status, results_table], concurrency_limit=1,
                           show_progress="full", api_visibility="private")

        # -------------------------------------------------------------------- page load: saved rounds, first numbers
        then_evaluate(demo.load(h.atm_refresh, None, atm_view, api_visibility="private"))
    return demo


def launch(h, **kwargs):
    """Build, queue and launch (kwargs go to gr.Blocks.launch)."""
    return build(h).queue(default_concurrency_limit=4).launch(js=ui.KEYBOARD_JS, css=ui.CSS, **kwargs)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="tvexplorer web app")
    p.add_argument("--cache", default=None, help="cache folder (default: $TVEXPLORER_CACHE, else assets/demo)")
    p.add_argument("--host", default=None, help="interface to listen on (default 127.0.0.1, or $GRADIO_SERVER_NAME)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860, or $GRADIO_SERVER_PORT)")
    p.add_argument("--device", default=None, help="torch device for evaluation (default: cuda when available)")
    p.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="evaluation precision (auto: bfloat16 where the hardware is fast at it; builds record float32)")
    p.add_argument("--read-only", action="store_true", default=None,
                   help="never write into the cache; ATM rounds go to a copy-on-write work folder")
    p.add_argument("--workdir", default=None, help="where work folders go (default: $TVEXPLORER_WORKDIR or the temp dir)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    args = p.parse_args(argv)
    h = ui.load(args.cache, device=args.device, read_only=args.read_only, workdir=args.workdir, precision=args.precision)
    launch(h, server_name=args.host, server_port=args.port, share=args.share, show_error=False)


if __name__ == "__main__":
    main()
