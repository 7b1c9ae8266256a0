"""Exact evaluation of merged image encoders on every task's fixed evaluation subset.

One image encoder is built once and receives theta0 + delta before each evaluation; each task is
scored with its own frozen zero-shot head. Accuracies are memoised per task by (vectors, method,
parameters, coefficients, scaling): the explorer's sliders revisit the same settings often, and an
evaluation streamed task by task and left part way keeps the tasks it finished. A method that
needs per-task data (`MergeMethod.needs`, e.g. RegMean's Gram matrices) gets it here, from the cache,
computed and saved the first time (TASK_INPUTS), so every caller merges every method the same way.
"""
from __future__ import annotations

import copy
import math
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Mapping

import torch

from ..core.cache import Cache
from ..core.device import has_fast_bfloat16, resolve_device
from ..core.errors import CacheError
from ..core.layout import Layout
from ..data.splits import to_input
from ..merging import METHODS, LayerCoefficients, check_layer_coefficients, default_params, merge_flat
from ..models.clip import INFERENCE_PRECISIONS, build_image_encoder, run_blocks_in_bfloat16, set_flat
from .grams import task_grams

Delta = torch.Tensor | Mapping[str, torch.Tensor]  # one flat delta, or one per task (a per_task method's TaskDeltas)
# What a method's `needs` names -> (cache, device, store) -> {task: that data for the task}.
TASK_INPUTS = {"grams": task_grams}


@dataclass(frozen=True)
class EvalResult:
    accuracy: dict[str, float]     # per task, in [0, 1]
    average: float
    normalized: dict[str, float]   # accuracy / individually fine-tuned accuracy
    normalized_average: float

    def to_json(self) -> dict:
        return asdict(self)


def summarize(accuracy: dict[str, float], finetuned: dict[str, float]) -> EvalResult:
    normalized = {t: a / finetuned[t] if finetuned.get(t) else math.nan for t, a in accuracy.items()}
    return EvalResult(accuracy, sum(accuracy.values()) / len(accuracy), normalized,
                      sum(normalized.values()) / len(normalized))


def merged_delta(cache: Cache, method: str, *, coefficients: dict[str, float] | None = None, scaling: float | None = None,
                 vectors: str = "tau", layer_coefficients: LayerCoefficients | None = None,
                 device: str | torch.device | None = None, store: Callable[[], Cache] | None = None, **params) -> Delta:
    """The flat float32 delta that `method` makes of the cache's task vectors of kind `vectors`:
    what the Evaluator adds to theta0 (for a task-conditioned method, one per task: a mapping task ->
    delta), and what an exported model holds. What the method needs beyond the vectors comes from
    the cache, computed on `device` and saved into `store` (default: the cache) the first time."""
    needs = METHODS[method].needs if method in METHODS else None
    task_inputs = None
    if needs:
        if vectors != "tau":
            raise ValueError(f"{METHODS[method].label} uses the {needs} of the fine-tuned models, which belong to the "
                             f"full task vectors: choose vectors 'tau', not {vectors!r}")
        task_inputs = TASK_INPUTS[needs](cache, resolve_device(device), store)
    return merge_flat(method, cache.vectors(vectors), cache.layout, coefficients=coefficients, scaling=scaling,
                      task_inputs=task_inputs, layer_coefficients=layer_coefficients, **params)


class Evaluator:
    def __init__(self, cache: Cache, device: str | torch.device | None = None, batch_size: int = 500,
                 split: str = "test", memo_size: int = 512, precision: str = "float32",
                 store: Callable[[], Cache] | None = None, subset_sizes: Mapping[str, int] | None = None):
        """precision: float32 (what builds record), bfloat16 (see models.clip.run_blocks_in_bfloat16), or
        auto: bfloat16 where the hardware runs it fast, else float32. `store`: the writable cache where
        per-task data that `cache` lacks is computed and saved (default: `cache` itself; the app passes
        the work folder of a read-only cache). `subset_sizes`: per task, evaluate on a seeded subset of
        that many of the stored images (Split.take; a CPU Space's plan, pipeline/evalplan.py)."""
        self.cache = cache
        self.store = store
        self.batch_size = batch_size
        encoder = cache.manifest.model.encoder
        self.mean, self.std = list(encoder.mean), list(encoder.std)
        self._place(resolve_device(device), precision)
        self.sets = {t: cache.eval_split(t, split) for t in cache.tasks}
        self.subset_sizes = dict(subset_sizes) if subset_sizes else None
        for task, n in (subset_sizes or {}).items():
            if n < len(self.sets[task]):
                self.sets[task] = self.sets[task].take(n)
        self._memo_size = memo_size * len(cache.tasks)
        self._fresh_state()

    def _place(self, device: torch.device, precision: str) -> None:
        """The image encoder, theta0 and the heads on `device`, run in `precision` (see __init__)."""
        self.device, self.asked_precision = device, precision
        if precision == "auto":
            precision = "bfloat16" if has_fast_bfloat16(device) else "float32"
        if precision not in INFERENCE_PRECISIONS:
            raise ValueError(f"precision must be auto or one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.encoder = build_image_encoder(self.cache.manifest.model.encoder).to(device)
        if Layout.of(dict(self.encoder.named_parameters())) != self.cache.layout:
            raise CacheError("base.safetensors: the stored layout does not match the image encoder that the manifest's model config builds")
        if precision == "bfloat16":
            run_blocks_in_bfloat16(self.encoder)
        self.theta0 = self.cache.base().to(device)
        heads, _ = self.cache.heads()
        self.heads = {t: h.to(device) for t, h in heads.items()}

    def _fresh_state(self) -> None:
        self._lock = threading.Lock()  # one encoder, one evaluation at a time
        self._memo_lock = threading.Lock()  # so a memo hit never waits behind a running evaluation
        self._memo: OrderedDict[tuple, float] = OrderedDict()  # (settings, task) -> accuracy
        self._loaded: object = None  # the token of the weights in the encoder

    def on(self, device: str | torch.device | None) -> "Evaluator":
        """This evaluator on `device` (itself where it is there already): the same cache, test subsets and
        store, its own encoder and memo. A ZeroGPU call evaluates with it on the GPU it is lent, while the
        app's own evaluator stays on the CPU (app/work.py)."""
        device = resolve_device(device)
        if device == self.device:
            return self
        other = copy.copy(self)
        other._place(device, self.asked_precision)
        other._fresh_state()
        return other

    def _load(self, delta: torch.Tensor | None, token: object) -> None:
        """theta0 + delta into the encoder, unless the weights of `token` are there already (one merge
        evaluated task by task loads its weights once, unless another evaluation came in between)."""
        if self._loaded is not token:
            set_flat(self.encoder, self.theta0 if delta is None else self.theta0 + delta.to(self.device, torch.float32))
            self._loaded = token

    @torch.inference_mode()
    def task_predictions(self, delta: Delta | None, task: str, token: object | None = None) -> torch.Tensor:
        """Predicted class of each evaluation image of `task` for theta0 + delta (flat); a per-task merge
        (a mapping task -> flat delta, as a task-conditioned method returns) gives the task its own model.
        The encoder is held for one task at a time, so evaluations of different settings interleave
        task by task instead of waiting for each other's every task."""
        per_task = isinstance(delta, Mapping)
        with self._lock:
            self._load(delta[task] if per_task else delta, object() if per_task or token is None else token)
            return torch.cat([
                (self.encoder(to_input(images.to(self.device), self.mean, self.std)) @ self.heads[task]).argmax(dim=1).cpu()
                for images, _ in self.sets[task].batches(self.batch_size)])

    def predictions(self, delta: Delta | None = None, tasks: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Predicted classes of every task's evaluation images for theta0 + delta."""
        token = object()
        return {task: self.task_predictions(delta, task, token) for task in tasks or self.cache.tasks}

    def task_accuracy(self, delta: Delta | None, task: str, token: object | None = None) -> float:
        p = self.task_predictions(delta, task, token)
        return int((p == self.sets[task].labels).sum()) / len(p)

    def accuracy(self, delta: Delta | None = None, tasks: list[str] | None = None) -> dict[str, float]:
        """Accuracy of theta0 + delta (flat) on each task's evaluation subset."""
        token = object()
        return {t: self.task_accuracy(delta, t, token) for t in tasks or self.cache.tasks}

    def result(self, delta: Delta | None) -> EvalResult:
        return summarize(self.accuracy(delta), self.cache.manifest.metrics.require_finetuned())

    def evaluate(self, method: str, *, coefficients: dict[str, float] | None = None, scaling: float | None = None,
                 vectors: str = "tau", layer_coefficients: LayerCoefficients | None = None, **params) -> EvalResult:
        """Merge the cache's task vectors of kind `vectors` with `method` (per-task and per-layer
        coefficients as in merge_flat) and evaluate; memoised."""
        accuracy = dict(self.evaluate_tasks(method, coefficients=coefficients, scaling=scaling, vectors=vectors,
                                            layer_coefficients=layer_coefficients, **params))
        return summarize(accuracy, self.cache.manifest.metrics.require_finetuned())

    def evaluate_tasks(self, method: str, *, coefficients: dict[str, float] | None = None, scaling: float | None = None,
                       vectors: str = "tau", layer_coefficients: LayerCoefficients | None = None,
                       elsewhere: Callable[[], Mapping[str, float]] | None = None,
                       **params) -> Iterator[tuple[str, float]]:
        """evaluate(), task by task: (task, accuracy) as each task finishes, memoised per task, so a caller
        can show each number as it comes and stop between tasks (what is done stays memoised).
        `elsewhere`: where the evaluation is better run in one piece somewhere else (a ZeroGPU call, see
        app/work.py), a function that returns every task's accuracy of these settings; called at the first
        task not memoised, and what it returns is memoised here."""
        key = self._key(method, coefficients, scaling, vectors, params, layer_coefficients)
        delta, computed = None, {}
        for task in self.cache.tasks:
            accuracy = self._recall(key, task)
            if accuracy is None and elsewhere is not None:
                computed, elsewhere = dict(elsewhere()), None
                self._remember_all(key, computed)
            if accuracy is None:
                accuracy = computed.get(task)  # from here, not the memo, which other evaluations may have trimmed
            if accuracy is None:
                if delta is None:
                    delta = self.merged(method, coefficients=coefficients, scaling=scaling, vectors=vectors,
                                        layer_coefficients=layer_coefficients, **params)
                accuracy = self.task_accuracy(delta, task, key)
                self._remember(key, task, accuracy)
            yield task, accuracy

    def remember(self, method: str, accuracy: Mapping[str, float], *, coefficients: dict[str, float] | None = None,
                 scaling: float | None = None, vectors: str = "tau", layer_coefficients: LayerCoefficients | None = None,
                 **params) -> None:
        """Take accuracies measured on these evaluation sets elsewhere (a build's record) as this merge's."""
        self._remember_all(self._key(method, coefficients, scaling, vectors, params, layer_coefficients), accuracy)

    def _remember_all(self, key: tuple, accuracy: Mapping[str, float]) -> None:
        for task, value in accuracy.items():
            self._remember(key, task, value)

    def _recall(self, key: tuple, task: str) -> float | None:
        with self._memo_lock:
            accuracy = self._memo.get((key, task))
            if accuracy is not None:
                self._memo.move_to_end((key, task))
            return accuracy

    def _remember(self, key: tuple, task: str, accuracy: float) -> None:
        with self._memo_lock:
            self._memo[(key, task)] = accuracy
            while len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)

    def merged(self, method: str, **settings) -> Delta:
        """merged_delta of this evaluator's cache, its per-task data computed on its device into its store."""
        return merged_delta(self.cache, method, device=self.device, store=self.store, **settings)

    def _key(self, method, coefficients, scaling, vectors, params, layer_coefficients=None) -> tuple:
        """Settings that mean the same merge share one key (defaults filled in)."""
        spec = METHODS.get(method)
        if spec is None:  # let merge_flat raise its error with the list of methods
            return (method,)
        coefs = {t: 1.0 for t in self.cache.tasks} | {t: float(c) for t, c in (coefficients or {}).items()}
        full = default_params(method, len(self.cache.tasks)) | {k: float(v) for k, v in params.items()}
        scale = spec.default_scaling if scaling is None else float(scaling)
        layers = check_layer_coefficients(layer_coefficients, self.cache.tasks, self.cache.layout)
        per_layer = tuple(sorted((t, layer, c) for t, row in layers.items() for layer, c in row.items() if c != 1.0))
        return (method, vectors, scale, tuple(sorted(coefs.items())), tuple(sorted(full.items())), per_layer)
