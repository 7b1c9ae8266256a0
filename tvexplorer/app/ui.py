"""Gradio glue: the functions `app.py` wires to components and API endpoints.

Each UI handler takes component values and returns component values; the `api_*` functions take and
return plain JSON data for gradio_client. Bad input never reaches the page as a stack trace: the
UI handlers show a warning and a status line and leave the previous numbers in place, the API
functions raise gr.Error with the same one-line message.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from functools import wraps
from pathlib import Path

import gradio as gr
from gradio.components.plot import PlotData

from ..core.errors import CacheError, first_line
from ..merging import METHODS
from . import figures, jobs, presenters
from .about import ABOUT
from .export import merged_model_zip
from .explorer import (ALL_TASKS, COEFFICIENT_RANGE, PRESETS, PREVIEW_METHODS, SCALING_RANGE, SLIDER_STEP, VECTOR_KINDS,
                       Explorer, open_explorer)

log = logging.getLogger("tvexplorer.app")
USER_ERRORS = (ValueError, KeyError, CacheError, FileNotFoundError, jobs.Busy)

STATUS_ID, RESULTS_ID = "merge-status", "merge-results"
STALE_ON_INPUT_JS = ("() => { document.getElementById('%s')?.classList.add('stale'); "
                     "return '✎ **Settings changed** — release the slider, press Enter or click Evaluate; "
                     "the numbers below are stale.'; }" % RESULTS_ID)
STALE_ON_RUN_JS = ("() => { document.getElementById('%s')?.classList.add('stale'); "
                   "return '… **Updating** — the numbers below are from the previous settings.'; }" % RESULTS_ID)
FRESH_JS = ("(status) => { if (String(status).startsWith('✓')) "
            "document.getElementById('%s')?.classList.remove('stale'); }" % RESULTS_ID)
# Keyboard users: arrow keys on a slider fire `input` only; releasing the key counts as releasing the
# slider, and Enter in a slider's number box commits it (its blur is gradio's release).
KEYBOARD_JS = """
() => {
  const keys = new Set(["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "PageUp", "PageDown", "Home", "End"]);
  document.addEventListener("keyup", (e) => {
    const t = e.target;
    if (!(t instanceof HTMLInputElement) || !t.closest(".tvx-control")) return;
    if (t.type === "range" && keys.has(e.key)) t.dispatchEvent(new PointerEvent("pointerup", {bubbles: true}));
    else if (t.type === "number" && e.key === "Enter") t.blur();
  }, true);
}
"""
CSS = """
#merge-results.stale #merge-plot, #merge-results.stale #merge-table { opacity: 0.45; transition: opacity 0.2s; }
#merge-status p { margin: 0.2em 0; }
.tvx-banner { border-left: 4px solid #c9463d; padding: 0.4em 0.8em; }
"""


def api_errors(fn):
    """API endpoint: bad input -> gr.Error with one line; anything unexpected is logged and reported briefly."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as e:
            raise gr.Error(first_line(e), print_exception=False) from None
        except Exception as e:  # never a traceback to the client; the server log has it
            log.exception("internal error in %s", fn.__name__)
            raise gr.Error(f"internal error ({type(e).__name__}): {first_line(e)}", print_exception=False) from None
    return wrapper


def _plot(figure: dict) -> PlotData:
    """A figure given as plotly JSON, handed to gr.Plot as is (gr.Plot would otherwise want a go.Figure)."""
    return PlotData(type="plotly", plot=json.dumps(figure))


def _percent(x):
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


class Handlers:
    """Everything `app.py` wires, for one Explorer."""

    def __init__(self, explorer: Explorer):
        self.ex = explorer
        self.params = [(m.name, p) for m in METHODS.values() for p in m.params]  # one control each
        self.param_methods = [m.name for m in METHODS.values() if m.params]       # one group each
        self.tmp = Path(tempfile.mkdtemp(prefix="tvexplorer-app-"))

    # ------------------------------------------------------------ component specs (used by app.py's layout)
    @property
    def tasks(self) -> list[str]:
        return self.ex.tasks

    def slider_args(self, what: str) -> dict:
        low, high = SCALING_RANGE if what == "scaling" else COEFFICIENT_RANGE
        return {"minimum": low, "maximum": high, "step": SLIDER_STEP}

    def param_args(self, p) -> dict:
        """gr.Slider / gr.Number arguments for a method parameter, inside its allowed interval."""
        if p.integer:
            return {"value": p.default_for(len(self.tasks)), "minimum": p.low, "maximum": p.high, "precision": 0, "step": 1}
        step = 1.0 if p.high - p.low >= 10 else 0.01
        low = p.low + step if p.low_open else p.low
        high = p.high - step if p.high_open else p.high
        return {"value": p.default_for(len(self.tasks)), "minimum": low, "maximum": high, "step": step}

    def header(self) -> str:
        i = self.ex.info()
        return (f"# Task vector explorer\nModel `{i['model']}` · {i['parameters']:,} image-encoder parameters · "
                f"{len(self.tasks)} tasks ({', '.join(self.tasks)}) · evaluation on {i['device']} in {i['precision']} · "
                f"cache `{i['cache']}`")

    def about(self) -> str:
        return ABOUT + "\n### The loaded cache\n" + presenters.about_cache(self.ex)

    # ------------------------------------------------------------ merge panel
    def _split(self, values):
        n = len(self.params)
        params = {}
        for (method, p), v in zip(self.params, values[:n]):
            params.setdefault(method, {})[p.name] = v
        coefficients = dict(zip(self.tasks, values[n:]))
        return params, coefficients, values[n + len(self.tasks)] if len(values) > n + len(self.tasks) else None

    def evaluate(self, method, vectors, scaling, *values):
        """UI: settings -> (status, figure, table, csv file, raw json); bad input keeps the old numbers."""
        params, coefficients, layers = self._split(values)
        try:
            kind = self.ex.parse_method(method)
            if kind[0] == "atm":
                result = self.ex.evaluate(method, scaling=scaling, layer_coefficients=layers)
            else:
                result = self.ex.evaluate(method, coefficients=coefficients, scaling=scaling,
                                          params=params.get(kind[1], {}), vectors=vectors, layer_coefficients=layers)
        except USER_ERRORS as e:
            gr.Warning(first_line(e))
            return (f"⚠ **Not updated:** {first_line(e)} — the numbers below are from the previous settings.",
                    gr.skip(), gr.skip(), gr.skip(), gr.skip())
        table = presenters.result_table(self.ex, result)
        digest = hashlib.sha1(json.dumps(result, sort_keys=True, default=str).encode()).hexdigest()[:10]
        csv = self.tmp / f"merge_{result['method'].replace(':', '_')}_{digest}.csv"
        table.to_csv(csv, index=False)
        what = result["label"] + (f" over {result['vectors']}" if result.get("vectors") else "")
        status = (f"✓ **Up to date** — {what}, scaling {result['scaling']:g}: average **{_percent(result['average'])}**, "
                  f"normalized **{_percent(result['normalized_average'])}** (evaluated in {result['seconds']:.2f} s)")
        return status, _plot(figures.merge_figure(result, self.tasks)), table, str(csv), result

    def preview(self, method, vectors, scaling, *values):
        """UI: the first-order preview at once, where there is one (task arithmetic, averaging); the exact
        evaluation that follows replaces it. Anything else leaves the outputs to the exact evaluation."""
        params, coefficients, layers = self._split(values)
        try:  # the stored preview is per task: per-layer settings wait for the exact numbers
            result = None if layers and layers.strip() else self.ex.preview(method, coefficients, scaling, vectors)
        except USER_ERRORS:
            result = None  # the exact evaluation reports the problem
        if result is None:
            return (gr.skip(),) * 5
        status = (f"◔ **Preview** (first-order, not exact) — {result['label']}, scaling {result['scaling']:g}: average "
                  f"**{_percent(result['average'])}**, normalized **{_percent(result['normalized_average'])}** "
                  f"({1000 * result['seconds']:.0f} ms); exact numbers on their way. _{result['error_note']}_")
        return (status, _plot(figures.merge_figure(result, self.tasks)), presenters.result_table(self.ex, result),
                gr.skip(), gr.skip())

    def download_model(self, fmt, method, vectors, scaling, *values):
        """UI: the merged model of the current settings (or ATM round) as a zip file; bad input warns."""
        params, coefficients, layers = self._split(values)
        try:
            if layers and layers.strip():
                raise ValueError("per-layer coefficients are not exported: clear the per-layer box to download this merge")
            kind = self.ex.parse_method(method)
            return str(merged_model_zip(self.ex, self.tmp, fmt, method, vectors, scaling, coefficients,
                                        params.get(kind[1], {})))
        except USER_ERRORS as e:
            gr.Warning(first_line(e))
            return gr.skip()

    def settings_updates(self, method, scaling=None, coefficients=None):
        """Updates for [method, scaling, vectors, *param groups, *task sliders, hint] after a method change or preset."""
        try:
            kind = self.ex.parse_method(method)
        except ValueError as e:
            gr.Warning(first_line(e))
            kind, method = ("merge", "task_arithmetic"), "task_arithmetic"
        atm = kind[0] == "atm"
        s = self.ex.default_scaling(method) if scaling is None else scaling
        groups = [gr.update(visible=(not atm and kind[1] == m)) for m in self.param_methods]
        tasks = [gr.update(interactive=not atm, **({} if coefficients is None else {"value": coefficients[t]}))
                 for t in self.tasks]
        if atm:
            hint = (f"**{self.ex.method_label(method)}** is one fixed merged model saved by ATM: the per-task coefficients "
                    "and the choice of task vectors do not apply; the scaling multiplies its merged delta (1 = as saved).")
        else:
            hint = presenters.method_hint(METHODS[kind[1]], kind[1] in PREVIEW_METHODS)
        # The vectors choice stays as it is (an ATM round ignores it, as the hint says).
        return [gr.update(value=method), gr.update(value=s), gr.skip(), *groups, *tasks, hint]

    def on_method(self, method):
        return self.settings_updates(method)

    def preset(self, name: str):
        def apply(method, vectors, scaling):
            try:
                p = self.ex.preset(name, method if self.ex.parse_method(method)[0] == "merge" else "task_arithmetic", vectors)
            except USER_ERRORS as e:
                gr.Warning(first_line(e))
                p = self.ex.preset(name, "task_arithmetic", vectors)
            s = scaling if p["scaling"] is None else p["scaling"]
            return self.settings_updates(p["method"], s, p["coefficients"])
        apply.__name__ = f"preset_{name}"
        return apply

    # ------------------------------------------------------------ gradient alignment panel
    def task_choices(self) -> list[tuple[str, str]]:
        return [("all tasks", ALL_TASKS), *((t, t) for t in self.tasks)]

    def alignment(self, task, matrix_kind):
        """UI: (note, summary table, per-epoch figure, per-layer figure, cosine matrix figure, theory
        note, theory figure)."""
        try:
            tasks = self.ex.check_task(task)
            alignments = {t: self.ex.task_alignment(t) for t in tasks}
            note = presenters.full_batch_text(self.ex, tasks)
            summary = presenters.alignment_summary(self.ex, tasks)
            for col in summary.columns[1:]:  # cosines to 4 decimals, norms and errors to 4 significant digits
                cosine = col.startswith("cos")
                summary[col] = summary[col].map(lambda x, cosine=cosine: round(x, 4) if cosine else float(f"{x:.4g}"))
            epochs = figures.epochs_figure(alignments)
            layers = figures.layers_figure({t: self.ex.layer_table(t) for t in tasks})
        except USER_ERRORS as e:
            gr.Warning(first_line(e))
            return (f"⚠ {first_line(e)}", gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())
        return (note, summary, epochs, layers, self.matrix(matrix_kind), *self.theory())

    def theory(self):
        """UI: (note, figure) of the Theory section: the SGD record, or a line saying there is none."""
        record = self.ex.theory()
        if record is None:
            return ("This cache has no SGD theory record; build one with `build --theory-tasks TASK ...` (the demo recipe makes one).",
                    figures.empty("no SGD theory record in this cache"))
        first = [r["slope"] for r in record["slopes"] if r["epoch"] == 1]
        note = f"{record['note']} Measured slopes after one epoch: {min(first):.2f} to {max(first):.2f}."
        return note, figures.theory_figure(record)

    def matrix(self, kind):
        try:
            labels = dict((k, label) for label, k in self.ex.matrix_choices())
            m = self.ex.cosine_matrix(kind)
        except USER_ERRORS as e:
            gr.Warning(first_line(e))
            return gr.skip()
        return figures.matrix_figure(m, f"Task-by-task cosine similarity: {labels.get(kind, kind)}")

    # ------------------------------------------------------------ ATM panel
    def _atm_view(self, status: str):
        """(status, chart, table, method choices, matrix choices)."""
        summary = self.ex.atm_summary()
        return (status, figures.atm_figure(summary, self.tasks), presenters.atm_table(self.ex),
                gr.update(choices=self.ex.method_choices()), gr.update(choices=self.ex.matrix_choices()))

    def _atm_status_text(self) -> str:
        job = jobs.current()
        where = self.ex.where_saved()
        if job is None:
            return f"No ATM run in this session yet. {where}"
        s = job.status()
        p = s["progress"]
        if s["state"] in ("running", "cancelling"):
            return (f"… **{s['state'].capitalize()}:** ATM {s['variant']}, {s['rounds_requested']} round(s); "
                    f"{s['rounds_finished'] if s['rounds_finished'] else 'no'} finished yet; now {p.get('text', '')} "
                    f"({p.get('done', 0)}/{p.get('total', 1)} steps). {where}")
        text = {"finished": f"✓ **Finished** {s['rounds_finished']} round(s) of ATM {s['variant']} in {s['seconds']:.1f} s.",
                "cancelled": f"■ **Cancelled** after {s['rounds_finished']} finished round(s) of ATM {s['variant']}; "
                             "the unfinished round was not saved.",
                "failed": f"✗ **Failed:** {s['error']} ({s['rounds_finished']} round(s) finished and saved)."}[s["state"]]
        return f"{text} {where}"

    def atm_refresh(self):
        return self._atm_view(self._atm_status_text())

    def atm_run(self, variant, rounds, progress=gr.Progress()):
        """UI generator: start a run (or report busy), then follow it, redrawing the chart after each round."""
        try:
            job = self.ex.start_atm(rounds, variant)
        except USER_ERRORS as e:
            gr.Warning(first_line(e))
            yield self._atm_view(f"⚠ {first_line(e)}")
            return
        seen = None
        while True:
            finished = job.finished.wait(0.25)
            p = job.progress()
            progress((p.get("done", 0), max(1, p.get("total", 1))), desc=p.get("text", ""), unit="steps")
            count = sum(len(r["rounds"]) for r in self.ex.atm_runs().values())
            if count != seen or finished:
                seen = count
                yield self._atm_view(self._atm_status_text())
            if finished:
                break
        if job.error:
            gr.Warning(f"ATM failed: {job.error}")

    def atm_cancel(self):
        if jobs.cancel():
            gr.Info("Cancelling: the run stops after the task it is training; finished rounds stay saved.")
            return "■ **Cancelling…** the run stops after the task it is training now; finished rounds stay saved."
        return self._atm_status_text()

    # ------------------------------------------------------------ API endpoints (plain data)
    def api_info(self) -> dict:
        """What is loaded: model, tasks with accuracies, parameters, file sizes, ranges, ATM rounds."""
        return api_errors(self.ex.info)()

    def api_methods(self) -> dict:
        """Merge methods with their parameters and the saved ATM rounds, as the evaluate endpoint accepts them."""
        def run():
            return {"methods": {m.name: {"label": m.label, "paper": m.paper, "default_scaling": m.default_scaling,
                                         "params": [{"name": p.name, "default": p.default_for(len(self.tasks)),
                                                     "low": p.low, "high": p.high, "low_open": p.low_open, "high_open": p.high_open,
                                                     "integer": p.integer, "help": p.help} for p in m.params]}
                                for m in METHODS.values()},
                    "atm_rounds": [k for _, k in self.ex.method_choices() if k.startswith("atm:")],
                    "vectors": list(VECTOR_KINDS), "presets": list(PRESETS),
                    "coefficient_range": list(COEFFICIENT_RANGE), "scaling_range": list(SCALING_RANGE)}
        return api_errors(run)()

    def api_evaluate(self, method: str = "task_arithmetic", coefficients: dict | None = None, scaling: float | None = None,
                     params: dict | None = None, vectors: str = "tau", layer_coefficients: dict | None = None) -> dict:
        """Merge the task vectors and evaluate exactly. coefficients: {task: value} (default 1 each, range
        [-1, 2]); scaling: global factor (default: the method's; range [-1, 2]); params: the method's own
        by name (names, defaults and ranges: /methods); vectors: 'tau' (full) or 'tau1' (first epoch); layer_coefficients:
        {task: {layer: value}} (layers: embedding, resblocks.<i>, final; range [-5, 5]). method may also be a
        saved ATM round, 'atm:<variant>:<round>'. Returns accuracies in [0, 1] per task, average and normalized."""
        return api_errors(self.ex.evaluate)(method, coefficients, scaling, params, vectors, layer_coefficients)

    def api_preview(self, method: str = "task_arithmetic", coefficients: dict | None = None, scaling: float | None = None,
                    vectors: str = "tau") -> dict:
        """The instant first-order (linearised) prediction of /evaluate for task_arithmetic and average, with
        the build-time difference to exact evaluation in error_note; {} where the cache has no preview."""
        return api_errors(self.ex.preview)(method, coefficients, scaling, vectors) or {}

    def api_preset(self, name: str = "equal", method: str = "task_arithmetic", vectors: str = "tau") -> dict:
        """The settings a preset button applies: equal, inverse_t, best_val, zero (scaling null = unchanged)."""
        return api_errors(self.ex.preset)(name, method, vectors)

    def api_alignment(self, task: str = "all") -> dict:
        """Gradient alignment for one task or 'all': per-task summary with per-epoch records, per-layer records,
        and task-by-task cosine matrices of tau, tau1, g0 and of every saved ATM round's task updates."""
        return api_errors(self.ex.alignment)(task)

    def api_atm(self, rounds: int = 1, variant: str = "standard") -> dict:
        """Run `rounds` more ATM rounds (1 to 10; 'standard' or 'posthoc') and wait for them; every finished
        round is saved. Fails at once with 'busy' while another run is going."""
        def run():
            job = self.ex.start_atm(rounds, variant)
            job.finished.wait()
            if job.error:
                raise RuntimeError(f"ATM failed after {job.completed} saved round(s): {job.error}")
            summary = self.ex.atm_summary()
            all_rounds = summary["variants"].get(variant, {}).get("rounds", [])
            return {"variant": variant, "state": job.state, "rounds_finished": job.completed,
                    "new_rounds": all_rounds[len(all_rounds) - job.completed:] if job.completed else [],
                    "rounds": all_rounds, "task_arithmetic_average": summary["references"]["task arithmetic"],
                    "saved_to": summary["saved_to"], "seconds": round(time.time() - job.started, 2)}
        return api_errors(run)()

    def api_atm_status(self) -> dict:
        """The running or last ATM run: state, progress, rounds finished, where rounds are saved."""
        return api_errors(self.ex.atm_status)()

    def api_atm_cancel(self) -> dict:
        """Ask the running ATM run to stop after the task it is training (finished rounds stay saved)."""
        return {"cancel_requested": jobs.cancel(), **api_errors(self.ex.atm_status)()}


class Unavailable:
    """Stands in for Handlers when the cache cannot be opened: the page says why, the API fails with it."""

    def __init__(self, message: str):
        self.message = message

    def banner(self) -> str:
        return (f"# Task vector explorer\n\n**The cache could not be opened:** {self.message}\n\n"
                "Start the app with `python app.py --cache DIR` (or set `TVEXPLORER_CACHE`), or build the demo "
                "with `python -m tvexplorer build-demo --out assets/demo`.")

    def _fail(self, *args, **kwargs):
        raise gr.Error(f"no cache loaded: {self.message}", print_exception=False)

    def api_info(self) -> dict:
        self._fail()

    def api_methods(self) -> dict:
        self._fail()

    def api_evaluate(self, method: str = "task_arithmetic", coefficients: dict | None = None, scaling: float | None = None,
                     params: dict | None = None, vectors: str = "tau", layer_coefficients: dict | None = None) -> dict:
        self._fail()

    def api_preview(self, method: str = "task_arithmetic", coefficients: dict | None = None, scaling: float | None = None,
                    vectors: str = "tau") -> dict:
        self._fail()

    def api_preset(self, name: str = "equal", method: str = "task_arithmetic", vectors: str = "tau") -> dict:
        self._fail()

    def api_alignment(self, task: str = "all") -> dict:
        self._fail()

    def api_atm(self, rounds: int = 1, variant: str = "standard") -> dict:
        self._fail()

    def api_atm_status(self) -> dict:
        self._fail()

    def api_atm_cancel(self) -> dict:
        self._fail()


def load(cache=None, **kwargs) -> Handlers | Unavailable:
    """Handlers for the cache at `cache` (default: $TVEXPLORER_CACHE or the bundled demo), or an
    Unavailable that explains in one line why it could not be opened."""
    try:
        return Handlers(open_explorer(cache, **kwargs))
    except (CacheError, FileNotFoundError, ValueError, KeyError, OSError) as e:
        log.error("cannot open cache: %s", first_line(e))
        return Unavailable(first_line(e))
