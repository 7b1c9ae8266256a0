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
# task's leading triplets come from a float32 Gram matrix (as accurate as FusionBench's float32 SVD,
# ~1e-6). Measured and left out: a randomized SVD (on flat spectra, such as the benchmark's random
# task vectors, it misses the top-k subspace by 5-70 % even with 8 power iterations) and LAPACK's
# ssyevr for only the top k eigenvectors with a half Gram matrix from ssyrk (0.7 x the time, but
# through an ill-conditioned polar factor 13 x further from the exact merge than MKL's ssyevd).

def _svd(a: Tensor, k: int | None = None, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    """The top k (default all min(m, n)) singular triplets (u [m, k], s [k], v [n, k]) of a, in dtype."""
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


def _top_singular(a: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The top k singular triplets of a, in float32 (each task's part of TSV-M)."""
    return _svd(a, k, torch.float32)


# The polar factor of a tall a is a (a^T a)^(-1/2): one Gram matrix, one eigendecomposition of it and
# one product. Its error grows with the Gram matrix's condition number, so float32 serves while the
# smallest eigenvalue is above 1e-2 of the largest (a's condition number below 10), float64 down to
# 100 eps, and a true SVD below that. Only matrices at least twice as tall as wide try float32 first:
# a random square one is far too ill-conditioned for it, a random 2:1 one within (condition ~6).
FLOAT32_GRAM = 1e-2
FLOAT64_GRAM = 100 * torch.finfo(torch.float64).eps


def _polar(a: Tensor) -> tuple[Tensor, Tensor]:
    """(U V^T, s) for a = U S V^T: the orthogonal polar factor, the nearest matrix with orthonormal
    columns (or rows), in float32, and a's singular values in ascending order (float32 or float64)."""
    if a.shape[0] < a.shape[1]:
        p, s = _polar(a.T)
        return p.T, s
    attempts = ((torch.float32, FLOAT32_GRAM),) if a.shape[0] >= 2 * a.shape[1] else ()
    for dtype, smallest in (*attempts, (torch.float64, FLOAT64_GRAM)):
        x = a.to(dtype)
        eigenvalues, q = torch.linalg.eigh(x.T @ x)
        if eigenvalues[0] > eigenvalues[-1] * smallest:
            return (x @ ((q * eigenvalues.rsqrt()) @ q.T)).float(), eigenvalues.sqrt()
    # Numerically rank-deficient: the polar factor is not unique; a true SVD gives one of them.
    u, s, vh = torch.linalg.svd(a.double(), full_matrices=False)
    return (u @ vh).float(), s.flip(0)


def _tsv_matrices(mats: list[Tensor]) -> Tensor:
    k = max(1, min(mats[0].shape) // len(mats))
    svds = [_top_singular(m, k) for m in mats]
    u = torch.cat([u for u, _, _ in svds], dim=1)
    s = torch.cat([s for _, s, _ in svds])
    v = torch.cat([v for _, _, v in svds], dim=1)
    return (_polar(u)[0] * s) @ _polar(v)[0].T


def tsv(vectors: list[Tensor], coefficients: list[float], layout: Layout) -> Tensor:
    """TSV-M: Gargiulo et al., "Task Singular Vectors: Reducing Task Interference in Model Merging",
    CVPR 2025. Per 2-D layer keep each task's top min(m,n)//T singular triplets, orthogonalise the
    concatenated left and right singular vectors (polar factor) to remove interference, and
    recombine with the kept singular values; other parameters are averaged."""
    return _per_layer(vectors, coefficients, layout, _tsv_matrices)


def _iso_c_matrices(mats: list[Tensor]) -> Tensor:
    polar, s = _polar(sum(mats))
    return polar * float(s.mean())


def iso_c(vectors: list[Tensor], coefficients: list[float], layout: Layout) -> Tensor:
    """Iso-C: Marczak et al., "No Task Left Behind: Isotropic Model Merging with Common and
    Task-Specific Subspaces", ICML 2025. Per 2-D layer replace the spectrum of the summed task
    matrices by its mean (a flat, isotropic spectrum) keeping the singular vectors; other
    parameters are averaged."""
    return _per_layer(vectors, coefficients, layout, _iso_c_matrices)
