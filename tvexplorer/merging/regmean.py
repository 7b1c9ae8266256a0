"""RegMean: Jin et al., "Dataless Knowledge Fusion by Merging Weights of Language Models", ICLR 2023.

Each linear layer's merged weight is the closed-form solution of a least-squares problem: the one
whose outputs best match every task's fine-tuned layer on that task's own inputs,

    W* = argmin_W  sum_t |X_t W - X_t W_t|^2   =>   W* = (sum_t G_t)^-1 sum_t G_t W_t,   G_t = X_t^T X_t,

with W in the input-first orientation ([in, out]) and G_t the Gram matrix of the inputs that the
layer received in task t's fine-tuned model. Since (sum G_t)^-1 sum G_t theta0 = theta0, the same
formula holds for task vectors, so RegMean is linear in them and the usual scaling applies.
FusionBench's conventions: a Gram is the mean of x x^T over every input row (tokens included); its
off-diagonal entries are multiplied by alpha (`reduce_non_diagonal_ratio`: 0.95 in its CLIP config,
0.6 in its GPT-2 one; our default is 0.6), which pulls the solution towards a per-input-feature
weighted average; every other parameter is averaged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from ..core.layout import Layout
from .elementwise import scaled_copy

Tensor = torch.Tensor


@dataclass(frozen=True)
class LinearInput:
    """What RegMean knows of one linear layer in one task: the Gram matrix [n, n] of its inputs, and
    which axis of the parameter (length n) multiplies them: 1 for an nn.Linear weight [out, in]
    (y = W x), 0 for a parameter P used as y = x @ P."""
    gram: Tensor
    input_axis: int


def reduce_off_diagonal(gram: Tensor, alpha: float) -> Tensor:
    """alpha * G with the diagonal of G kept as it is (a fresh tensor)."""
    reduced = gram * alpha
    reduced.diagonal().copy_(gram.diagonal())
    return reduced


def _solve(lhs: Tensor, rhs: Tensor, fallback: Tensor) -> Tensor:
    """lhs^-1 rhs for a symmetric positive semi-definite lhs. A singular lhs (an input direction that
    no task ever used) leaves the solution free along its null space; there it takes `fallback`
    (the average), so the layer stays what averaging would make it where the data says nothing."""
    solution, info = torch.linalg.solve_ex(lhs, rhs)
    if int(info) == 0 and torch.isfinite(solution).all():
        return solution
    pinv = torch.linalg.pinv(lhs, hermitian=True)
    return pinv @ rhs + fallback - pinv @ (lhs @ fallback)


def _check(inputs: list[Mapping[str, LinearInput]], layout: Layout) -> dict[str, tuple[int, ...]]:
    shapes = dict(zip(layout.names, layout.shapes))
    names = set(inputs[0])
    for i, task_inputs in enumerate(inputs):
        if set(task_inputs) != names:
            raise ValueError(f"RegMean: task {i} has Gram matrices for other layers than task 0; "
                             "recompute the Gram matrices of every task from one model")
    for name in names:
        if name not in shapes or len(shapes[name]) != 2:
            raise ValueError(f"RegMean: a Gram matrix is given for {name!r}, which is not a 2-D parameter of the model")
    return {name: shapes[name] for name in names}


def regmean(vectors: list[Tensor], coefficients: list[float], layout: Layout, *,
            inputs: list[Mapping[str, LinearInput]], alpha: float) -> Tensor:
    """RegMean: Jin et al., "Dataless Knowledge Fusion by Merging Weights of Language Models", ICLR 2023.
    Per linear layer W* = (sum_t G_t)^-1 sum_t G_t W_t from each task's input Gram matrices G_t, with
    off-diagonal Gram entries multiplied by alpha; every other parameter is averaged. One layer at a
    time and one task at a time, so memory holds a few layer-sized matrices beyond the result."""
    linear = _check(inputs, layout)
    out = torch.empty(layout.numel, dtype=torch.float32, device=vectors[0].device)
    for name, shape, sl in layout.slices():
        scaled = (scaled_copy(v[sl], c).view(shape) for v, c in zip(vectors, coefficients))
        if name not in linear:
            out[sl] = sum(scaled).div_(len(vectors)).reshape(-1)
            continue
        lhs = rhs = mean = None
        for w, task_inputs in zip(scaled, inputs):
            x = task_inputs[name]
            w_in = w.T if x.input_axis == 1 else w  # [in, out]
            if x.gram.shape != (w_in.shape[0],) * 2:
                raise ValueError(f"RegMean: the Gram matrix of {name!r} is {tuple(x.gram.shape)}; the parameter "
                                 f"{tuple(shape)} needs {w_in.shape[0]} x {w_in.shape[0]}")
            # float64 throughout: Grams of real activations are ill-conditioned, and the solve
            # amplifies the rounding of sum_t G_t W_t by their condition number.
            g = reduce_off_diagonal(x.gram.to(w.device, torch.float64), alpha)
            w_in = w_in.double()
            product = g @ w_in
            lhs = g if lhs is None else lhs.add_(g)
            rhs = product if rhs is None else rhs.add_(product)
            mean = w_in if mean is None else mean.add_(w_in)
        merged = _solve(lhs, rhs, mean.div_(len(vectors))).float()
        out[sl] = (merged.T if x.input_axis == 1 else merged).reshape(-1)  # stored Grams share one orientation record
    return out
