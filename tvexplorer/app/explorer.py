"""The explorer behind the app: validated, plain-data operations on one opened cache.

Everything the web app shows is computed here (figures in `figures`, gradio glue in `ui`), so it is
tested without a browser and callable from scripts:

    ex = Explorer("assets/demo")
    ex.evaluate("ties", coefficients={"digits": 1.5}, scaling=1.0, params={"k": 20})
    ex.alignment("digits")
    ex.start_atm(rounds=1)

Input from people and programs is checked here (with inputs.py), with one-line ValueError messages:
unknown methods, tasks or parameters, values that are not numbers, NaN, infinities, and values outside
the ranges the app offers. Where the app writes is workspace.py; its environment's defaults are
environment.py; the gradient-alignment views are gradients.py.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..core.additions import AtmRun, MethodKey
from ..core.cache import Cache
from ..core.records import PER_TASK_METRICS, Metrics
from ..core.training import TrainConfig
from ..merging import METHODS
from ..pipeline.evalplan import ZERO_GPU_FLAVOR, EvaluationPlan, plan_evaluation, read_plan
from ..pipeline.table import recorded
from ..science.atm import VARIANTS
from ..science.atm_report import atm_report
from ..science.evaluation import EvalResult, Evaluator, summarize
from ..science.preview import Preview
from . import inputs, runs
from .environment import location, policy
from .gradients import GradientViews
from .inputs import COEFFICIENT_RANGE, MAX_ATM_ROUNDS, SCALING_RANGE, clean
from .presets import preset
from .tuning import layer_coefficients as checked_layers
from .work import atm_work, exact_accuracy, exact_atm_accuracy, register_evaluator
from .workspace import Workspace

PREVIEW_METHODS = ("task_arithmetic", "average")  # linear in the task vectors, so the preview applies
ATM = "atm"  # the kind of run (runs.py)
KEPT_ON_SCREEN = "The numbers on screen stay as they were"  # after ZeroGPU refused an exact evaluation

class Explorer(GradientViews):
    """One cache, its evaluator and its ATM work folder, shared by every user of an app."""

    def __init__(self, path: str | os.PathLike, *, device: str | None = None, read_only: bool | None = None,
                 workdir: str | os.PathLike | None = None, precision: str = "auto", plan: EvaluationPlan | None = None):
        """`plan`: a Space's evaluation plan (pipeline/evalplan.py): the test images one exact evaluation uses."""
        source = Cache.open(path)
        self.plan = plan
        self.workspace = Workspace(source, read_only, Path(workdir) if workdir else None)
        self.read_only, self.work_folder = self.workspace.read_only, self.workspace.work_folder
        self._lock = threading.Lock()
        self._device, self._precision = device, precision
        work = self.workspace.cache  # a work copy that an earlier session added tasks to: those tasks too
        self._open(work if work.tasks != source.tasks else source)

    def _open(self, cache: Cache) -> None:
        """Explore `cache`: its tasks, an evaluator and the instant preview."""
        self.source = cache
        # the plan as it applies to this cache (extended to tasks added since it was made), else None
        self.applied_plan = self.plan.for_cache(cache) if self.plan is not None else None
        self.subset_sizes = self.applied_plan.subset_sizes if self.applied_plan else None  # None: every stored image
        # The app evaluates in bfloat16 where the hardware is fast at it (about twice as fast, see
        # Evaluator); the numbers a build records are float32.
        self.evaluator = Evaluator(cache, device=self._device, precision=self._precision,
                                   store=lambda: self.workspace.writable_cache(), subset_sizes=self.subset_sizes)
        if self.subset_sizes is None:  # the build measured over every stored test image, as this evaluator does
            self._answer_from_records()
        self._preview = Preview.open(cache)  # None for a cache built without one
        self._memo: dict[tuple, object] = {}
        self._evaluator_source = register_evaluator(self.evaluator)

    def _answer_from_records(self) -> None:
        """The merges of the results table that the cache records (each at its validation-best scaling, with
        its default parameters) are answered from the record: the page's first numbers cost no evaluation
        (on ZeroGPU, no GPU call charged to a visitor who only opened the page). The records are float32."""
        merges = self.metrics.merges
        for method in METHODS:
            if recorded(self.metrics, method, len(self.tasks)) and set(merges[method].accuracy) == set(self.tasks):
                self.evaluator.remember(method, merges[method].accuracy, scaling=merges[method].best_scaling)

    @property
    def exact_in_gpu_calls(self) -> bool:
        """Whether every exact evaluation is one short ZeroGPU call: on ZeroGPU, where the plan made for this
        cache chose the GPU (pipeline/evalplan.py: the CPU would be too slow for it)."""
        return runs.ZERO_GPU and self.applied_plan is not None and self.applied_plan.device != "cpu"

    def evaluation_scope(self) -> str:
        """Where, over what and in which precision one exact evaluation runs, for the header: the plan's line
        where it applies."""
        precision = self.evaluator.precision
        if self.exact_in_gpu_calls and self.evaluator.asked_precision == "auto":  # the GPU is seen only in a call
            precision = "bfloat16 where the lent GPU runs it fast, else float32"
        if self.applied_plan is not None and (self.applied_plan.device == "cpu" or self.exact_in_gpu_calls):
            return f"{self.applied_plan.describe()}; in {precision}"
        return f"exact evaluation on {self.evaluator.device} in {precision}, on all {self._images()} stored test images"

    def reload(self) -> None:
        """After a task was added (app/addtask.py): explore the cache it was added to, so every tab has it."""
        self._open(self.workspace.cache)

    # ------------------------------------------------------------ what is loaded
    @property
    def tasks(self) -> list[str]:
        return self.source.tasks

    @property
    def metrics(self) -> Metrics:
        return self.source.manifest.metrics

    @property
    def training(self) -> TrainConfig:
        """The fine-tuning settings; a cache of imported vectors has none, and what needs them says so."""
        if self.source.manifest.training is None:
            self.require_gradient_record()
            raise ValueError("this cache records no fine-tuning settings; rebuild it with `python -m tvexplorer build`")
        return self.source.manifest.training

    def info(self) -> dict:
        m, man = self.metrics, self.source.manifest
        vision = man.model.encoder.vision_cfg
        sizes: dict[str, int] = {}
        for rel, entry in self.atm_cache.manifest.files.items():
            group = rel.split("/")[0] if "/" in rel else rel
            sizes[group] = sizes.get(group, 0) + entry.size
        return clean({
            "cache": str(Path(self.source.root).resolve()),
            "model": man.model.name, "pretrained": man.model.pretrained,
            "vision": {k: vision.get(k) for k in ("image_size", "patch_size", "width", "layers")},
            "parameters": self.source.layout.numel, "parameter_tensors": len(self.source.layout.names),
            "vector_dtype": man.vector_dtype,
            "training": None if man.training is None else man.training.to_json(),
            "source": man.provenance,
            "gradient_record": self.source.has_gradient_record,
            "tasks": {t.name: {"classes": len(t.classnames), "sizes": t.sizes.to_json(),
                               **{k: (getattr(m, k) or {}).get(t.name) for k in PER_TASK_METRICS}}
                      for t in man.tasks},
            "averages": m.averages(),
            "task_arithmetic_best_scaling": m.best_scaling("task_arithmetic"),
            "file_bytes": sizes, "total_bytes": sum(sizes.values()),
            "device": str(self.evaluator.device), "precision": self.evaluator.precision,
            "read_only": self.read_only, "atm_saved_to": str(self.atm_root),
            "atm": {v: len(r.rounds) for v, r in self.atm_runs().items()},
            "ranges": {"coefficient": COEFFICIENT_RANGE, "scaling": SCALING_RANGE, "atm_rounds": [1, MAX_ATM_ROUNDS]},
        })

    # ------------------------------------------------------------ methods
    def method_choices(self) -> list[tuple[str, str]]:
        """(label, key) for every method of the registry and every saved ATM round."""
        out = [(f"{m.label} ({m.paper})", m.name) for m in METHODS.values()]
        for variant, run in self.atm_runs().items():
            for r in run.rounds:
                out.append((f"ATM {variant}, round {r.round}", str(MethodKey(atm_variant=variant, atm_round=r.round))))
        return out

    def method_label(self, key: str) -> str:
        kind = self.parse_method(key)
        return f"ATM {kind.atm_variant}, round {kind.atm_round}" if kind.is_atm else METHODS[kind.method].label

    def parse_method(self, method) -> MethodKey:
        """A merge method of the registry or a saved ATM round; accepts keys and the labels the app shows."""
        if not isinstance(method, str) or not method.strip():
            raise ValueError(f"method must be a name such as 'task_arithmetic', got {method!r}")
        key = method.strip()
        if key not in METHODS:
            key = next((k for label, k in self.method_choices()
                        if key == label or key.lower() == label.split(" (")[0].lower()), key)
        if key in METHODS:
            return MethodKey(method=key)
        try:
            kind = MethodKey.parse(key)
        except ValueError:
            kind = None
        if kind is not None and kind.is_atm and kind.atm_variant in self.atm_runs():
            self.atm_cache.manifest.atm_round(kind.atm_variant, kind.atm_round)  # a round that is saved, or its one line
            return kind
        atm = [k for _, k in self.method_choices() if MethodKey.parse(k).is_atm]
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}"
                         + (f", or a saved ATM round such as {atm[-1]}" if atm else ""))

    def default_scaling(self, method: str) -> float:
        kind = self.parse_method(method)
        return 1.0 if kind.is_atm else METHODS[kind.method].default_scaling

    def check_coefficients(self, coefficients) -> dict[str, float]:
        return inputs.coefficients(self.tasks, coefficients)

    def check_scaling(self, scaling, method: str) -> float:
        if scaling is None or scaling == "":
            return self.default_scaling(method)
        return inputs.scaling(scaling)

    def check_params(self, name: str, params) -> dict[str, float | int]:
        return inputs.params(name, params, len(self.tasks))

    def check_vectors(self, vectors) -> str:
        vectors = inputs.vectors(vectors)
        if vectors not in self.source.vector_kinds:
            self.require_gradient_record()
        return vectors

    # ------------------------------------------------------------ evaluation
    def evaluate(self, method: str = "task_arithmetic", coefficients=None, scaling=None, params=None,
                 vectors: str = "tau", layer_coefficients=None) -> dict:
        """Merge and evaluate exactly; returns plain data (accuracies in [0, 1]). layer_coefficients:
        {task: {layer: value}} (or its JSON), see app/tuning.py."""
        *_, answer = self.evaluate_stream(method, coefficients, scaling, params, vectors, layer_coefficients)
        return answer

    def evaluate_stream(self, method: str = "task_arithmetic", coefficients=None, scaling=None, params=None,
                        vectors: str = "tau", layer_coefficients=None) -> Iterator[dict]:
        """evaluate() as it goes: after each task but the last a partial answer (the settings, "exact": the
        accuracies {task: accuracy} so far, "of": how many tasks there are), then evaluate()'s answer. The
        input is checked before anything is computed."""
        t0 = time.perf_counter()
        evaluator = self.evaluator  # the one of this moment: adding a task replaces it (reload)
        tasks = evaluator.cache.tasks
        kind = self.parse_method(method)
        s = self.check_scaling(scaling, method)
        coefs, layers = self.check_coefficients(coefficients), checked_layers(self, layer_coefficients)
        label = self.method_label(method)
        if kind.is_atm:
            if any(c != 1.0 for c in coefs.values()) or inputs.mapping("params", params) or layers:
                raise ValueError("an ATM round is one fixed merged model: per-task coefficients and method "
                                 "parameters do not apply (only scaling, which multiplies its merged delta)")
            result = self._atm_result(kind.atm_variant, kind.atm_round, s)
            settings = {"method": str(kind), "vectors": None, "coefficients": {}, "params": {}}
        else:
            vectors = self.check_vectors(vectors)
            coefs = {t: coefs.get(t, 1.0) for t in tasks}
            checked = self.check_params(kind.method, params)
            merge = dict(coefficients=coefs, scaling=s, vectors=vectors, layer_coefficients=layers, **checked)
            settings = {"method": kind.method, "vectors": vectors, "coefficients": coefs, "params": checked,
                        "layer_coefficients": layers}
            exact: dict[str, float] = {}
            elsewhere = self._in_gpu_call(exact_accuracy, kind.method, merge) if self.exact_in_gpu_calls else None
            for task, accuracy in evaluator.evaluate_tasks(kind.method, elsewhere=elsewhere, **merge):
                exact[task] = accuracy
                if len(exact) < len(tasks):
                    yield clean({**settings, "label": label, "scaling": s, "partial": True, "exact": dict(exact),
                                 "of": len(tasks), "seconds": round(time.perf_counter() - t0, 4)})
            result = summarize(exact, self.metrics.require_finetuned())
        yield clean({**settings, "label": label, "scaling": s, **result.to_json(),
                     **self._per_task_references(), "seconds": round(time.perf_counter() - t0, 4)})

    def _in_gpu_call(self, worker, *args):
        """One exact evaluation by `worker` (app/work.py) in a GPU call of its own, made from the caller's event
        (the visitor's, whom ZeroGPU charges), as a function to call when it is needed."""
        call = runs.Call(worker, (self._evaluator_source, *args), steps=self._images())
        return lambda: runs.gpu_call(call, kept=KEPT_ON_SCREEN)

    def _images(self) -> int:
        """The test images one exact evaluation runs over."""
        return sum(len(s) for s in self.evaluator.sets.values())

    def _per_task_references(self) -> dict:
        m = self.metrics
        return {"zero_shot": m.zero_shot, "finetuned": m.finetuned, "multitask": m.multitask,
                "linear_probe": m.linear_probe}

    def preview(self, method: str = "task_arithmetic", coefficients=None, scaling=None, vectors: str = "tau") -> dict | None:
        """The instant, first-order prediction of evaluate() for task arithmetic and averaging (see
        tvexplorer/science/preview.py), labelled as such with its build-time error; None where there is none."""
        if self._preview is None or method not in PREVIEW_METHODS or vectors not in self._preview.kinds:
            return None
        t0 = time.perf_counter()
        s = self.check_scaling(scaling, method)
        coefs = {t: 1.0 for t in self.tasks} | self.check_coefficients(coefficients)
        step = s / len(self.tasks) if method == "average" else s
        result = summarize(self._preview.accuracy(coefs, step, vectors), self.metrics.require_finetuned())
        return clean({"method": method, "vectors": vectors, "coefficients": coefs, "params": {}, "preview": True,
                      "label": f"{self.method_label(method)} (first-order preview)", "scaling": s, **result.to_json(),
                      **self._per_task_references(), "error_note": self._preview.error_note(),
                      "seconds": round(time.perf_counter() - t0, 4)})

    def _atm_result(self, variant: str, k: int, scaling: float) -> EvalResult:
        record = self.atm_cache.manifest.atm_round(variant, k)
        if scaling == 1.0:  # exactly what run_atm evaluated and saved
            return summarize(dict(record.accuracy), self.metrics.require_finetuned())
        return self._memoised(("atm", str(self.atm_root), variant, k, scaling),
                              lambda: summarize(self._atm_accuracy(variant, k, scaling), self.metrics.require_finetuned()))

    def _atm_accuracy(self, variant: str, k: int, scaling: float) -> dict[str, float]:
        """A saved round's accuracies at `scaling`: in one GPU call where exact evaluations go there."""
        if self.exact_in_gpu_calls:
            return self._in_gpu_call(exact_atm_accuracy, str(self.atm_root), variant, k, scaling)()
        return self.evaluator.accuracy(self.atm_cache.atm_delta(variant, k).float() * scaling)

    def preset(self, name: str, method: str = "task_arithmetic", vectors: str = "tau") -> dict:
        """Settings of a preset: {method, scaling (None: keep), coefficients}."""
        return preset(self, name, method, vectors)

    def _memoised(self, key, compute):
        with self._lock:
            if key in self._memo:
                return self._memo[key]
        value = compute()
        with self._lock:
            self._memo[key] = value
        return value

    def references(self) -> dict[str, float | None]:
        """Average accuracies that the Merge and ATM charts draw as reference lines (None: not recorded)."""
        a = self.metrics.averages()
        return {"zero-shot": a["zero_shot"], "linear probe of theta0": a["linear_probe"],
                "task arithmetic": a["task_arithmetic"], "task arithmetic (tau1)": a["task_arithmetic_one_epoch"],
                "multi-task (joint fine-tuning)": a["multitask"], "fine-tuned": a["finetuned"]}

    # ------------------------------------------------------------ ATM
    @property
    def atm_root(self) -> Path:
        """Where ATM rounds (and tuning records, results-table rows) are read from and saved to."""
        return self.workspace.root

    @property
    def atm_cache(self) -> Cache:
        """The cache holding ATM rounds, re-opened when its manifest changed on disk."""
        return self.workspace.cache

    def atm_runs(self) -> dict[str, AtmRun]:
        return self.atm_cache.manifest.atm

    def writable_atm_root(self) -> Path:
        """The folder the app may write into, making the copy-on-write work copy on first need."""
        return self.workspace.writable_root()

    def where_saved(self) -> str:
        return self.workspace.where_saved()

    def check_atm_request(self, rounds, variant) -> tuple[int, str]:
        if variant not in VARIANTS:
            raise ValueError(f"unknown ATM variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
        return inputs.whole_number("rounds", rounds, MAX_ATM_ROUNDS), variant

    def start_atm(self, rounds=1, variant: str = "standard", **settings) -> runs.Run:
        """Start `rounds` more rounds (see runs.py); runs.Busy while another ATM run is going. `settings`
        go to run_atm as they are."""
        rounds, variant = self.check_atm_request(rounds, variant)
        if runs.busy(ATM):
            raise runs.Busy(runs.busy_message(ATM, "another ATM run"))
        root = self.writable_atm_root()
        # where an exact evaluation needs a GPU call, so does a round: one call per task and one to merge
        in_pieces = self.exact_in_gpu_calls
        calls = rounds * (len(self.tasks) + 1) if in_pieces else rounds
        return runs.start(ATM, f"ATM {variant}, {rounds} round(s)",
                          atm_work(str(root), rounds, variant, self._evaluator_source, in_pieces, **settings),
                          {"variant": variant, "rounds_requested": rounds}, parts=calls, what="another ATM run")

    def atm_summary(self) -> dict:
        """Every saved run (science.atm_report: rounds with budget, alpha, orthogonality and per-task gains;
        the references at their budgets) and where rounds are saved."""
        return clean({"saved_to": str(self.atm_root), **atm_report(self.atm_cache)})

    def atm_status(self) -> dict:
        run = runs.current(ATM)
        status = {"state": "idle"} if run is None else {**run.status(), "rounds_finished": sum(run.outputs)}
        status["busy"] = runs.busy(ATM)
        status["rounds_saved"] = {v: len(r.rounds) for v, r in self.atm_runs().items()}
        status["saved_to"] = str(self.atm_root)
        return clean(status)


def open_explorer(path=None, plan_folder=None, **kwargs) -> Explorer:
    """Explorer on `path` (default: $TVEXPLORER_CACHE or the bundled demo), read-only and on the device
    that environment.policy says where the caller leaves them open; with the evaluation plan pushed to
    `plan_folder` (a Space's app.py folder) where there is one. On ZeroGPU without a plan made for this
    cache (one served through TVEXPLORER_CACHE), the device is chosen by cost here, at start-up."""
    path = location(path)
    plan = read_plan(Path(plan_folder)) if plan_folder is not None else None
    if runs.ZERO_GPU:
        cache = Cache.open(path)
        if plan is None or plan.for_cache(cache) is None:
            plan = plan_evaluation(cache, ZERO_GPU_FLAVOR, device="cuda")
    kwargs["plan"] = plan
    kwargs.update(policy(path, kwargs.get("read_only"), kwargs.get("device")))
    return Explorer(path, **kwargs)
