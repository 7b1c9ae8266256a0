"""Tuning on validation and AdaMerging for the app: one run at a time per process, in a background thread,
cancellable, with progress; and the plain data the Merge panel shows of recorded results.

Like the ATM worker (`jobs.py`), the worker takes plain arguments and talks through a control folder (a
`stop` flag, a throttled progress file), so it also runs as a `@spaces.GPU` function on ZeroGPU. Results
go into the manifest of the cache ATM writes to (the cache itself, or the read-only cache's work copy).
"""
from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ..core.cache import Cache
from ..core.checks import in_range, number
from ..core.device import resolve_device
from ..core.errors import described
from ..core.manifest import TUNING
from ..merging import check_layer_coefficients
from ..science import adamerging, tuning
from .jobs import _ProgressFile, read_progress, spaces

OBJECTIVES = {"accuracy": "Tune on validation (surrogate + exact search)",
              "entropy": "AdaMerging (entropy on unlabelled test images)"}
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


# ---------------------------------------------------------------- the background run

def tune_worker(cache_root: str, objective: str, per_layer: bool, steps: int, control_dir: str) -> dict:
    """Run tuning or AdaMerging on the cache at `cache_root`, recording the result there; returns it."""
    device = str(resolve_device())
    cache = Cache.open(cache_root)
    control = Path(control_dir)
    report = _ProgressFile(control / "progress.json")
    report(0, 1, f"preparing on {device}", force=True)
    stop = (control / "stop").exists
    if objective == "entropy":
        return adamerging.adamerging(cache, layer_wise=per_layer, steps=steps, device=device, progress=report,
                                     should_stop=stop)
    return tuning.tune(cache, per_layer=per_layer, steps=steps, device=device, progress=report, should_stop=stop)


if spaces is not None:  # pragma: no cover - only on Hugging Face Spaces
    _run_worker = spaces.GPU(duration=lambda *a, **k: 600)(tune_worker)
else:
    _run_worker = tune_worker


@dataclass
class TuneJob:
    objective: str
    per_layer: bool
    steps: int
    control_dir: Path
    started: float = field(default_factory=time.time)
    finished: threading.Event = field(default_factory=threading.Event)
    result: dict | None = None
    error: str | None = None
    cancel_requested: bool = False
    _last: dict = field(default_factory=lambda: {"done": 0, "total": 1, "text": "starting"})

    def progress(self) -> dict:
        self._last = read_progress(self.control_dir, self._last)
        return dict(self._last)

    @property
    def state(self) -> str:
        if not self.finished.is_set():
            return "cancelling" if self.cancel_requested else "running"
        if self.error:
            return "cancelled" if self.cancel_requested else "failed"
        return "finished"

    def status(self) -> dict:
        return {"state": self.state, "objective": self.objective, "per_layer": self.per_layer, "steps": self.steps,
                "progress": self.progress(), "error": self.error, "seconds": round(time.time() - self.started, 2)}


_LOCK = threading.Lock()
_CURRENT: TuneJob | None = None


def current() -> TuneJob | None:
    return _CURRENT


def check_request(objective, per_layer, steps) -> tuple[str, bool, int]:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of: {', '.join(OBJECTIVES)}")
    n = number("steps", steps)
    if n != int(n) or not 1 <= n <= MAX_STEPS:
        raise ValueError(f"steps is {steps!r}; it must be a whole number from 1 to {MAX_STEPS}")
    return objective, bool(per_layer), int(n)


def start(explorer, objective: str = "accuracy", per_layer: bool = False, steps: int | None = None) -> TuneJob:
    """Start a run in the background; ValueError (one line) when one is already running in this process."""
    global _CURRENT
    if steps is None:
        steps = adamerging.DEFAULTS["steps"] if objective == "entropy" else 200
    objective, per_layer, steps = check_request(objective, per_layer, steps)
    if not _LOCK.acquire(blocking=False):
        raise ValueError("busy: a tuning or AdaMerging run is in progress; only one runs at a time, try again when "
                         "it has finished")
    try:
        root = explorer.writable_atm_root()
        explorer.atm_cache  # noqa: B018  (notes the manifest as it is now, so the recorded result is seen as a change)
        job = TuneJob(objective, per_layer, steps, Path(tempfile.mkdtemp(prefix="tvexplorer-tune-")))
        _CURRENT = job
        threading.Thread(target=_run, args=(job, str(root)), name="tvexplorer-tune", daemon=True).start()
    except BaseException:
        _LOCK.release()
        raise
    return job


def _run(job: TuneJob, root: str) -> None:
    try:
        job.result = _run_worker(root, job.objective, job.per_layer, job.steps, str(job.control_dir))
    except tuning.Cancelled as e:
        job.error = str(e)
    except Exception as e:  # one line for the app; details in the server log
        traceback.print_exc()
        job.error = described(e)
    finally:
        job.progress()
        shutil.rmtree(job.control_dir, ignore_errors=True)
        job.finished.set()
        _LOCK.release()


def cancel() -> bool:
    """Ask the running job to stop at its next step; False when nothing runs."""
    job = _CURRENT
    if job is None or job.finished.is_set():
        return False
    job.cancel_requested = True
    try:
        (job.control_dir / "stop").touch()
    except OSError:
        pass
    return True


# ---------------------------------------------------------------- what the panel shows

def summary(explorer) -> dict:
    """Grid-searched task arithmetic and every recorded tuning result, validation and test averages."""
    cache = explorer.atm_cache
    rows = [{"name": "grid task arithmetic", **_row(tuning.grid_baseline(cache))}]
    for name, record in cache.manifest.get(TUNING, {}).items():
        rows.append({"name": name, **_row(record)})
    return {"rows": rows, "records": cache.manifest.get(TUNING, {})}


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
