"""The Merge panel's preset buttons: named settings of the coefficients and the scaling."""
from __future__ import annotations

PRESETS = {"equal": "All equal", "inverse_t": "1/T", "best_val": "Best on validation", "zero": "Zero everything"}


def preset(ex, name: str, method: str = "task_arithmetic", vectors: str = "tau") -> dict:
    """Settings of a preset for explorer `ex`: {method, scaling (None: keep), coefficients}."""
    tasks = ex.tasks
    if name == "equal":
        return {"method": method, "scaling": ex.default_scaling(method), "coefficients": dict.fromkeys(tasks, 1.0)}
    if name == "inverse_t":
        return {"method": method, "scaling": round(1.0 / len(tasks), 4), "coefficients": dict.fromkeys(tasks, 1.0)}
    if name == "best_val":
        which = "task_arithmetic_one_epoch" if vectors == "tau1" else "task_arithmetic"
        m = ex.metrics
        best = m.best_scaling(which) if m.best_scaling(which) is not None else m.merge("task_arithmetic").best_scaling
        return {"method": "task_arithmetic", "scaling": float(best), "coefficients": dict.fromkeys(tasks, 1.0)}
    if name == "zero":
        return {"method": method, "scaling": None, "coefficients": dict.fromkeys(tasks, 0.0)}
    raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
