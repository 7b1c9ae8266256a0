"""Elementwise merges: task arithmetic, averaging, TIES and DARE. They stream over the tasks in blocks,
never stacking [T, P] and never writing into their (memory-mapped, read-only) inputs."""
from __future__ import annotations

import hashlib
import math

import torch

from ..core.layout import Layout

Tensor = torch.Tensor


def scaled_copy(v: Tensor, c: float) -> Tensor:
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
        bits = scaled_copy(v[sl], c).abs_().view(torch.int32)
        counts += torch.bincount(bits >> 16, minlength=1 << 16)
    above = counts.flip(0).cumsum(0)  # above[i]: entries in buckets >= 65535 - i
    i = int(torch.searchsorted(above, kept))
    bucket, rank = (1 << 16) - 1 - i, kept - (int(above[i - 1]) if i else 0)
    candidates = []
    for sl in _blocks([v]):
        magnitude = scaled_copy(v[sl], c).abs_()
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
        trimmed = torch.stack([scaled_copy(v[sl], c) for v, c in zip(vectors, coefficients)])
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
