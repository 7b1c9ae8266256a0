"""Instant preview: a linearised prediction of a task-arithmetic merge's accuracy.

Exact evaluation of a merged image encoder runs every evaluation image through the network, which
at real size takes minutes on a CPU. Around theta0 the encoder's features are, to first order,

    f(theta0 + s * sum_t a_t tau_t)(x) = f(theta0)(x) + s * sum_t a_t J(x) tau_t + O(s^2 |tau|^2),

where J(x) is the Jacobian of the features with respect to the parameters. The features f(theta0)(x)
and the Jacobian-vector products J(x) tau_t (forward-mode autodiff, one pass per image and vector)
are computed once, when the cache is built; after that, any coefficients cost one small matrix
product: features = f0 + (s * a) @ J_tau, then the usual scoring with each task's frozen head.

The error is the second-order remainder: zero at s = 0 (the preview is then exactly the zero-shot
model), shrinking quadratically with the step s * sum_t a_t tau_t, and growing where the network's
curvature along the merge is large. A model whose features are linear in its parameters is
predicted exactly. Accuracy turns small feature errors into flipped predictions only near decision
boundaries, so the build measures what that amounts to: it evaluates a few settings both ways and
records the largest per-task difference, which the app shows beside the preview (`error_note`).

Files: preview/<task>.safetensors per evaluation task, holding f0_<split> [N, D] and
jvp_<kind>_<split> [T, N, D] (f0 in float32, so that scaling 0 stays exact; the JVPs in the cache's
vector dtype; T follows the preview record's `vectors`). Only the test subsets, which the app shows,
are linearised by default.
"""
from __future__ import annotations

import contextlib
import random
from dataclasses import replace
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch.func import functional_call, jvp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..core.cache import Cache
from ..core.checks import finite
from ..core.device import resolve_device
from ..core.additions import PreviewCheck, PreviewRecord
from ..core.records import mean
from ..data.splits import to_input
from ..merging import merge_flat
from ..models.clip import build_image_encoder
from .evaluation import Evaluator

Progress = Callable[[int, int, str], None]
Tensor = torch.Tensor

BATCH_SIZE = 500  # the Evaluator's default, so that f0 is computed exactly as it computes features
CHECK_SCALINGS = (0.3, 1.0)  # besides 0 (exact by construction) and the best on validation
CHECK_SEED = 0
# Forward-mode passes hold a few float32 copies of the parameters per tangent (the stacked tangents,
# their dual tensors); chunks of tangents are sized to stay within TANGENT_MEMORY.
COPIES_PER_TANGENT = 4
TANGENT_MEMORY = 4 << 30


# ---------------------------------------------------------------- the linearisation

@contextlib.contextmanager
def _forward_ad_attention() -> Iterator[None]:
    """Attention kernels that forward-mode autodiff can differentiate.

    nn.MultiheadAttention's inference fast path and the fused SDPA kernels have no forward-mode
    derivative; the slow path with the math kernel computes the same function. Both switches are
    process-wide in torch, so they are restored on exit; meanwhile other threads' attention runs on
    the slower (equally valid) kernels too."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def linearise(encoder: torch.nn.Module, params: Mapping[str, Tensor], tangents: Sequence[Mapping[str, Tensor]],
              images: Tensor, prepare: Callable[[Tensor], Tensor] = lambda x: x, batch_size: int = BATCH_SIZE,
              tangents_at_once: int | None = None) -> tuple[Tensor, Tensor]:
    """(f0 [N, D], jvps [T, N, D]) on the CPU, float32: the encoder's outputs at `params` and their
    derivatives along each tangent (a parameter-shaped mapping, any float dtype or device).

    `prepare` turns a slice of `images` into the encoder's input on its device. Tangents go through
    the network `tangents_at_once` at a time (vmap shares the primal pass among them); by default as
    many as fit TANGENT_MEMORY, since each costs several parameter-sized copies (one at a time for a
    ViT-B/32; all 18 at once for the demo's tiny ViT)."""
    device = next(iter(params.values())).device

    def features(p, x):
        return functional_call(encoder, p, (x,))

    def derivative(x):
        return lambda tangent: jvp(lambda p: features(p, x), (params,), (tangent,))[1]

    def batches() -> Iterator[Tensor]:
        for start in range(0, len(images), batch_size):
            yield prepare(images[start:start + batch_size])

    with torch.inference_mode():
        f0 = torch.cat([features(params, x).float().cpu() for x in batches()])
    if tangents_at_once is None:
        param_bytes = 4 * sum(p.numel() for p in params.values())
        tangents_at_once = max(1, TANGENT_MEMORY // (COPIES_PER_TANGENT * param_bytes))
    chunks = -(-len(tangents) // tangents_at_once)
    size = -(-len(tangents) // max(1, chunks))  # balanced chunks: 18 tangents as 9 + 9, not 16 + 2
    columns = []
    for first in range(0, len(tangents), size):
        chunk = tangents[first:first + size]
        stacked = {name: torch.stack([t[name] for t in chunk]).to(device, p.dtype) for name, p in params.items()}
        with torch.no_grad(), _forward_ad_attention():
            parts = [vmap(derivative(x))(stacked).float().cpu() for x in batches()]
        columns.append(torch.cat(parts, dim=1))
    jvps = torch.cat(columns) if columns else f0.new_zeros((0, *f0.shape))
    return f0, jvps


def predict_features(f0: Tensor, jvps: Tensor, weights: Tensor) -> Tensor:
    """f0 + sum_t weights[t] * jvps[t]: the first-order features of theta0 + sum_t weights[t] tau_t.

    T scaled additions, the cost of the whole preview (under a millisecond on the demo) and
    differentiable in the weights. The same sum as one [T] @ [T, N*D] product took 10 to 50 ms on
    the CPU: BLAS's vector-matrix path is slow for so few rows."""
    out = f0
    for weight, derivative in zip(weights.to(jvps.dtype), jvps):
        out = out + weight * derivative
    return out


# ---------------------------------------------------------------- building it into a cache

def _stored_kinds(cache: Cache, kinds: Sequence[str]) -> list[str]:
    """The requested vector kinds that this cache holds (imported caches may lack tau1)."""
    return [k for k in kinds if k in cache.vector_kinds]


class _Linearisation:
    """theta0's image encoder, ready to linearise any of the cache's evaluation images along any of its vectors."""

    def __init__(self, cache: Cache, device, batch_size: int):
        self.cache, self.device, self.batch_size = cache, resolve_device(device), batch_size
        self.info = cache.manifest.model.encoder
        self.encoder = build_image_encoder(self.info).to(self.device)
        # Separate tensors, not views of one flat vector: forward-mode AD gives a view's whole base a
        # tangent, which for ~150 views of a ViT-B/32 is ~150 full-size copies (it ran out of 24 GB).
        self.params = {name: t.clone() for name, t in cache.layout.unflatten(cache.base().to(self.device)).items()}

    def __call__(self, task: str, split: str, kinds: Sequence[str], vectors: Sequence[str]) -> dict[str, Tensor]:
        """f0_<split> and jvp_<kind>_<split> [len(vectors), N, D] on `task`'s images; both kinds'
        vectors go through one linearisation, so their JVPs share the primal passes."""
        cache = self.cache
        tangents = [cache.layout.unflatten(cache.vector(t, kind)) for kind in kinds for t in vectors]
        prepare = lambda images: to_input(images.to(self.device), self.info.mean, self.info.std)
        f0, jvps = linearise(self.encoder, self.params, tangents, cache.eval_split(task, split).images, prepare,
                             self.batch_size)
        out = {f"f0_{split}": f0}
        for kind, part in zip(kinds, jvps.split(len(vectors))):
            out[f"jvp_{kind}_{split}"] = part.to(cache.vector_dtype)
        return out


def compute_preview(cache: Cache, device: str | torch.device | None = None, batch_size: int = BATCH_SIZE,
                    kinds: Sequence[str] = ("tau", "tau1"), splits: Sequence[str] = ("test",),
                    progress: Progress | None = None) -> None:
    """Linearise the image encoder around theta0 on every evaluation image, store one file per
    evaluation task, check the preview against exact evaluation, and record it all in
    the manifest's preview record. Running it again replaces the previous preview with identical files."""
    kinds = _stored_kinds(cache, kinds)
    linearised = _Linearisation(cache, device, batch_size)
    total, done = len(cache.tasks) * len(splits), 0
    files = {}
    for task in cache.tasks:
        tensors = {}
        for split in splits:
            if progress:
                progress(done, total, f"preview: {task}, {split}")
            tensors.update(linearised(task, split, kinds, cache.tasks))
            done += 1
        files[task] = f"preview/{task}.safetensors"
        # An unfinished rebuild must not pass for a preview: the record returns only once all files match it.
        cache.add_files({files[task]: tensors}, lambda manifest: replace(manifest, preview=None))
    _record_preview(cache, files, kinds, splits, linearised, progress)


def extend_preview(cache: Cache, record: PreviewRecord, device: str | torch.device | None = None,
                   batch_size: int = BATCH_SIZE, progress: Progress | None = None) -> None:
    """The preview `record` of the cache's earlier task set, extended to the tasks added since
    (pipeline/addtask.py): each earlier task's file gains the new vectors' JVPs, each new task gets a
    file, and the checks run again. What a full rebuild would store, at the cost of the new vectors
    and images only."""
    kinds, splits, old = record.kinds, record.splits, list(record.vectors)
    new = [t for t in cache.tasks if t not in old]
    if old + new != cache.tasks:
        raise ValueError(f"the preview covers {old}, which is not the start of this cache's tasks {cache.tasks}")
    linearised = _Linearisation(cache, device, batch_size)
    files, total = {}, len(cache.tasks) * len(splits)
    for done, task in enumerate(cache.tasks):
        files[task] = f"preview/{task}.safetensors"
        if progress:
            progress(done * len(splits), total, f"preview: {task}")
        if task in new:
            tensors = {k: v for split in splits for k, v in linearised(task, split, kinds, cache.tasks).items()}
        else:
            tensors = {k: v.clone() for k, v in cache.tensors(record.files[task]).items()}
            for split in splits:
                added = linearised(task, split, kinds, new)
                for kind in kinds:
                    name = f"jvp_{kind}_{split}"
                    tensors[name] = torch.cat([tensors[name], added[name]])
        cache.add_files({files[task]: tensors}, lambda manifest: replace(manifest, preview=None))
    _record_preview(cache, files, kinds, splits, linearised, progress)


def _record_preview(cache: Cache, files: dict[str, str], kinds: Sequence[str], splits: Sequence[str],
                    linearised: _Linearisation, progress: Progress | None) -> None:
    total = len(cache.tasks) * len(splits)
    if progress:
        progress(total, total, "preview: checking against exact evaluation")
    record = PreviewRecord(files, tuple(kinds), tuple(splits), tuple(cache.tasks))
    checks = _checks(cache, Preview.from_cache(cache, record), linearised.device, linearised.batch_size)
    cache.add_files({}, lambda manifest: replace(manifest, preview=replace(record, checks=checks)))


def _check_settings(cache: Cache, kinds: Sequence[str]) -> list[dict]:
    """Coefficient settings at which the build compares preview and exact accuracy on the test split:
    for tau, uniform scalings 0, the best on validation, 0.3 and 1.0, and one seeded non-uniform
    setting; for tau1, its own best scaling (where the app starts)."""
    metrics = cache.manifest.metrics

    def uniform(kind: str, scaling: float, best: float | None) -> dict:
        note = " (best on validation)" if scaling == best else ""
        return {"setting": f"{kind}, all coefficients 1, scaling {scaling:g}{note}", "kind": kind, "split": "test",
                "scaling": float(scaling), "coefficients": None}

    settings = []
    if "tau" in kinds:
        best = metrics.best_scaling("task_arithmetic")
        scalings = [0.0, *([best] if best is not None else []), *CHECK_SCALINGS]
        settings += [uniform("tau", s, best) for s in dict.fromkeys(scalings)]
        rng = random.Random(CHECK_SEED)
        coefficients = {t: round(rng.uniform(0.0, 1.0), 3) for t in cache.tasks}
        settings.append({"setting": f"tau, random coefficients in [0, 1] (seed {CHECK_SEED}), scaling 0.3",
                         "kind": "tau", "split": "test", "scaling": 0.3, "coefficients": coefficients})
    best_one_epoch = metrics.best_scaling("task_arithmetic_one_epoch")
    if "tau1" in kinds and best_one_epoch is not None:
        settings.append(uniform("tau1", best_one_epoch, best_one_epoch))
    return settings


def _checks(cache: Cache, preview: Preview, device, batch_size: int) -> tuple[PreviewCheck, ...]:
    evaluators: dict[str, Evaluator] = {}
    checks = []
    for setting in _check_settings(cache, preview.kinds):
        split = setting["split"]
        if split not in evaluators:
            evaluators[split] = Evaluator(cache, device, batch_size=batch_size, split=split)
        delta = merge_flat("task_arithmetic", cache.vectors(setting["kind"]), cache.layout,
                           coefficients=setting["coefficients"], scaling=setting["scaling"])
        exact = evaluators[split].accuracy(delta)
        predicted = preview.accuracy(setting["coefficients"], setting["scaling"], setting["kind"], split)
        worst = max(exact, key=lambda t: abs(predicted[t] - exact[t]))
        checks.append(PreviewCheck(**setting, preview=predicted, exact=exact, preview_average=mean(predicted),
                                   exact_average=mean(exact), max_abs_diff=abs(predicted[worst] - exact[worst]),
                                   worst_task=worst))
    return tuple(checks)


# ---------------------------------------------------------------- using it

class Preview:
    """Linearised accuracies of task-arithmetic merges, all evaluation tasks in one mat-vec.

    Per split, every task's f0 rows are stacked into one [N, D] matrix and, per vector kind, their
    JVPs into one [T, N, D] tensor, so a setting costs one product plus one head per task."""

    def __init__(self, vectors: Sequence[str], heads: Mapping[str, Tensor], labels: Mapping[str, Mapping[str, Tensor]],
                 f0: Mapping[str, Mapping[str, Tensor]], jvps: Mapping[str, Mapping[str, Mapping[str, Tensor]]],
                 checks: Sequence[PreviewCheck] = ()):
        """labels[split][task] [N]; f0[split][task] [N, D]; jvps[kind][split][task] [T, N, D], T in
        the order of `vectors`; heads[task] [D, classes]. Every split lists the tasks of `heads`."""
        self.vectors = list(vectors)
        self.tasks = list(heads)
        self.kinds = list(jvps)
        self.splits = list(f0)
        self.checks = list(checks)
        self._heads = {t: heads[t].float() for t in self.tasks}
        self._labels = {s: {t: labels[s][t] for t in self.tasks} for s in self.splits}
        self._rows = {s: self._row_ranges(f0[s]) for s in self.splits}
        self._f0 = {s: torch.cat([f0[s][t].float() for t in self.tasks]) for s in self.splits}
        self._jvps = {(k, s): torch.cat([jvps[k][s][t].float() for t in self.tasks], dim=1)
                      for k in self.kinds for s in self.splits}

    def _row_ranges(self, per_task: Mapping[str, Tensor]) -> dict[str, slice]:
        ranges, start = {}, 0
        for t in self.tasks:
            ranges[t] = slice(start, start + len(per_task[t]))
            start += len(per_task[t])
        return ranges

    @classmethod
    def open(cls, cache: Cache, device: str | torch.device = "cpu") -> Preview | None:
        """The cache's preview, or None when it has none (or one built for other task vectors)."""
        record = cache.manifest.preview
        if record is None or list(record.vectors) != cache.tasks:
            return None
        return cls.from_cache(cache, record, device)

    @classmethod
    def from_cache(cls, cache: Cache, record: PreviewRecord, device: str | torch.device = "cpu") -> Preview:
        heads, _ = cache.heads()
        stored = {t: cache.tensors(rel) for t, rel in record.files.items()}
        splits, kinds, tasks = record.splits, record.kinds, cache.tasks

        def load(name: str) -> dict[str, Tensor]:
            return {t: stored[t][name].to(device) for t in tasks}
        return cls(record.vectors, {t: h.to(device) for t, h in heads.items()},
                   {s: {t: cache.eval_split(t, s).labels.to(device) for t in tasks} for s in splits},
                   {s: load(f"f0_{s}") for s in splits},
                   {k: {s: load(f"jvp_{k}_{s}") for s in splits} for k in kinds},
                   record.checks)

    def weights(self, coefficients: Mapping[str, float] | None, scaling: float) -> Tensor:
        """scaling * coefficient per task vector (coefficients default to 1.0), in the stored order."""
        coefficients = dict(coefficients or {})
        unknown = sorted(set(coefficients) - set(self.vectors))
        if unknown:
            raise ValueError(f"coefficients name unknown task(s) {unknown}; valid tasks: {self.vectors}")
        finite("scaling", scaling)
        for task, c in coefficients.items():
            finite(f"coefficient for task {task!r}", c, "coefficients must be finite numbers")
        values = [float(scaling) * float(coefficients.get(t, 1.0)) for t in self.vectors]
        return torch.tensor(values, device=self._f0[self.splits[0]].device)

    def features(self, coefficients: Mapping[str, float] | None = None, scaling: float = 1.0, kind: str = "tau",
                 split: str = "test") -> dict[str, Tensor]:
        """Predicted image features of every evaluation image, per task."""
        if kind not in self.kinds or split not in self.splits:
            raise ValueError(f"this preview holds vector kinds {self.kinds} and splits {self.splits}, "
                             f"not {kind!r} on {split!r}")
        predicted = predict_features(self._f0[split], self._jvps[kind, split], self.weights(coefficients, scaling))
        return {t: predicted[rows] for t, rows in self._rows[split].items()}

    def accuracy(self, coefficients: Mapping[str, float] | None = None, scaling: float = 1.0, kind: str = "tau",
                 split: str = "test") -> dict[str, float]:
        """Predicted accuracy per task of theta0 + scaling * sum_t coefficients[t] * tau_t (the average
        merge is scaling / T). Scored like Evaluator.accuracy: argmax of features @ head; the features
        are not normalised, since a positive scale per row cannot change its argmax."""
        out = {}
        for task, features in self.features(coefficients, scaling, kind, split).items():
            predicted = (features @ self._heads[task]).argmax(dim=1)
            labels = self._labels[split][task]
            out[task] = int((predicted == labels).sum()) / len(labels)
        return out

    def error_note(self) -> str:
        """One line for the app: how far the preview was from exact evaluation when it was built."""
        if not self.checks:
            return "preview vs exact: not checked at build time"
        worst = max(self.checks, key=lambda c: c.max_abs_diff)
        return (f"preview vs exact at build time: differed by up to {100 * worst.max_abs_diff:.1f} points "
                f"(at {worst.setting}, on {worst.worst_task}; {len(self.checks)} settings checked)")
