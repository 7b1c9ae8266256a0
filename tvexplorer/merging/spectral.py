"""Spectral merges, one 2-D layer at a time: TSV-M (orthogonalised truncated SVDs) and Iso-C (an
isotropic spectrum); the other parameters are averaged."""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..core.layout import Layout
from .elementwise import scaled_copy

Tensor = torch.Tensor


def _per_layer(vectors: list[Tensor], coefficients: list[float], layout: Layout,
               merge_matrices: Callable[[list[Tensor]], Tensor]) -> Tensor:
    """merge_matrices on every 2-D parameter, the mean over tasks on every other one."""
    out = torch.empty(layout.numel, dtype=torch.float32, device=vectors[0].device)
    for _, shape, sl in layout.slices():
        scaled = [scaled_copy(v[sl], c).view(shape) for v, c in zip(vectors, coefficients)]
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
