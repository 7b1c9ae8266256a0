"""What the app accepts: the ranges it offers, and the checks that turn values from people and programs
(component values, JSON from API clients) into checked plain data or one-line ValueErrors (unknown
methods, tasks or parameters, values that are not numbers, NaN, infinities, values out of range)."""
from __future__ import annotations

import json
import math

from ..core.checks import in_range, number
from ..merging import METHODS, default_params

COEFFICIENT_RANGE = (-1.0, 2.0)   # per-task coefficient, inclusive
SCALING_RANGE = (-1.0, 2.0)       # global scaling, inclusive
SLIDER_STEP = 0.01
MAX_ATM_ROUNDS = 10
VECTOR_KINDS = {"tau": "full task vectors (tau, after all epochs)", "tau1": "first-epoch task vectors (tau1)"}
MATRIX_KINDS = {"tau": "full task vectors tau", "tau1": "first-epoch task vectors tau1",
                "g0": "first-epoch gradients g0 at theta0"}
ALL_TASKS = "all"


def mapping(what: str, value) -> dict:
    """A dict from a dict, None, or a JSON object in a string (as API clients may send)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"{what} must be a JSON object such as {{\"name\": 1.0}}; could not parse it ({e.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object mapping names to numbers, got {type(value).__name__}")
    return value


def clean(obj):
    """JSON-safe copy: NaN and infinities become None, tuples lists, numpy scalars floats."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    try:
        x = float(obj)
    except (TypeError, ValueError):
        return str(obj)
    return x if math.isfinite(x) else None


def coefficients(tasks: list[str], value) -> dict[str, float]:
    out = {}
    for task, c in mapping("coefficients", value).items():
        if task not in tasks:
            raise ValueError(f"unknown task {task!r}; this cache has: {', '.join(tasks)}")
        out[task] = in_range(f"coefficient for task {task!r}", number(f"coefficient for task {task!r}", c),
                             *COEFFICIENT_RANGE)
    return out


def scaling(value) -> float:
    return in_range("scaling", number("scaling", value), *SCALING_RANGE)


def params(name: str, value, tasks: int) -> dict[str, float | int]:
    """Every parameter of merge method `name`: the given ones checked, the rest at their defaults for a
    merge of `tasks` task vectors."""
    spec = METHODS[name]
    by_name = {p.name: p for p in spec.params}
    out = {}
    for key, v in mapping("params", value).items():
        if key not in by_name:
            raise ValueError(f"method {name!r} has no parameter {key!r}; its parameters are: {', '.join(by_name) or '(none)'}")
        out[key] = by_name[key].check(name, number(f"{name} parameter {key}", v))
    return default_params(name, tasks) | out


def vectors(value) -> str:
    if value not in VECTOR_KINDS:
        raise ValueError(f"vectors must be one of {', '.join(VECTOR_KINDS)}, got {value!r}")
    return value


def task(tasks: list[str], value) -> list[str]:
    """The tasks one task name (or 'all') stands for."""
    if value in (None, "", ALL_TASKS, "all tasks"):
        return list(tasks)
    if value not in tasks:
        raise ValueError(f"unknown task {value!r}; this cache has: {', '.join(tasks)} (or '{ALL_TASKS}')")
    return [value]


def whole_number(what: str, value, high: int) -> int:
    """A whole number from 1 to `high`, else a one-line ValueError naming `what`."""
    n = number(what, value)
    if n != int(n) or not 1 <= n <= high:
        raise ValueError(f"{what} is {value!r}; it must be a whole number from 1 to {high}")
    return int(n)
