"""Low-rank subspace merges, one 2-D layer at a time like TSV-M and Iso-C: Iso-CTS (a common subspace
plus task-specific directions, isotropic spectrum) and CART (mean plus low-rank centred task
vectors); the other parameters are averaged."""
from __future__ import annotations

from functools import partial

import torch

from ..core.layout import Layout
from .spectral import _per_layer, _polar, _svd

Tensor = torch.Tensor


def _iso_cts_matrices(mats: list[Tensor], common_fraction: float) -> Tensor:
    rank, tasks = min(mats[0].shape), len(mats)
    # As the authors: the common subspace gets common_fraction of the rank, adjusted so that the rest
    # splits evenly among the tasks (never below 0 directions left for it).
    each = min(round((rank - int(rank * common_fraction)) / tasks), rank // tasks)
    common = rank - each * tasks
    u, s, v = _svd(sum(mats))
    u, s, v = u[:, :common], s[:common], v[:, :common]
    if each:  # each task's own top directions outside the common subspace
        specific = [_svd(m.double() - u @ (u.T @ m.double()), each, torch.float32) for m in mats]
        u = torch.cat([u, *(x.double() for x, _, _ in specific)], dim=1)
        s = torch.cat([s, *(x.double() for _, x, _ in specific)])
        v = torch.cat([v, *(x.double() for _, _, x in specific)], dim=1)
    return s.mean() * (_polar(u)[0].double() @ _polar(v)[0].double().T)


def iso_cts(vectors: list[Tensor], coefficients: list[float], layout: Layout, *, common_fraction: float) -> Tensor:
    """Iso-CTS: Marczak et al., "No Task Left Behind: Isotropic Model Merging with Common and
    Task-Specific Subspaces", ICML 2025. Per 2-D layer keep the top common_fraction of the summed
    task matrix's singular directions, replace the weakest rest by each task's own top directions
    outside that common subspace (an equal share per task), orthogonalise the joined left and right
    directions and give them all one singular value, the mean of the joined spectrum; other
    parameters are averaged."""
    return _per_layer(vectors, coefficients, layout, partial(_iso_cts_matrices, common_fraction=common_fraction))


def _cart_matrices(mats: list[Tensor], rank_ratio: float, strength: float) -> Tensor:
    mean = sum(mats) / len(mats)
    k = max(1, int(rank_ratio * min(mean.shape)))
    out = mean.double()
    for m in mats:
        u, s, v = _svd(m - mean, k, torch.float32)
        out += strength * ((u * s) @ v.T)
    return out


def cart(vectors: list[Tensor], coefficients: list[float], layout: Layout, *,
         rank_ratio: float, strength: float) -> Tensor:
    """CART: Choi et al., "Revisiting Weight Averaging for Model Merging" (Centered Arithmetic with
    Rank-reduced Task vectors), 2025. Per 2-D layer the mean task matrix plus strength times the sum
    of each task's centred matrix tau_t - mean truncated to its top rank_ratio * min(m, n) singular
    directions (at full rank the centred parts cancel and CART is averaging); other parameters are
    averaged."""
    return _per_layer(vectors, coefficients, layout, partial(_cart_matrices, rank_ratio=rank_ratio, strength=strength))
