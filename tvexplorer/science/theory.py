"""Paper B's theorem as a measurement: plain mini-batch SGD against the gradient at theta0.

"On Task Vectors and Gradients" (arXiv 2508.16082): with K = N/B equal batches per epoch and a
constant learning rate, one epoch of SGD moves theta0 by -lr * K * g0 up to an error of second
order in lr, and E epochs move it by -lr * K * sum_{e<E} g(theta_e), the full-batch gradients at
the start of each epoch. So the relative error of either prediction shrinks linearly with lr: a
log-log plot of error against lr has slope 1. Under `gd` the first prediction is exact by
construction, and under AdamW it does not apply at all; this record is the real test.

For each task and learning rate, the record runs E epochs of SGD (float64, the order of epoch 0
every epoch, full batches only) from theta0 and compares tau_e = theta_e - theta0 with
- "sum_of_epoch_gradients": -lr * K * sum_{e'<e} g(theta_e'), the theorem's multi-epoch form;
- "epochs_times_g0":         -lr * K * e * g0, the first gradient alone.
At e = 1 both are -lr * K * g0.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ..core.split import Split
from ..data.splits import LazySplit
from ..models.clip import set_flat
from .alignment import cosine, norm
from .training import Objective, TrainConfig, finetune, full_batch_gradient

PREDICTIONS = ("sum_of_epoch_gradients", "epochs_times_g0")


def theory_record(encoder, theta0: torch.Tensor, objective: Objective, split: Split | LazySplit, task: str,
                  task_index: int, lrs: list[float], epochs: int, batch_size: int, seed: int = 0) -> pd.DataFrame:
    """One row per (lr, epoch, prediction): relative error |tau_e - pred| / |pred| and cos(tau_e, pred).

    `encoder` and `objective` must be float64 (see training.prepare with an 'sgd' config); the split
    is cut to a whole number of batches so that K = N / B holds exactly."""
    if epochs < 1 or not lrs:
        raise ValueError("a theory record needs at least one epoch and one learning rate")
    n = len(split) // batch_size * batch_size
    if n == 0:
        raise ValueError(f"{task}: {len(split)} training samples are fewer than one batch of {batch_size}")
    split = split.take(n, seed) if n < len(split) else split
    steps = n // batch_size
    theta0 = theta0.double()
    set_flat(encoder, theta0)
    g0 = full_batch_gradient(encoder, objective, split, batch_size).double()
    rows = []
    for lr in lrs:
        cfg = TrainConfig(optimizer="sgd", lr=lr, batch_size=batch_size, epochs=1, weight_decay=0.0, grad_clip=0.0,
                          seed=seed)
        set_flat(encoder, theta0)
        gradient_sum = torch.zeros_like(theta0)
        for epoch in range(1, epochs + 1):
            gradient_sum += g0 if epoch == 1 else full_batch_gradient(encoder, objective, split, batch_size).double()
            tau = finetune(encoder, objective, split, cfg, task_index)[0].double() - theta0
            for prediction, direction in zip(PREDICTIONS, (gradient_sum, epoch * g0)):
                predicted = -lr * steps * direction
                rows.append({"task": task, "lr": lr, "epoch": epoch, "prediction": prediction,
                             "rel_error": norm(tau - predicted) / norm(predicted), "cosine": cosine(tau, predicted),
                             "norm_tau": norm(tau)})
    return pd.DataFrame(rows)


def error_slopes(table: pd.DataFrame) -> pd.DataFrame:
    """Least-squares slope of log(rel_error) against log(lr), per task, epoch and prediction
    (the theorem predicts 1)."""
    rows = []
    for (task, epoch, prediction), group in table.groupby(["task", "epoch", "prediction"], sort=False):
        group = group[group["rel_error"] > 0]
        slope = (float(np.polyfit(np.log(group["lr"]), np.log(group["rel_error"]), 1)[0])
                 if group["lr"].nunique() >= 2 else math.nan)
        rows.append({"task": task, "epoch": epoch, "prediction": prediction, "slope": slope})
    return pd.DataFrame(rows)
