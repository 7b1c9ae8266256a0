"""The app's kinds of background run (see runs.py): ATM rounds, tuning and AdaMerging, filling the results
table, adding a task. Each is a worker (plain arguments, saving into the cache it is given) and a work
generator that yields one call per GPU-sized piece: an ATM round, a tuning run (on ZeroGPU, a piece of one:
see tune_work), one method of the results table. Beside them, `exact_accuracy`: one exact evaluation in a
GPU call of its own (runs.gpu_call).

Workers open the cache themselves and pick the device where they run (on ZeroGPU: the GPU lent to the
call), and save as they finish, so whatever ends a run, finished pieces stay saved.
"""
from __future__ import annotations

import itertools
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.cache import Cache
from ..core.device import resolve_device
from ..core.files import mmap_tensors, write_tensors
from ..data.imagesource import SourceLimits
from ..pipeline.addtask import add_task, fine_tune_task
from ..pipeline.table import check_methods, fill_table, recorded
from ..science import adamerging, tuning
from ..science.atm import Settings, run_atm, task_round_steps, task_update
from ..science.evaluation import Evaluator
from .runs import Call, Control

_EVALUATORS: "weakref.WeakValueDictionary[str, Evaluator]" = weakref.WeakValueDictionary()  # reusable, by key
_REGISTERED = itertools.count()


@dataclass(frozen=True)
class EvaluatorSource:
    """How a worker finds an explorer's evaluator: by its key in this process (a forked ZeroGPU process has
    the parent's), else by building one like it. Each evaluator gets a key of its own, so a worker process
    forked before an explorer reopened its cache (a task added) never finds the old one."""
    key: str
    root: str                          # the cache it evaluates
    subset_sizes: dict[str, int] | None
    precision: str

    def on(self, device: str) -> Evaluator:
        evaluator = _EVALUATORS.get(self.key)
        if evaluator is None:
            evaluator = Evaluator(Cache.open(self.root), device=device, precision=self.precision,
                                  subset_sizes=self.subset_sizes)
        return evaluator.on(device)


def register_evaluator(evaluator: Evaluator) -> EvaluatorSource:
    """Let workers in this process reuse an explorer's evaluator (and its loaded test images)."""
    source = EvaluatorSource(f"evaluator-{next(_REGISTERED)}", str(evaluator.cache.root), evaluator.subset_sizes,
                             evaluator.asked_precision)
    _EVALUATORS[source.key] = evaluator
    return source


def _device(device: str | None) -> str:
    return str(resolve_device(device))


# ---------------------------------------------------------------- one exact evaluation

def exact_accuracy(evaluator: EvaluatorSource, method: str, settings: dict, *, control: Control) -> dict[str, float]:
    """Every task's accuracy of one merge (Evaluator.evaluate_tasks with `settings`), by the explorer's
    evaluator moved to the device this call runs on: on ZeroGPU, the GPU it lends, while the app's own
    evaluator stays on the CPU. Plain floats come back (a ZeroGPU call runs in a forked process)."""
    return dict(_evaluating(evaluator, control).evaluate_tasks(method, **settings))


def exact_atm_accuracy(evaluator: EvaluatorSource, root: str, variant: str, round_: int, scaling: float, *,
                       control: Control) -> dict[str, float]:
    """exact_accuracy for a saved ATM round (in the cache at `root`) at another scaling than its own."""
    return _evaluating(evaluator, control).accuracy(Cache.open(root).atm_delta(variant, round_).float() * scaling)


def _evaluating(evaluator: EvaluatorSource, control: Control) -> Evaluator:
    here = evaluator.on(_device(None))
    control.progress(0, 1, f"exact evaluation on {here.device}", force=True)
    return here


# ---------------------------------------------------------------- ATM

def atm_round(root: str, variant: str, evaluator: EvaluatorSource | None, *, control: Control, **settings) -> int:
    """One more ATM round on the cache at `root`, saved when it finishes; returns 1, or 0 when stopped.
    `evaluator`: the explorer's, moved to this call's device (else run_atm builds one)."""
    return _next_round(root, variant, evaluator, control, None, **settings)


def atm_task(root: str, variant: str, task: str, state: str, steps: int, *, control: Control,
             settings: Settings | None = None) -> int:
    """A piece of a round in pieces: `task`'s update of the next round (`steps` optimizer steps), saved into
    the `state` folder with the round's number; returns 0, the rounds it saved. `settings`: a new run's."""
    device = _device(None)
    control.progress(0, steps, f"next {variant} ATM round: {task} on {device}", force=True)
    done = itertools.count(1)
    k, update = task_update(Cache.open(root), variant, task, settings, device,
                            on_step=lambda: control.progress(next(done), steps, f"next {variant} ATM round: {task}"))
    write_tensors(Path(state), f"{task}.safetensors", {"update": update, "round": torch.tensor([k])})
    return 0


def atm_merge(root: str, variant: str, state: str, evaluator: EvaluatorSource | None, *, control: Control,
              **settings) -> int:
    """The last piece of a round in pieces: the round from the updates in `state` (run_atm, with them as its
    tuner), saved; returns 1, or 0 when stopped."""
    def saved_updates(cache, cfg, run_settings, start, k, on_task_done) -> dict[str, torch.Tensor]:
        updates = {}
        for task in cache.tasks:
            saved = mmap_tensors(Path(state) / f"{task}.safetensors", f"{task}.safetensors")
            if int(saved["round"][0]) != k:
                raise ValueError(f"ATM {variant}: another run saved round {k - 1} meanwhile; press the button again")
            updates[task] = saved["update"]
            on_task_done(task)
        return updates
    return _next_round(root, variant, evaluator, control, saved_updates, **settings)


def _next_round(root: str, variant: str, evaluator: EvaluatorSource | None, control: Control, tune_round,
                **settings) -> int:
    device = _device(None)
    control.progress(0, 1, f"preparing {variant} ATM on {device}", force=True)
    return len(run_atm(Cache.open(root), 1, variant=variant, device=device,
                       evaluator=evaluator.on(device) if evaluator else None, tune_round=tune_round,
                       progress=control.progress, should_stop=control.stopped, **settings))


def atm_work(root: str, rounds: int, variant: str, evaluator: EvaluatorSource | None = None, in_pieces: bool = False,
             **settings):
    """`rounds` ATM rounds, one call each (run_atm resumes from the last saved round), or with `in_pieces`
    (ZeroGPU, where one round of a large model would outlast a short GPU call) one call per task and one
    for the merge; returns how many rounds this run saved. `settings` go to run_atm as they are."""
    finished = 0
    for _ in range(rounds):
        if in_pieces:
            state = tempfile.mkdtemp(prefix="tvexplorer-atm-round-")
            try:
                cache = Cache.open(root)
                for task in cache.tasks:
                    steps = task_round_steps(cache, variant, task, settings.get("settings"))
                    yield Call(atm_task, (root, variant, task, state, steps), {"settings": settings.get("settings")},
                               steps=steps)
                saved = yield Call(atm_merge, (root, variant, state, evaluator), settings)
            finally:
                shutil.rmtree(state, ignore_errors=True)
        else:
            saved = yield Call(atm_round, (root, variant, evaluator), settings)
        finished += saved
        if not saved:
            break
    return finished


# ---------------------------------------------------------------- tuning and AdaMerging

OBJECTIVES = {"accuracy": "Tune on validation (surrogate + exact search)",
              "entropy": "AdaMerging (entropy on unlabelled test images)"}
DEFAULT_STEPS = {"accuracy": 200, "entropy": adamerging.DEFAULTS["steps"]}


def tune_run(root: str, objective: str, per_layer: bool, steps: int, state: str | None = None,
             seconds: float | None = None, *, control: Control) -> dict | None:
    """Tuning (objective 'accuracy') or AdaMerging ('entropy') on the cache at `root`, recorded there; with
    a `state` folder, one piece of about `seconds` that goes on from the last piece: None when it paused."""
    device = _device(None)
    cache = Cache.open(root)
    control.progress(0, 1, f"preparing on {device}", force=True)
    budget = tuning.Budget(state, seconds=seconds)
    try:
        if objective == "entropy":
            return adamerging.adamerging(cache, layer_wise=per_layer, steps=steps, device=device, budget=budget,
                                         progress=control.progress, should_stop=control.stopped)
        return tuning.tune(cache, per_layer=per_layer, steps=steps, device=device, progress=control.progress,
                           should_stop=control.stopped, budget=budget)
    except tuning.Paused:
        return None


def tune_work(root: str, objective: str, per_layer: bool, steps: int, piece_seconds: float | None = None):
    """The run in one call, or (with `piece_seconds`: on ZeroGPU, where a call must stay short) in pieces of
    about that long, each going on from the state the last one saved; returns the result."""
    if piece_seconds is None:
        return (yield Call(tune_run, (root, objective, per_layer, steps), steps=steps))
    state = tempfile.mkdtemp(prefix="tvexplorer-tuning-state-")
    try:
        while True:
            result = yield Call(tune_run, (root, objective, per_layer, steps, state, piece_seconds))
            if result is not None:
                return result
    finally:
        shutil.rmtree(state, ignore_errors=True)


# ---------------------------------------------------------------- the results table

def table_method(root: str, method: str, device: str | None, *, control: Control) -> list[str]:
    """Compute and record one method's row of the results table (if it is still missing)."""
    control.progress(0, 1, f"{method}: scaling chosen on validation", force=True)
    done = fill_table(Cache.open(root), [method], device=device, progress=lambda text: control.progress(0, 1, text))
    control.progress(1, 1, f"{method} recorded", force=True)
    return done


def missing_rows(cache: Cache, methods: list[str] | None = None) -> list[str]:
    return [m for m in check_methods(methods) if not recorded(cache.manifest.metrics, m, len(cache.tasks))]


def table_work(root: str, methods: list[str], device: str | None):
    """One call per missing method; returns the methods computed."""
    computed = []
    for method in methods:
        computed += yield Call(table_method, (root, method, device), steps=1)
    return computed


# ---------------------------------------------------------------- adding a task

# Smaller than the command line's: an upload to a web page (on a Space, to a shared machine).
APP_LIMITS = SourceLimits(max_archive_bytes=50_000_000, max_total_bytes=200_000_000, max_files=2_000,
                          max_image_bytes=10_000_000, max_image_pixels=16_000_000, max_classes=50)


def add_task_tune(root: str, name: str, source: str, templates: list[str] | None, *, control: Control) -> str:
    """Call 1: check the images and fine-tune the task (kept, unlisted, until call 2 lists it)."""
    device = _device(None)
    control.progress(0, 1, f"checking the images and fine-tuning {name} on {device}", force=True)
    fine_tune_task(Cache.open(root), name, source, templates, device=device, progress=control.progress,
                   should_stop=control.stopped, limits=APP_LIMITS)
    return name


def add_task_finish(root: str, name: str, source: str, templates: list[str] | None, *, control: Control) -> dict:
    """Call 2: list the task, then its accuracies, task arithmetic over the new task set and the preview."""
    device = _device(None)
    control.progress(0, 1, f"adding {name}: accuracies and preview on {device}", force=True)
    return add_task(Cache.open(root), name, source, templates, device=device, progress=control.progress,
                    should_stop=control.stopped, limits=APP_LIMITS)


def add_task_work(root: str, name: str, source: str, templates: list[str] | None = None):
    """Two calls (each one GPU call on ZeroGPU): fine-tuning, then the rest; returns add_task's summary."""
    yield Call(add_task_tune, (root, name, source, templates))
    summary = yield Call(add_task_finish, (root, name, source, templates))
    return summary
