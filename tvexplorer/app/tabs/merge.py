"""The Merge tab: a merge method and its parameters, per-task coefficients and a global scaling, evaluated
exactly (after an instant first-order preview where there is one), with the numbers as a chart, a table,
a CSV file and the merged model to download. The advanced part (per-layer coefficients, tuning) is
tabs/tuning.py, built inside this tab."""
from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator

import gradio as gr

from ...merging import METHODS
from ...pipeline.export import FORMATS
from .. import figures, presenters
from ..explorer import PREVIEW_METHODS
from ..presets import PRESETS
from ..export import merged_model_zip
from ..inputs import COEFFICIENT_RANGE, SCALING_RANGE, SLIDER_STEP, VECTOR_KINDS
from ..tuning import LAYER_COEFFICIENT_RANGE, layer_names
from .common import PRIVATE, Bundle, percent, plot, wire

STATUS_ID, RESULTS_ID = "merge-status", "merge-results"
STALE_ON_INPUT_JS = ("() => { document.getElementById('%s')?.classList.add('stale'); "
                     "return '✎ **Settings changed** — release the slider, press Enter or click Evaluate; "
                     "the numbers below are stale.'; }" % RESULTS_ID)
STALE_ON_RUN_JS = ("() => { document.getElementById('%s')?.classList.add('stale'); "
                   "return '… **Updating** — the numbers below are from the previous settings.'; }" % RESULTS_ID)
FRESH_JS = ("(status) => { if (String(status).startsWith('✓')) "
            "document.getElementById('%s')?.classList.remove('stale'); }" % RESULTS_ID)
EVAL = dict(concurrency_limit=4, concurrency_id="evaluate")
EVALUATED = ["method", "vectors", "scaling", "params", "coefficients", "layers"]  # the settings an evaluation reads
PARAM_METHODS = [m.name for m in METHODS.values() if m.params]  # one group of controls each


LAYER_PLACEHOLDER = '{"digits": {"resblocks.0": 0.5, "final": 1.2}}'


def layer_help(ex) -> str:
    low, high = LAYER_COEFFICIENT_RANGE
    return (f"{{task: {{layer: value}}}}, multiplying that task's coefficient on that layer (default 1, range "
            f"{low:g} to {high:g}); layers: {', '.join(layer_names(ex))}. Press Enter or Evaluate to apply.")


def param_args(p, tasks: int) -> dict:
    """gr.Slider / gr.Number arguments for a method parameter, inside its allowed interval, at its default
    for a merge of `tasks` task vectors."""
    if p.integer:
        return {"value": p.default_for(tasks), "minimum": p.low, "maximum": p.high, "precision": 0, "step": 1}
    step = 1.0 if p.high - p.low >= 10 else 0.01
    low = p.low + step if p.low_open else p.low
    high = p.high - step if p.high_open else p.high
    return {"value": p.default_for(tasks), "minimum": low, "maximum": high, "step": step}


def split_params(values: dict) -> dict[str, dict]:
    """{"ties.k": 20, ...} -> {"ties": {"k": 20}, ...}."""
    out: dict[str, dict] = {}
    for key, v in values.items():
        method, _, name = key.partition(".")
        out.setdefault(method, {})[name] = v
    return out


# ---------------------------------------------------------------- one slider per task, tasks added included

ADDED_SLOTS = 4  # hidden sliders for tasks added while the app runs (more appear after a restart)


def slots(app) -> list[str]:
    """The coefficient sliders' names, in task order: the tasks the page was built with, then the spare
    sliders that tasks added since take (tabs/addtask.py)."""
    return getattr(app, "coefficient_slots", None) or list(app.ex.tasks)


def by_task(app, values: dict | None) -> dict | None:
    """Slider values {slot: value} as coefficients {task: value} (a spare slot no task has taken is left out)."""
    if not values:
        return values
    named = dict(zip(slots(app), app.ex.tasks))
    return {named[k]: v for k, v in values.items() if k in named}


def task_sliders(app) -> dict:
    """Every slider after the task set changed: one per task (at 1), the spare ones hidden."""
    tasks = app.ex.tasks
    return {"coefficients": {slot: gr.update(visible=i < len(tasks), value=1.0, label=tasks[i] if i < len(tasks) else slot)
                             for i, slot in enumerate(slots(app))}}


# ---------------------------------------------------------------- handlers (named values in, named values out)

class Requests:
    """The settings each browser session asked to see last (the preview records them; every evaluation
    follows a preview). An exact evaluation of other settings than its session's last request has been
    superseded: it stops, before its first task or at the next one (the newer evaluation waits for it: one
    per tab at a time), and shows nothing more, since its numbers would overwrite the newer preview."""

    def __init__(self, sessions: int = 1000):
        self._last: OrderedDict[str, str] = OrderedDict()
        self._sessions, self._lock = sessions, threading.Lock()

    @staticmethod
    def _key(settings: dict) -> str:
        return json.dumps(settings, sort_keys=True, default=str)

    def ask(self, session: str | None, settings: dict) -> None:
        if session is None:
            return
        with self._lock:
            self._last.pop(session, None)
            self._last[session] = self._key(settings)
            while len(self._last) > self._sessions:
                self._last.popitem(last=False)

    def superseded(self, session: str | None, settings: dict) -> bool:
        with self._lock:
            return session is not None and self._last.get(session, self._key(settings)) != self._key(settings)


def evaluate(app, s: dict, session: str | None = None) -> Iterator[dict]:
    """The exact numbers of the settings `s` (method, vectors, scaling, params, coefficients, layers) as they
    come: the status line after each task, then the chart, table and files. With the browser `session`:
    nothing at all once that session has asked for other settings (Requests)."""
    ex = app.ex
    kind = ex.parse_method(s["method"])
    layers = s.get("layers") or None
    if kind.is_atm:
        answers = ex.evaluate_stream(s["method"], scaling=s.get("scaling"), layer_coefficients=layers)
    else:
        answers = ex.evaluate_stream(s["method"], coefficients=by_task(app, s.get("coefficients")), scaling=s.get("scaling"),
                                     params=split_params(s.get("params", {})).get(kind.method, {}),
                                     vectors=s.get("vectors", "tau"), layer_coefficients=layers)
    if app.merge_requests.superseded(session, s):
        return
    for result in answers:
        if app.merge_requests.superseded(session, s):
            return  # what it finished stays memoised
        yield exact_so_far(result) if result.get("partial") else exact_view(app, result)


def exact_so_far(partial: dict) -> dict:
    done = ", ".join(f"{t} {percent(a)}" for t, a in partial["exact"].items())
    return {"status": (f"◑ **Exact {len(partial['exact'])}/{partial['of']}** — {partial['label']}, scaling "
                       f"{partial['scaling']:g}: {done} ({partial['seconds']:.1f} s); the chart and table below show "
                       "the earlier numbers until every task is exact.")}


def exact_view(app, result: dict) -> dict:
    ex = app.ex
    table = presenters.result_table(ex, result)
    digest = hashlib.sha1(json.dumps(result, sort_keys=True, default=str).encode()).hexdigest()[:10]
    csv = app.tmp / f"merge_{result['method'].replace(':', '_')}_{digest}.csv"
    table.to_csv(csv, index=False)
    what = result["label"] + (f" over {result['vectors']}" if result.get("vectors") else "")
    status = (f"✓ **Up to date** — {what}, scaling {result['scaling']:g}: average **{percent(result['average'])}**, "
              f"normalized **{percent(result['normalized_average'])}** (evaluated in {result['seconds']:.2f} s)")
    return {"status": status, "plot": plot(figures.merge_figure(result, ex.tasks)), "table": table, "csv": str(csv),
            "raw": result}


def not_updated(line: str) -> dict:
    return {"status": f"⚠ **Not updated:** {line} — the numbers below are from the previous settings."}


def preview(app, s: dict, session: str | None = None) -> dict:
    """The first-order preview at once, where there is one (task arithmetic, averaging); the exact evaluation
    that follows replaces it. Anything else (or a problem, which the exact evaluation reports) leaves all as is.
    Every evaluation follows it: it records the `session`'s request (Requests)."""
    app.merge_requests.ask(session, s)
    if (s.get("layers") or "").strip():  # the stored preview is per task: per-layer settings wait for the exact numbers
        return {}
    try:
        result = app.ex.preview(s["method"], by_task(app, s.get("coefficients")), s.get("scaling"), s.get("vectors", "tau"))
    except ValueError:
        return {}
    if result is None:
        return {}
    status = (f"◔ **Preview** (first-order, not exact) — {result['label']}, scaling {result['scaling']:g}: average "
              f"**{percent(result['average'])}**, normalized **{percent(result['normalized_average'])}** "
              f"({1000 * result['seconds']:.0f} ms); exact numbers on their way. _{result['error_note']}_")
    return {"status": status, "plot": plot(figures.merge_figure(result, app.ex.tasks)),
            "table": presenters.result_table(app.ex, result)}


def download_model(app, s: dict) -> dict:
    """The merged model of the current settings (or ATM round) as a zip file."""
    if (s.get("layers") or "").strip():
        raise ValueError("per-layer coefficients are not exported: clear the per-layer box to download this merge")
    kind = app.ex.parse_method(s["method"])
    params = {} if kind.is_atm else split_params(s.get("params", {})).get(kind.method, {})
    return {"model_file": str(merged_model_zip(app.ex, app.tmp, s["format"], s["method"], s.get("vectors", "tau"),
                                               s.get("scaling"), by_task(app, s.get("coefficients")), params))}


def settings_updates(app, method: str, scaling=None, coefficients=None) -> dict:
    """The controls after a method change, a preset or an applied tuning result."""
    ex = app.ex
    kind = ex.parse_method(method)
    atm = kind.is_atm
    if atm:
        hint = (f"**{ex.method_label(method)}** is one fixed merged model saved by ATM: the per-task coefficients "
                "and the choice of task vectors do not apply; the scaling multiplies its merged delta (1 = as saved).")
    else:
        hint = presenters.method_hint(METHODS[kind.method], kind.method in PREVIEW_METHODS)
    # The vectors choice stays as it is (an ATM round ignores it, as the hint says).
    return {"method": gr.update(value=method),
            "scaling": gr.update(value=ex.default_scaling(method) if scaling is None else scaling),
            "groups": {m: gr.update(visible=not atm and kind.method == m) for m in PARAM_METHODS},
            "coefficients": {slot: gr.update(interactive=not atm, **({} if coefficients is None else {"value": coefficients[t]}))
                             for slot, t in zip(slots(app), ex.tasks)},
            "hint": hint}


def apply_preset(app, name: str, s: dict) -> dict:
    ex = app.ex
    method = "task_arithmetic" if ex.parse_method(s["method"]).is_atm else s["method"]
    p = ex.preset(name, method, s.get("vectors", "tau"))
    return settings_updates(app, p["method"], s.get("scaling") if p["scaling"] is None else p["scaling"], p["coefficients"])


# ---------------------------------------------------------------- layout and wiring

class MergeTab:
    """The Merge tab's components, by name: `settings` (what an evaluation reads), `view` (what it shows),
    `controls` (what a method change or preset updates). `then_evaluate(event)` evaluates after `event`."""

    def __init__(self, app):
        self.app = app
        ex = app.ex
        scaling_range = dict(minimum=SCALING_RANGE[0], maximum=SCALING_RANGE[1], step=SLIDER_STEP)
        coefficient_range = dict(minimum=COEFFICIENT_RANGE[0], maximum=COEFFICIENT_RANGE[1], step=SLIDER_STEP)
        with gr.Row():
            with gr.Column(scale=2, min_width=320) as self.left:
                method = gr.Dropdown(ex.method_choices(), value="task_arithmetic", label="Merge method", elem_id="method")
                hint = gr.Markdown(settings_updates(app, "task_arithmetic")["hint"])
                vectors = gr.Radio([(label, key) for key, label in VECTOR_KINDS.items()], value="tau",
                                   label="Task vectors", elem_id="vectors")
                # the app opens on the task-arithmetic merge chosen on validation
                scaling = gr.Slider(**scaling_range, value=ex.preset("best_val")["scaling"], label="Global scaling λ",
                                    elem_id="scaling", elem_classes="tvx-control")
                groups, params = {}, {}
                for m in PARAM_METHODS:
                    with gr.Group(visible=False) as groups[m]:
                        for p in METHODS[m].params:
                            kind = gr.Number if p.integer else gr.Slider
                            params[f"{m}.{p.name}"] = kind(label=f"{m.upper()} {p.name}", info=p.help,
                                                           elem_id=f"param-{m}-{p.name}", **param_args(p, len(ex.tasks)),
                                                           **({} if p.integer else {"elem_classes": "tvx-control"}))
                with gr.Row():
                    self.presets = {k: gr.Button(label, size="sm", elem_id=f"preset-{k}") for k, label in PRESETS.items()}
                app.coefficient_slots = [*ex.tasks, *(f"added-{i + 1}" for i in range(ADDED_SLOTS))]
                with gr.Accordion("Per-task coefficients", open=True):
                    coefficients = {t: gr.Slider(**coefficient_range, value=1.0, label=t, elem_id=f"coef-{t}",
                                                 elem_classes="tvx-control", visible=t in ex.tasks)
                                    for t in app.coefficient_slots}
                self.advanced = gr.Accordion("Advanced: per-layer coefficients and tuning", open=False)
                with self.advanced:
                    # one starting line: gradio submits a multi-line box on Shift+Enter only, and the help says Enter
                    layers = gr.Textbox(label="Per-layer coefficients (JSON)", info=layer_help(ex), lines=1, max_lines=6,
                                        placeholder=LAYER_PLACEHOLDER, elem_id="layer-coefficients")
                evaluate_btn = gr.Button("Evaluate", variant="primary", elem_id="evaluate", render=False)
            with gr.Column(scale=3, elem_id=RESULTS_ID):
                status = gr.Markdown("… Loading", elem_id=STATUS_ID)
                chart = gr.Plot(label="Accuracy per task", elem_id="merge-plot")
                table = gr.Dataframe(label="Accuracy (%) — copy with the button, or download as CSV",
                                     elem_id="merge-table", interactive=False, buttons=["copy", "fullscreen"])
                csv = gr.DownloadButton("Download CSV", elem_id="merge-csv", size="sm")
                with gr.Row():
                    model_format = gr.Radio([(label, key) for key, label in FORMATS.items()], value="open_clip",
                                            label="Merged model format", elem_id="model-format")
                    model_button = gr.Button("Download merged model", size="sm", elem_id="model-download")
                model_file = gr.File(label="Merged model (zip) for the current settings", elem_id="model-file")
                with gr.Accordion("Result as JSON", open=False):
                    raw = gr.JSON(label="evaluate() result")
        self.evaluate_btn = evaluate_btn
        self.settings = Bundle(method=method, vectors=vectors, scaling=scaling, params=params,
                               coefficients=coefficients, layers=layers, format=model_format)
        self.view = Bundle(status=status, plot=chart, table=table, csv=csv, raw=raw, model_file=model_file)
        self.controls = Bundle(method=method, scaling=scaling, groups=groups, coefficients=coefficients, hint=hint)
        self.model_button = model_button

    def render_evaluate_button(self) -> None:
        """The Evaluate button goes below the advanced part (built by tabs/tuning.py in between)."""
        with self.left:
            self.evaluate_btn.render()

    def wire(self) -> None:
        app, s, status = self.app, self.settings, self.view.status
        sliders = [s.scaling, *s.coefficients.values(), *(c for c in s.params.values() if isinstance(c, gr.Slider))]
        numbers = [c for c in s.params.values() if isinstance(c, gr.Number)]
        commit = [x.release for x in sliders] + [n.submit for n in numbers] + [n.blur for n in numbers] \
            + [s.vectors.input, self.evaluate_btn.click, s.layers.submit]
        gr.on([x.input for x in sliders] + [n.input for n in numbers], None, None, [status],
              js=STALE_ON_INPUT_JS, queue=False, show_progress="hidden")
        gr.on(commit, None, None, [status], js=STALE_ON_RUN_JS, queue=False, show_progress="hidden")
        self._evaluate_after(wire(commit, lambda v, session: preview(app, v, session), s, self.view, names=EVALUATED,
                                  session=True, trigger_mode="always_last", queue=False, show_progress="hidden", **PRIVATE))
        wire(self.model_button.click, lambda v: download_model(app, v), s, self.view, concurrency_limit=1,
             concurrency_id="export", **PRIVATE)
        self.then_evaluate(wire(s.method.input, lambda v: settings_updates(app, v["method"]), s, self.controls,
                                names=["method"], queue=False, **PRIVATE))
        for key, button in self.presets.items():
            self.then_evaluate(wire(button.click, lambda v, key=key: apply_preset(app, key, v), s, self.controls,
                                    names=["method", "vectors", "scaling"], queue=False, **PRIVATE))

    def _evaluate_after(self, dep) -> None:
        wire(dep.then, lambda v, session: evaluate(self.app, v, session), self.settings, self.view, on_error=not_updated,
             names=EVALUATED, stream=True, session=True, trigger_mode="always_last", show_progress="minimal",
             show_progress_on=[self.view.status], **PRIVATE, **EVAL).success(None, [self.view.status], None, js=FRESH_JS)

    def then_evaluate(self, dep) -> None:
        """After `dep`: mark the numbers stale, show the preview, then the exact numbers."""
        dep = dep.then(None, None, [self.view.status], js=STALE_ON_RUN_JS, queue=False, show_progress="hidden")
        self._evaluate_after(wire(dep.then, lambda v, session: preview(self.app, v, session), self.settings, self.view,
                                  names=EVALUATED, session=True, queue=False, show_progress="hidden", **PRIVATE))
