"""Gradient alignment: how the first-epoch gradient g0 relates to the fine-tuning trajectory.

"On Task Vectors and Gradients" (arXiv 2508.16082): after one epoch of full-batch gradient descent
tau1 = -lr * g0 exactly; over more epochs the first epoch dominates the trajectory. Under AdamW the
direction of tau need not follow -g0 closely; these numbers show what a cache actually holds.

Cosines and norms are accumulated in float64 over chunks, so float16 memory-mapped vectors of
any size are compared exactly without a full-size float64 copy.
"""
from __future__ import annotations

import math

import pandas as pd
import torch

from ..core.layout import Layout

_CHUNK = 1 << 22


def _sums(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """(a.b, |a|^2, |b|^2) in float64."""
    dot = na = nb = 0.0
    for start in range(0, a.numel(), _CHUNK):
        x, y = a[start:start + _CHUNK].double(), b[start:start + _CHUNK].double()
        dot += float(x @ y)
        na += float(x @ x)
        nb += float(y @ y)
    return dot, na, nb


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    dot, na, nb = _sums(a, b)
    return dot / math.sqrt(na * nb) if na > 0 and nb > 0 else 0.0


def norm(a: torch.Tensor) -> float:
    return math.sqrt(_sums(a, a)[1])


def cosine_matrix(vectors: dict[str, torch.Tensor], chunk: int = _CHUNK) -> pd.DataFrame:
    """Task-by-task cosines from one float64 Gram matrix, in a single chunked pass over all vectors."""
    names = list(vectors)
    gram = torch.zeros(len(names), len(names), dtype=torch.float64)
    for start in range(0, next(iter(vectors.values())).numel(), chunk):
        block = torch.stack([vectors[t][start:start + chunk].double() for t in names])
        gram += block @ block.T
    d = gram.diagonal().sqrt()
    denom = torch.outer(d, d)
    cos = torch.where(denom > 0, gram / denom.clamp_min(1e-300), torch.zeros_like(gram))
    cos.fill_diagonal_(1.0)
    return pd.DataFrame(cos.numpy(), index=names, columns=names)


def _layers(layout: Layout):
    """('all', whole vector) then every parameter tensor by name."""
    yield "all", slice(0, layout.numel)
    for name, _, sl in layout.slices():
        yield name, sl


def trajectory_table(task: str, layout: Layout, theta0: torch.Tensor, thetas: list[torch.Tensor],
                     g0: torch.Tensor) -> pd.DataFrame:
    """Per epoch e and layer: |theta_e - theta_{e-1}|, its share of the summed update norms,
    cos(theta_e - theta_{e-1}, -g0), cos(tau_e, tau) and cos(tau_e, -g0)."""
    tau = thetas[-1] - theta0
    rows = []
    previous = theta0
    for epoch, theta in enumerate(thetas, start=1):
        update, tau_e = theta - previous, theta - theta0
        for layer, sl in _layers(layout):
            rows.append({"task": task, "epoch": epoch, "layer": layer,
                         "update_norm": norm(update[sl]),
                         "cos_update_neg_g0": cosine(update[sl], -g0[sl]),
                         "cos_tau_e_tau": cosine(tau_e[sl], tau[sl]),
                         "cos_tau_e_neg_g0": cosine(tau_e[sl], -g0[sl])})
        previous = theta
    table = pd.DataFrame(rows)
    totals = table.groupby("layer")["update_norm"].transform("sum")
    table.insert(4, "norm_share", (table["update_norm"] / totals).where(totals > 0, 0.0))
    return table


def full_batch_identity_holds(optimizer: str) -> bool:
    """Only full-batch 'gd' makes tau1 = -lr * g0 an identity (by construction); under mini-batch
    steps or AdamW the number |tau1 + lr g0| / |lr g0| tests nothing, so it is not shown there."""
    return optimizer == "gd"


def vector_alignment(tau: torch.Tensor, tau1: torch.Tensor, g0: torch.Tensor, lr: float) -> dict:
    """First-epoch gradient against the task vectors, and the full-batch check tau1 = -lr * g0."""
    step = -lr * g0.double()
    diff = norm(tau1.double() - step)
    return {
        "cos_tau_neg_g0": cosine(tau, -g0),
        "cos_tau1_neg_g0": cosine(tau1, -g0),
        "cos_tau1_tau": cosine(tau1, tau),
        "norm_tau": norm(tau),
        "norm_tau1": norm(tau1),
        "norm_lr_g0": norm(step),
        "full_batch_rel_err": diff / norm(step) if norm(step) > 0 else float("inf"),
    }


def layer_alignment(layout: Layout, tau: torch.Tensor, tau1: torch.Tensor, g0: torch.Tensor) -> pd.DataFrame:
    """Per parameter tensor: cosines between tau, tau1 and -g0, and the norms of tau and tau1."""
    return pd.DataFrame([
        {"layer": name, "cos_tau_neg_g0": cosine(tau[sl], -g0[sl]), "cos_tau1_neg_g0": cosine(tau1[sl], -g0[sl]),
         "cos_tau1_tau": cosine(tau1[sl], tau[sl]), "norm_tau": norm(tau[sl]), "norm_tau1": norm(tau1[sl])}
        for name, _, sl in layout.slices()])


def task_alignment(cache, task: str) -> dict:
    """Everything the `align` command and the app show for one task."""
    tau, tau1, g0 = (cache.vector(task, k) for k in ("tau", "tau1", "g0"))
    training = cache.manifest.training  # a cache with tau1 and g0 was built by fine-tuning, so it has one
    summary = vector_alignment(tau, tau1, g0, training.lr)
    traj = cache.trajectory()
    epochs = traj[(traj["task"] == task) & (traj["layer"] == "all")]
    summary["epochs"] = epochs.drop(columns=["task", "layer"]).to_dict("records")
    summary["optimizer"] = training.optimizer
    return summary
