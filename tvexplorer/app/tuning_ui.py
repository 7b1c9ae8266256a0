"""Gradio glue for the Merge panel's advanced part: per-layer coefficients, "Tune on validation" and
AdaMerging as a cancellable background run, the table of recorded results against grid task arithmetic,
and applying a result to the controls. The work is in `tuning.py` (plain data, no gradio)."""
from __future__ import annotations

import json
import math
import time

import gradio as gr
import pandas as pd

from ..core.errors import first_line
from . import tuning
from .explorer import clean
from .ui import USER_ERRORS, Handlers, api_errors

LAYER_PLACEHOLDER = '{"digits": {"resblocks.0": 0.5, "final": 1.2}}'


def _pct(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(100 * x, 2)


class TuningHandlers:
    def __init__(self, handlers: Handlers):
        self.h, self.ex = handlers, handlers.ex

    def layer_help(self) -> str:
        return (f"{{task: {{layer: value}}}}, multiplying that task's coefficient on that layer (default 1, range "
                f"{tuning.LAYER_COEFFICIENT_RANGE[0]:g} to {tuning.LAYER_COEFFICIENT_RANGE[1]:g}); layers: "
                f"{', '.join(tuning.layer_names(self.ex))}. Press Enter or Evaluate to apply.")

    def table(self) -> pd.DataFrame:
        rows = tuning.summary(self.ex)["rows"]
        return pd.DataFrame([{"merge": r["name"], "validation %": _pct(r["val_average"]), "test %": _pct(r["average"]),
                              "scaling": r["scaling"], "seconds": r["seconds"]} for r in rows])

    def choices(self) -> list[str]:
        return list(tuning.summary(self.ex)["records"])

    def status_text(self) -> str:
        job = tuning.current()
        where = f"Results are recorded in {self.ex.atm_root}/manifest.json."
        if job is None:
            return f"No tuning run in this session yet. {where}"
        s = job.status()
        what = f"{tuning.OBJECTIVES[s['objective']]}, {'per layer' if s['per_layer'] else 'per task'}, {s['steps']} steps"
        p = s["progress"]
        if s["state"] in ("running", "cancelling"):
            return f"… **{s['state'].capitalize()}:** {what}; {p.get('text', '')} ({p.get('done', 0)}/{p.get('total', 1)})."
        if s["state"] == "finished":
            r = job.result
            return (f"✓ **Finished** {what} in {s['seconds']:.1f} s: validation {_pct(r['val_average'])} %, "
                    f"test {_pct(r['average'])} %. {where}")
        return {"cancelled": "■ **Cancelled**; nothing was recorded.", "failed": f"✗ **Failed:** {s['error']}"}[s["state"]]

    def view(self, status: str | None = None):
        """(status, table, choices of recorded results)."""
        return status or self.status_text(), self.table(), gr.update(choices=self.choices())

    def run(self, objective: str):
        def follow(per_layer, steps, progress=gr.Progress()):
            try:
                job = tuning.start(self.ex, objective, per_layer, None if steps in (None, "") else steps)
            except USER_ERRORS as e:
                gr.Warning(first_line(e))
                yield self.view(f"⚠ {first_line(e)}")
                return
            while not job.finished.wait(0.25):
                p = job.progress()
                progress((p.get("done", 0), max(1, p.get("total", 1))), desc=p.get("text", ""), unit="steps")
                yield self.view()
            yield self.view()
        follow.__name__ = f"tune_{objective}"
        return follow

    def cancel(self) -> str:
        if tuning.cancel():
            return "■ **Cancelling…** the run stops at its next step; nothing is recorded."
        return self.status_text()

    def apply(self, name):
        """Updates for [*Handlers.settings_updates outputs, layer box]: a recorded result on the controls."""
        records = tuning.summary(self.ex)["records"]
        if name not in records:
            gr.Warning(f"choose a recorded result first; recorded: {', '.join(records) or '(none)'}")
            return [gr.skip()] * (4 + len(self.h.param_methods) + len(self.ex.tasks)) + [gr.skip()]
        fitted = tuning.fit_to_ranges(records[name], self.ex.tasks)
        layers = json.dumps(fitted["layer_coefficients"]) if fitted["layer_coefficients"] else ""
        return [*self.h.settings_updates(fitted["method"], fitted["scaling"], fitted["coefficients"]), layers]

    # ------------------------------------------------------------ API
    def api_tune(self, objective: str = "accuracy", per_layer: bool = False, steps: int | None = None) -> dict:
        """Tune coefficients on validation (objective 'accuracy') or run AdaMerging ('entropy'), per task or
        per layer, and wait for the result, which is recorded in the cache. Fails at once with 'busy' while
        another run is going."""
        def run():
            job = tuning.start(self.ex, objective, per_layer, steps)
            job.finished.wait()
            if job.error:
                raise ValueError(job.error)
            return clean({"result": job.result, **tuning.summary(self.ex), "seconds": round(time.time() - job.started, 2)})
        return api_errors(run)()

    def api_tune_status(self) -> dict:
        job = tuning.current()
        return clean(job.status()) if job else {"state": "idle"}

    def api_tune_cancel(self) -> dict:
        return {"cancel_requested": tuning.cancel(), **self.api_tune_status()}
