"""The app's named API endpoints for gradio_client: plain JSON in and out, bad input as one-line errors.
The /evaluate docstring is generated from the merge registry, so it lists every method's parameters."""
from __future__ import annotations

import gradio as gr

from ..merging import METHODS
from . import results, runs, tuning
from .explorer import ATM, clean
from .presets import PRESETS
from .inputs import COEFFICIENT_RANGE, SCALING_RANGE, VECTOR_KINDS
from .tabs.common import api_errors


def _param_text(p) -> str:
    return f"{p.name} (default {p.default_text}; {p.help})"


def evaluate_doc() -> str:
    methods = "; ".join(f"{m.name}: " + (", ".join(_param_text(p) for p in m.params) or "none") for m in METHODS.values())
    low, high = COEFFICIENT_RANGE
    return (f"Merge the task vectors and evaluate exactly. method: one of {', '.join(METHODS)}, or a saved ATM "
            f"round 'atm:<variant>:<round>'. coefficients: {{task: value}} (default 1 each, range [{low:g}, {high:g}]); "
            f"scaling: global factor (default: the method's; range [{SCALING_RANGE[0]:g}, {SCALING_RANGE[1]:g}]); "
            f"params: the method's own, by method - {methods}. vectors: 'tau' (full) or 'tau1' (first epoch); "
            "layer_coefficients: {task: {layer: value}} (layers: embedding, resblocks.<i>, final; range [-5, 5]). "
            "Returns accuracies in [0, 1] per task, average and normalized.")


class Api:
    """The endpoints for one app (ui.App), or, where the cache could not be opened, endpoints that say why."""

    def __init__(self, app=None, unavailable: str | None = None):
        self.app, self.unavailable = app, unavailable

    @property
    def ex(self):
        if self.app is None:
            raise gr.Error(f"no cache loaded: {self.unavailable}", print_exception=False)
        return self.app.ex

    def api_info(self) -> dict:
        """What is loaded: model, tasks with accuracies, parameters, file sizes, ranges, ATM rounds."""
        return api_errors(lambda: self.ex.info())()

    def api_methods(self) -> dict:
        """Merge methods with their parameters and the saved ATM rounds, as the evaluate endpoint accepts them."""
        def run():
            return {"methods": {m.name: {"label": m.label, "paper": m.paper, "default_scaling": m.default_scaling,
                                         "params": [{"name": p.name, "default": p.default_for(len(self.ex.tasks)),
                                                     "low": p.low, "high": p.high, "low_open": p.low_open, "high_open": p.high_open,
                                                     "integer": p.integer, "help": p.help} for p in m.params]}
                                for m in METHODS.values()},
                    "atm_rounds": [k for _, k in self.ex.method_choices() if k.startswith("atm:")],
                    "vectors": list(VECTOR_KINDS), "presets": list(PRESETS),
                    "coefficient_range": list(COEFFICIENT_RANGE), "scaling_range": list(SCALING_RANGE)}
        return api_errors(run)()

    def api_evaluate(self, method: str = "task_arithmetic", coefficients: dict | None = None, scaling: float | None = None,
                     params: dict | None = None, vectors: str = "tau", layer_coefficients: dict | None = None) -> dict:
        return api_errors(lambda: self.ex.evaluate(method, coefficients, scaling, params, vectors, layer_coefficients))()
    api_evaluate.__doc__ = evaluate_doc()

    def api_preview(self, method: str = "task_arithmetic", coefficients: dict | None = None, scaling: float | None = None,
                    vectors: str = "tau") -> dict:
        """The instant first-order (linearised) prediction of /evaluate for task_arithmetic and average, with
        the build-time difference to exact evaluation in error_note; {} where the cache has no preview."""
        return api_errors(lambda: self.ex.preview(method, coefficients, scaling, vectors))() or {}

    def api_preset(self, name: str = "equal", method: str = "task_arithmetic", vectors: str = "tau") -> dict:
        """The settings a preset button applies: equal, inverse_t, best_val, zero (scaling null = unchanged)."""
        return api_errors(lambda: self.ex.preset(name, method, vectors))()

    def api_alignment(self, task: str = "all") -> dict:
        """Gradient alignment for one task or 'all': per-task summary with per-epoch records, per-layer records,
        and task-by-task cosine matrices of tau, tau1, g0 and of every saved ATM round's task updates."""
        return api_errors(lambda: self.ex.alignment(task))()

    def api_atm(self, rounds: int = 1, variant: str = "standard") -> dict:
        """Run `rounds` more ATM rounds (1 to 10; variant 'standard' or 'posthoc', the paper's rule, or
        'adaptive', tvexplorer's extension) and wait for them; every finished round is saved, with its budget
        (a multiple of fine-tuning's training), alpha and mean |cos| of the task updates. Fails at once with
        'busy' while another run is going."""
        def run():
            ex = self.ex
            r = ex.start_atm(rounds, variant).wait()
            done = sum(r.outputs)
            if r.error:
                raise gr.Error(f"ATM failed after {done} saved round(s): {r.error}", print_exception=False)
            summary = ex.atm_summary()
            run = summary["runs"].get(variant, {})
            saved = run.get("rounds", [])
            return {"variant": variant, "description": run.get("description"), "state": r.state, "rounds_finished": done,
                    "new_rounds": saved[len(saved) - done:] if done else [], "rounds": saved,
                    "gap_closed": run.get("gap_closed", {}), "task_arithmetic_average": self.ex.references()["task arithmetic"],
                    "saved_to": summary["saved_to"], "seconds": r.seconds}
        return api_errors(run)()

    def api_atm_status(self) -> dict:
        """The running or last ATM run: state, progress, rounds finished, where rounds are saved."""
        return api_errors(lambda: self.ex.atm_status())()

    def api_atm_cancel(self) -> dict:
        """Ask the running ATM run to stop after the task it is training (finished rounds stay saved)."""
        return api_errors(lambda: {"cancel_requested": runs.cancel(ATM), **self.ex.atm_status()})()

    def api_tune(self, objective: str = "accuracy", per_layer: bool = False, steps: int | None = None) -> dict:
        """Tune coefficients on validation (objective 'accuracy') or run AdaMerging ('entropy'), per task or
        per layer, and wait for the result, which is recorded in the cache. Fails at once with 'busy' while
        another run is going."""
        def run():
            r = tuning.start(self.ex, objective, per_layer, steps).wait()
            if r.error or r.state != "finished":
                raise ValueError(r.error or "the run was cancelled; nothing was recorded")
            return clean({"result": r.result, **tuning.summary(self.ex), "seconds": r.seconds})
        return api_errors(run)()

    def api_tune_status(self) -> dict:
        """The running or last tuning run: state, progress, settings, error."""
        r = tuning.current()
        return clean(r.status()) if r else {"state": "idle"}

    def api_tune_cancel(self) -> dict:
        """Ask the running tuning run to stop at its next step (nothing is recorded)."""
        return {"cancel_requested": tuning.cancel(), **self.api_tune_status()}

    def api_results(self) -> dict:
        """The results table as recorded: per row its label, best scaling, parameters, accuracy per task
        (in [0, 1]; null where not computed yet), average and normalized average."""
        return api_errors(lambda: clean({"tasks": self.ex.tasks, "rows": results.rows(self.ex)}))()


ENDPOINTS = {"info": {}, "methods": {}, "evaluate": dict(concurrency_limit=4, concurrency_id="evaluate"),
             "preview": {}, "preset": {}, "alignment": dict(concurrency_limit=2),
             # a run answers "busy" at once, and its status and cancel must never wait behind it
             "atm": dict(concurrency_limit=None), "atm_status": dict(concurrency_limit=None),
             "atm_cancel": dict(concurrency_limit=None), "tune": dict(concurrency_limit=None),
             "tune_status": dict(concurrency_limit=None), "tune_cancel": dict(concurrency_limit=None), "results": {}}


def add_api(api: Api) -> None:
    """Named endpoints for gradio_client; each returns plain JSON."""
    for name, options in ENDPOINTS.items():
        gr.api(getattr(api, f"api_{name}"), api_name=name, **options)
