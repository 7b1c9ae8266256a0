"""Merges that treat each layer by its place in the network: LiNeS (depth-scaled task arithmetic)
and WUDI (per linear layer, gradient steps against the interference that the task vectors predict).
Both work one parameter at a time (`Layout.slices`), never on a [T, P] stack."""
from __future__ import annotations

import re

import torch

from ..core.layout import Layout
from .elementwise import scaled_copy, task_arithmetic

Tensor = torch.Tensor

_BLOCK_INDEX = re.compile(r"\.(\d+)\.")  # e.g. transformer.resblocks.7.attn.in_proj_weight -> 7


def block_depths(layout: Layout) -> list[int | None]:
    """Each parameter's residual-block index (the first '.N.' in its name), None outside the blocks."""
    found = [_BLOCK_INDEX.search(name) for name in layout.names]
    return [int(m.group(1)) if m else None for m in found]


def lines(vectors: list[Tensor], coefficients: list[float], layout: Layout, *, alpha: float, beta: float) -> Tensor:
    """LiNeS: Wang et al., "LiNeS: Post-training Layer Scaling Prevents Forgetting and Enhances Model
    Merging", ICLR 2025. The task-arithmetic sum with block l of L (0-based) multiplied by
    alpha + beta * l / (L - 1): shallow layers, which hold general features that the tasks share,
    move little and deep layers move most; parameters outside the blocks (embeddings, final
    norm and projection) get alpha. The registry's default alpha is 1/T for T tasks, as in the
    authors' multi-task merging (src/eval/eval.py: (|sum of tau| / |merged tau|) / T, where the
    merged vector is the sum)."""
    depths = block_depths(layout)
    last = max((d for d in depths if d is not None), default=0)
    out = task_arithmetic(vectors, coefficients, layout)
    for depth, (_, _, sl) in zip(depths, layout.slices()):
        out[sl] *= alpha if depth is None else alpha + beta * depth / max(last, 1)
    return out


def _wudi_matrix(mats: list[Tensor], steps: int, lr: float) -> Tensor:
    """Adam from the sum on L(X) = sum_t |(X - tau_t) tau_t^T|^2 / |tau_t|^2. The loss is quadratic,
    so its gradient 2 (X A - B), with A = sum_t tau_t^T tau_t / |tau_t|^2 and B = sum_t tau_t
    tau_t^T tau_t / |tau_t|^2, costs one [m, n] x [n, n] product per step and no autograd."""
    merged = sum(mats)
    a = torch.zeros(mats[0].shape[1], mats[0].shape[1], dtype=torch.float32, device=merged.device)
    b = torch.zeros_like(merged)
    for m in mats:
        squared_norm = float(m.square().sum())
        if squared_norm > 0:  # a zero task matrix adds nothing to the loss
            gram = (m.T @ m).div_(squared_norm)
            a += gram
            b += m @ gram
    x = torch.nn.Parameter(merged)
    optimizer = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        x.grad = (x.detach() @ a).sub_(b).mul_(2)
        optimizer.step()
    return x.detach()


def wudi(vectors: list[Tensor], coefficients: list[float], layout: Layout, *, steps: int, log10_lr: float) -> Tensor:
    """WUDI-merging: Cheng et al., "Whoever Started the Interference Should End It: Guiding Data-Free
    Model Merging via Task Vectors", 2025. A linear layer's task vector spans (approximately) the
    inputs that its task feeds it, so per 2-D parameter the merged update X starts from the sum and
    takes `steps` Adam steps (learning rate 10^log10_lr; FusionBench: 400 steps at 1e-5) that shrink each
    task's interference |(X - tau_t) tau_t^T|^2, weighted by 1/|tau_t|^2; other parameters are
    averaged."""
    out = torch.empty(layout.numel, dtype=torch.float32, device=vectors[0].device)
    for _, shape, sl in layout.slices():
        mats = [scaled_copy(v[sl], c).view(shape) for v, c in zip(vectors, coefficients)]
        merged = _wudi_matrix(mats, steps, 10.0 ** log10_lr) if len(shape) == 2 else sum(mats) / len(mats)
        out[sl] = merged.reshape(-1)
    return out
