"""Registry of model-merging methods over task vectors (tau = theta_finetuned - theta0).

Each method is a small function over flat 1-D task vectors (see `layout.Layout`) plus a frozen
`MergeMethod` record naming its paper, default scaling and tunable `Param`s, so the CLI and the app
can list, validate and expose them the same way. Real inputs are ~8 x 88M float16 memory-mapped
vectors, so elementwise methods stream over tasks (never a [T, P] stack, at most a few full-length
float32 temporaries) and never write into their inputs; the SVD methods work one layer at a time.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from .checks import finite, in_range
from .layout import Layout

Tensor = torch.Tensor


@dataclass(frozen=True)
class Param:
    """A method's own tunable parameter; allowed values are low <= x <= high, minus the open ends."""
    name: str
    default: float
    low: float
    high: float
    help: str
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def check(self, method: str, value: float) -> float | int:
        x = in_range(f"{method} parameter {self.name}", value, self.low, self.high, self.low_open, self.high_open)
        if self.integer and x != int(x):
            raise ValueError(f"{method} parameter {self.name}={value!r} must be an integer")
        return int(x) if self.integer else x


@dataclass(frozen=True)
class MergeMethod:
    name: str
    label: str
    paper: str
    default_scaling: float
    params: tuple[Param, ...]
    fn: Callable[..., Tensor]


def _scaled(v: Tensor, c: float) -> Tensor:
    """c * v as a fresh float32 tensor (one copy, so a read-only input is never written)."""
    return v.to(torch.float32, copy=True).mul_(c)


def _zeros(vectors: list[Tensor]) -> Tensor:
    return torch.zeros(vectors[0].numel(), dtype=torch.float32, device=vectors[0].device)


# Elementwise methods walk the vectors in blocks and finish each block for every task before moving
# on: the output block stays in the CPU cache, so memory traffic is one read of each task vector and
# one write of the result instead of a read-modify-write of the full-length output per task.
BLOCK = 1 << 18


def _blocks(vectors: list[Tensor]):
    n = vectors[0].numel()
    step = n if vectors[0].is_cuda else BLOCK  # a GPU streams whole vectors; small kernels only add launches
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def task_arithmetic(vectors: list[Tensor], coefficients: list[float], layout: Layout) -> Tensor:
    """Sum of task vectors: Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023."""
    out = _zeros(vectors)
    for sl in _blocks(vectors):
        block = out[sl]
        for v, c in zip(vectors, coefficients):
            block.add_(v[sl], alpha=c)  # promotes float16 to float32 without a copy
    return out


def average(vectors: list[Tensor], coefficients: list[float], layout: Layout) -> Tensor:
    """Mean of task vectors (weight averaging): Wortsman et al., "Model soups", ICML 2022."""
    return task_arithmetic(vectors, [c / len(vectors) for c in coefficients], layout)


def _kth_largest_magnitude(v: Tensor, c: float, kept: int) -> Tensor:
    """Exactly the kept-th largest |c * v|, by a two-level radix select on the float32 bit patterns
    (for non-negative floats their order is the integer order): one pass counts the top 16 bits,
    a second gathers the one bucket that holds the answer. kthvalue on the whole vector is ~10x slower."""
    counts = torch.zeros(1 << 16, dtype=torch.int64, device=v.device)
    for sl in _blocks([v]):
        bits = _scaled(v[sl], c).abs_().view(torch.int32)
        counts += torch.bincount(bits >> 16, minlength=1 << 16)
    above = counts.flip(0).cumsum(0)  # above[i]: entries in buckets >= 65535 - i
    i = int(torch.searchsorted(above, kept))
    bucket, rank = (1 << 16) - 1 - i, kept - (int(above[i - 1]) if i else 0)
    candidates = []
    for sl in _blocks([v]):
        magnitude = _scaled(v[sl], c).abs_()
        candidates.append(magnitude[(magnitude.view(torch.int32) >> 16) == bucket])
    candidates = torch.cat(candidates)
    return candidates.kthvalue(len(candidates) - rank + 1).values


def ties(vectors: list[Tensor], coefficients: list[float], layout: Layout, *, k: float) -> Tensor:
    """TIES: Yadav et al., "TIES-Merging: Resolving Interference When Merging Models", NeurIPS 2023.

    Trim each task to its top-k% magnitudes over the whole vector (ties at the threshold kept),
    elect a per-entry sign from the sum of trimmed values, then average, per entry, only the trimmed
    values that agree with it. An entry whose trimmed values sum to exactly 0 elects no sign and
    merges to 0.
    """
    n = vectors[0].numel()
    kept = min(n, max(1, math.ceil(n * k / 100)))
    thresholds = torch.stack([_kth_largest_magnitude(v, c, kept) for v, c in zip(vectors, coefficients)])[:, None]
    out = _zeros(vectors)
    for sl in _blocks(vectors):
        trimmed = torch.stack([_scaled(v[sl], c) for v, c in zip(vectors, coefficients)])
        trimmed.masked_fill_(trimmed.abs() < thresholds, 0)
        agree = trimmed * trimmed.sum(0).sign() > 0  # trimmed-away entries are 0 and never agree
        out[sl] = trimmed.mul_(agree).sum(0).div_(agree.sum(0).clamp_(min=1))
    return out


def dare(vectors: list[Tensor], coefficients: list[float], layout: Layout, *, p: float, seed: int) -> Tensor:
    """DARE + task arithmetic: Yu et al., "Language Models are Super Mario: Absorbing Abilities from
    Homologous Models as a Free Lunch", ICML 2024. Drop each entry with probability p, rescale the
    survivors by 1/(1-p) so the expectation is unchanged, then sum."""
    out = _zeros(vectors)
    for i, (v, c) in enumerate(zip(vectors, coefficients)):
        # The CPU generator keeps only the low 32 bits of its seed, so (seed, task) is hashed, not packed.
        task_seed = int.from_bytes(hashlib.blake2b(f"{seed},{i}".encode(), digest_size=4).digest(), "little")
        keep = torch.rand(v.numel(), generator=torch.Generator().manual_seed(task_seed)) >= p
        out.add_(torch.where(keep.to(v.device), v, 0), alpha=c / (1 - p))
    return out


def _per_layer(vectors: list[Tensor], coefficients: list[float], layout: Layout,
               merge_matrices: Callable[[list[Tensor]], Tensor]) -> Tensor:
    """merge_matrices on every 2-D parameter, the mean over tasks on every other one."""
    out = torch.empty(layout.numel, dtype=torch.float32, device=vectors[0].device)
    for _, shape, sl in layout.slices():
        scaled = [_scaled(v[sl], c).view(shape) for v, c in zip(vectors, coefficients)]
        merged = merge_matrices(scaled) if len(shape) == 2 else torch.stack(scaled).mean(0)
        out[sl] = merged.reshape(-1).to(torch.float32)
    return out


# The SVD methods need singular vectors of matrices up to 3072 x 768. They take them from the
# eigendecomposition of the smaller Gram matrix, several times faster than an SVD on a CPU. Each
# task's leading triplets come from a float32 Gram matrix (as accurate as FusionBench's float32
# SVD, ~1e-6); full decompositions, whose small singular values matter, use float64.

def _svd(a: Tensor, k: int | None = None, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    """The top k (default all min(m, n)) singular triplets (u [m, k], s [k], v [n, k]) of a."""
    a = a.to(dtype)
    wide = a.shape[0] < a.shape[1]
    eigenvalues, q = torch.linalg.eigh(a @ a.T if wide else a.T @ a)
    k = k or q.shape[1]
    s = eigenvalues.flip(0)[:k].clamp(min=0).sqrt()
    if not s[-1] > s[0] * 10 * math.sqrt(torch.finfo(dtype).eps):
        # Numerically rank-deficient at this precision: the Gram matrix cannot resolve singular vectors
        # this small relative to the largest, so take them from a true SVD, as rare as it is slow.
        u, s, vh = torch.linalg.svd(a.double(), full_matrices=False)
        return u[:, :k].to(dtype), s[:k].to(dtype), vh[:k].T.to(dtype)
    q = q.flip(1)[:, :k]
    rest = (a.T @ q if wide else a @ q) / s
    return (q, s, rest) if wide else (rest, s, q)


def _polar(a: Tensor) -> Tensor:
    """Orthogonal polar factor U V^T of a = U S V^T: the nearest matrix with orthonormal columns
    (on a rank-deficient a, the partial isometry on its range)."""
    u, _, v = _svd(a)
    return u @ v.T


def _tsv_matrices(mats: list[Tensor]) -> Tensor:
    k = max(1, min(mats[0].shape) // len(mats))
    svds = [_svd(m, k, torch.float32) for m in mats]
    u = torch.cat([u for u, _, _ in svds], dim=1).double()
    s = torch.cat([s for _, s, _ in svds]).double()
    v = torch.cat([v for _, _, v in svds], dim=1).double()
    return (_polar(u) * s) @ _polar(v).T


def tsv(vectors: list[Tensor], coefficients: list[float], layout: Layout) -> Tensor:
    """TSV-M: Gargiulo et al., "Task Singular Vectors: Reducing Task Interference in Model Merging",
    CVPR 2025. Per 2-D layer keep each task's top min(m,n)//T singular triplets, orthogonalise the
    concatenated left and right singular vectors (polar factor) to remove interference, and
    recombine with the kept singular values; other parameters are averaged."""
    return _per_layer(vectors, coefficients, layout, _tsv_matrices)


def _iso_c_matrices(mats: list[Tensor]) -> Tensor:
    u, s, v = _svd(sum(mats))
    return s.mean() * (u @ v.T)


def iso_c(vectors: list[Tensor], coefficients: list[float], layout: Layout) -> Tensor:
    """Iso-C: Marczak et al., "No Task Left Behind: Isotropic Model Merging with Common and
    Task-Specific Subspaces", ICML 2025. Per 2-D layer replace the spectrum of the summed task
    matrices by its mean (a flat, isotropic spectrum) keeping the singular vectors; other
    parameters are averaged."""
    return _per_layer(vectors, coefficients, layout, _iso_c_matrices)


METHODS: dict[str, MergeMethod] = {m.name: m for m in (
    MergeMethod("task_arithmetic", "Task Arithmetic", "Ilharco et al., ICLR 2023", 0.3, (), task_arithmetic),
    MergeMethod("average", "Weight averaging", "Wortsman et al., ICML 2022", 1.0, (), average),
    MergeMethod("ties", "TIES", "Yadav et al., NeurIPS 2023", 1.0, (
        Param("k", 20.0, 0.0, 100.0, "percent of entries kept per task (largest magnitudes), in (0, 100]",
              low_open=True),
    ), ties),
    MergeMethod("dare", "DARE", "Yu et al., ICML 2024", 0.3, (
        Param("p", 0.5, 0.0, 1.0, "probability of dropping each entry, in [0, 1)", high_open=True),
        Param("seed", 0, 0, 2**31 - 1, "random seed, an integer in [0, 2^31 - 1]", integer=True),
    ), dare),
    MergeMethod("tsv", "TSV-M", "Gargiulo et al., CVPR 2025", 1.0, (), tsv),
    MergeMethod("iso_c", "Iso-C", "Marczak et al., ICML 2025", 1.0, (), iso_c),
)}


def merge_flat(method: str, vectors: Mapping[str, Tensor], layout: Layout, *,
               coefficients: Mapping[str, float] | None = None, scaling: float | None = None,
               **params) -> Tensor:
    """Merge flat task vectors (task name -> 1-D tensor in `layout`, any float dtype, never written).

    Each task is multiplied by its coefficient (default 1.0) before the method combines them; the
    result is multiplied by `scaling` (default: the method's default_scaling). Returns float32 of
    shape (layout.numel,).
    """
    if method not in METHODS:
        raise ValueError(f"unknown merge method {method!r}; choose one of: {', '.join(METHODS)}")
    spec = METHODS[method]
    if not vectors:
        raise ValueError("no task vectors given; pass at least one task")
    coefficients = dict(coefficients or {})
    unknown = sorted(set(coefficients) - set(vectors))
    if unknown:
        raise ValueError(f"coefficients name unknown task(s) {unknown}; valid tasks: {sorted(vectors)}")
    for task, c in coefficients.items():
        finite(f"coefficient for task {task!r}", c, "coefficients must be finite numbers")
    scaling = spec.default_scaling if scaling is None else scaling
    finite("scaling", scaling)
    by_name = {p.name: p for p in spec.params}
    for name in params:
        if name not in by_name:
            raise ValueError(f"method {method!r} has no parameter {name!r}; "
                             f"its parameters are: {', '.join(by_name) or '(none)'}")
    values = {p.name: p.check(method, params.get(p.name, p.default)) for p in spec.params}
    for task, v in vectors.items():
        if v.ndim != 1 or v.numel() != layout.numel:
            raise ValueError(f"task vector {task!r} has shape {tuple(v.shape)}, the layout expects ({layout.numel},)")
        if not v.is_floating_point():
            raise ValueError(f"task vector {task!r} has dtype {v.dtype}; it must be a floating-point tensor")
    merged = spec.fn(list(vectors.values()), [float(coefficients.get(t, 1.0)) for t in vectors], layout, **values)
    return merged.mul_(scaling)


def merge(method: str, task_vectors: Mapping[str, Mapping[str, Tensor]], *,
          coefficients: Mapping[str, float] | None = None, scaling: float | None = None,
          **params) -> dict[str, Tensor]:
    """Merge task vectors given as {task: {parameter name: delta}}; returns {parameter name: merged delta}."""
    if not task_vectors:
        raise ValueError("no task vectors given; pass at least one task")
    first = next(iter(task_vectors))
    layout = Layout.of(task_vectors[first])
    flat = {}
    for task, params_of_task in task_vectors.items():
        # Keep float16 deltas in float16 so flattening does not double their memory.
        half = all(t.dtype == torch.float16 for t in params_of_task.values())
        try:
            flat[task] = layout.flatten(params_of_task, dtype=torch.float16 if half else torch.float32)
        except ValueError as e:
            raise ValueError(f"task {task!r} does not match task {first!r}: {e}") from None
    return layout.unflatten(merge_flat(method, flat, layout, coefficients=coefficients, scaling=scaling, **params))
