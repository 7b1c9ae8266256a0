"""Tuning on validation and AdaMerging for the app: per-layer coefficients checked against the cache, the
run (one at a time per process, see runs.py and work.py), and the plain data the Merge panel shows of
recorded results. Results go into the manifest of the cache ATM writes to (the cache itself, or the
read-only cache's work copy)."""
from __future__ import annotations

import json

from ..core.checks import in_range, number
from ..merging import check_layer_coefficients
from ..science import tuning
from . import runs
from .work import DEFAULT_STEPS, OBJECTIVES, tune_work

KIND, BUSY = "tuning", "a tuning or AdaMerging run"
LAYER_COEFFICIENT_RANGE = (-5.0, 5.0)
MAX_STEPS = 5000


def layer_coefficients(explorer, value) -> dict[str, dict[str, float]]:
    """{task: {layer: value}} from a dict or JSON text (empty: none), checked against the cache and the range."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"layer coefficients must be JSON such as {{\"digits\": {{\"resblocks.0\": 0.5}}}}; "
                             f"could not parse it ({e.msg})") from None
    if not isinstance(value, dict):
        raise ValueError("layer coefficients must map tasks to {layer: value} objects")
    checked = check_layer_coefficients(value, explorer.tasks, explorer.source.layout)
    for task, row in checked.items():
        for layer, c in row.items():
            in_range(f"layer coefficient {task}:{layer}", number(f"layer coefficient {task}:{layer}", c),
                     *LAYER_COEFFICIENT_RANGE)
    return checked


def layer_names(explorer) -> list[str]:
    return list(explorer.source.layout.layers())


# ---------------------------------------------------------------- the run

def check_request(objective, per_layer, steps) -> tuple[str, bool, int]:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of: {', '.join(OBJECTIVES)}")
    n = number("steps", steps)
    if n != int(n) or not 1 <= n <= MAX_STEPS:
        raise ValueError(f"steps is {steps!r}; it must be a whole number from 1 to {MAX_STEPS}")
    return objective, bool(per_layer), int(n)


def start(explorer, objective: str = "accuracy", per_layer: bool = False, steps: int | None = None) -> runs.Run:
    """Start a run (see runs.py); Busy (one line) while another tuning run is going in this process. The
    result is recorded in the cache the app may write (the cache, or a read-only cache's work copy)."""
    if steps is None or steps == "":
        steps = DEFAULT_STEPS.get(objective, 1)
    objective, per_layer, steps = check_request(objective, per_layer, steps)
    if runs.busy(KIND):
        raise runs.Busy(runs.busy_message(KIND, BUSY))
    root = explorer.writable_atm_root()
    explorer.atm_cache  # noqa: B018  (notes the manifest as it is now, so the recorded result is seen as a change)
    return runs.start(KIND, f"{OBJECTIVES[objective]}, {'per layer' if per_layer else 'per task'}, {steps} steps",
                      tune_work(str(root), objective, per_layer, steps, runs.PIECE_SECONDS if runs.ZERO_GPU else None),
                      {"objective": objective, "per_layer": per_layer, "steps": steps}, what=BUSY)


def current() -> runs.Run | None:
    return runs.current(KIND)


def cancel(wait: float = 0.0) -> bool:
    """Ask the running run to stop at its next step (waiting up to `wait` s for it); False when nothing runs."""
    return runs.cancel(KIND, wait)


# ---------------------------------------------------------------- what the panel shows

def summary(explorer) -> dict:
    """Grid-searched task arithmetic and every recorded tuning result, validation and test averages."""
    cache = explorer.atm_cache
    records = {name: record.to_json() for name, record in cache.manifest.tuning.items()}
    rows = [{"name": "grid task arithmetic", **_row(tuning.grid_baseline(cache))}]
    rows += [{"name": name, **_row(record)} for name, record in records.items()]
    return {"rows": rows, "records": records}


def fit_to_ranges(record: dict, tasks: list[str], coefficient_high: float = 2.0) -> dict:
    """A recorded result's settings for the Merge panel's controls: per-task coefficients that a slider can
    show (|c| <= coefficient_high) and per-layer ones within LAYER_COEFFICIENT_RANGE, a common factor moved
    into the scaling (the registry's methods are positively homogeneous in their coefficients)."""
    coefficients = {t: 1.0 for t in tasks} | (record.get("coefficients") or {})
    layers = record.get("layer_coefficients") or {}
    per_task = max([abs(c) / coefficient_high for c in coefficients.values()] + [1.0])
    per_layer = max([abs(c) / LAYER_COEFFICIENT_RANGE[1] for row in layers.values() for c in row.values()] + [1.0])
    return {"method": record["method"], "scaling": record["scaling"] * per_task * per_layer,
            "coefficients": {t: c / per_task for t, c in coefficients.items()},
            "layer_coefficients": {t: {layer: c / per_layer for layer, c in row.items()} for t, row in layers.items()}}


def _row(record: dict) -> dict:
    return {"val_average": record.get("val_average"), "average": record.get("average"),
            "scaling": record.get("scaling"), "seconds": record.get("seconds")}
