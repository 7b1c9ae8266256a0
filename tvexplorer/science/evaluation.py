"""Exact evaluation of merged image encoders on every task's fixed evaluation subset.

One image encoder is built once and receives theta0 + delta before each evaluation; each task is
scored with its own frozen zero-shot head. Results are memoised by (vectors, method, parameters,
coefficients, scaling): the explorer's sliders revisit the same settings often.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass

import torch

from ..core.cache import Cache
from ..core.device import resolve_device
from ..core.errors import CacheError
from ..core.layout import Layout
from ..data.splits import to_input
from ..merging import METHODS, LayerCoefficients, check_layer_coefficients, merge_flat
from ..models.clip import build_image_encoder, set_flat


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


class Evaluator:
    def __init__(self, cache: Cache, device: str | torch.device | None = None, batch_size: int = 500,
                 split: str = "test", memo_size: int = 512):
        self.cache = cache
        self.device = resolve_device(device)
        self.batch_size = batch_size
        model = cache.manifest["model"]["encoder"]
        self.mean, self.std = model["mean"], model["std"]
        self.encoder = build_image_encoder(model).to(self.device)
        if Layout.of(dict(self.encoder.named_parameters())) != cache.layout:
            raise CacheError("base.safetensors: the stored layout does not match the image encoder that the manifest's model config builds")
        self.theta0 = cache.base().to(self.device)
        heads, _ = cache.heads()
        self.heads = {t: h.to(self.device) for t, h in heads.items()}
        self.sets = {t: cache.eval_split(t, split) for t in cache.tasks}
        self._lock = threading.Lock()  # one encoder, one evaluation at a time
        self._memo_lock = threading.Lock()  # so a memo hit never waits behind a running evaluation
        self._memo: OrderedDict[tuple, EvalResult] = OrderedDict()
        self._memo_size = memo_size

    @torch.inference_mode()
    def accuracy(self, delta: torch.Tensor | None = None, tasks: list[str] | None = None) -> dict[str, float]:
        """Accuracy of theta0 + delta (flat) on each task's evaluation subset."""
        with self._lock:
            theta = self.theta0 if delta is None else self.theta0 + delta.to(self.device, torch.float32)
            set_flat(self.encoder, theta)
            out = {}
            for task in tasks or self.cache.tasks:
                correct = 0
                split = self.sets[task]
                for images, labels in split.batches(self.batch_size):
                    features = self.encoder(to_input(images.to(self.device), self.mean, self.std))
                    predicted = (features @ self.heads[task]).argmax(dim=1).cpu()
                    correct += int((predicted == labels).sum())
                out[task] = correct / len(split)
            return out

    def result(self, delta: torch.Tensor | None) -> EvalResult:
        return summarize(self.accuracy(delta), self.cache.metrics["finetuned"])

    def evaluate(self, method: str, *, coefficients: dict[str, float] | None = None, scaling: float | None = None,
                 vectors: str = "tau", layer_coefficients: LayerCoefficients | None = None, **params) -> EvalResult:
        """Merge the cache's task vectors of kind `vectors` with `method` (per-task and per-layer
        coefficients as in merge_flat) and evaluate; memoised."""
        key = self._key(method, coefficients, scaling, vectors, params, layer_coefficients)
        with self._memo_lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        delta = merge_flat(method, self.cache.vectors(vectors), self.cache.layout,
                           coefficients=coefficients, scaling=scaling, layer_coefficients=layer_coefficients, **params)
        result = self.result(delta)
        with self._memo_lock:
            self._memo[key] = result
            while len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
        return result

    def _key(self, method, coefficients, scaling, vectors, params, layer_coefficients=None) -> tuple:
        """Settings that mean the same merge share one key (defaults filled in)."""
        spec = METHODS.get(method)
        if spec is None:  # let merge_flat raise its error with the list of methods
            return (method,)
        coefs = {t: 1.0 for t in self.cache.tasks} | {t: float(c) for t, c in (coefficients or {}).items()}
        full = {p.name: float(p.default) for p in spec.params} | {k: float(v) for k, v in params.items()}
        scale = spec.default_scaling if scaling is None else float(scaling)
        layers = check_layer_coefficients(layer_coefficients, self.cache.tasks, self.cache.layout)
        per_layer = tuple(sorted((t, layer, c) for t, row in layers.items() for layer, c in row.items() if c != 1.0))
        return (method, vectors, scale, tuple(sorted(coefs.items())), tuple(sorted(full.items())), per_layer)
