"""tvexplorer web app: layout and event wiring only.

    python app.py                      # the demo cache in assets/demo (or $TVEXPLORER_CACHE)
    python app.py --cache DIR          # another cache
    python app.py --port 7860 --host 0.0.0.0

Every computation lives in the package: the explorer service (tvexplorer/app/explorer.py), one module per
tab with its handlers (tvexplorer/app/tabs/), the API endpoints (tvexplorer/app/api.py) and the background
runs (tvexplorer/app/runs.py); see README.md for the endpoints and deployment on Hugging Face Spaces.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import gradio as gr

from tvexplorer.app import ui
from tvexplorer.app.api import add_api
from tvexplorer.app.tabs import about, addtask, alignment, atm, merge, results, tuning
from tvexplorer.app.tabs.common import PRIVATE, Bundle, wire


def build(app) -> gr.Blocks:
    with gr.Blocks(title="Task vector explorer") as demo:
        add_api(app.api)  # first, so that the endpoints own their names
        if isinstance(app, ui.Unavailable):
            gr.Markdown(app.banner(), elem_classes="tvx-banner")
            return demo
        header = gr.Markdown(app.header())
        with gr.Tabs():
            with gr.Tab("Merge", id="merge"):
                merge_tab = merge.MergeTab(app)
                tuning.build_tuning_panel(app, merge_tab, demo)
                merge_tab.render_evaluate_button()
            align = alignment.build_alignment_tab(app)
            atm_view = atm.build_atm_tab(app, merge_tab.settings.method, align.matrix_kind)
            results.build_results_tab(app)
            addtask.build_add_task_tab(app, Bundle(
                header=header, coefficients=merge_tab.settings.coefficients, method=merge_tab.settings.method,
                align_task=align.task, matrix_kind=align.matrix_kind,
                **{f"atm_{k}": c for k, c in atm_view.named.items() if k not in ("method", "matrix_kind")}))
            about.build_about_tab(app)
        merge_tab.wire()
        # page load: the saved rounds (and their choices in the other tabs), then the first numbers
        merge_tab.then_evaluate(wire(demo.load, lambda v: atm.view(app.ex), None, atm_view, **PRIVATE))
    return demo


def launch(app, **kwargs):
    """Build, queue and launch (kwargs go to gr.Blocks.launch)."""
    return build(app).queue(default_concurrency_limit=4).launch(js=ui.KEYBOARD_JS, css=ui.CSS, **kwargs)


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
    app = ui.load(args.cache, device=args.device, read_only=args.read_only, workdir=args.workdir, precision=args.precision,
                  plan_folder=Path(__file__).resolve().parent)  # a Space's evaluation_plan.json lies beside app.py
    launch(app, server_name=args.host, server_port=args.port, share=args.share, show_error=False)


if __name__ == "__main__":
    main()
