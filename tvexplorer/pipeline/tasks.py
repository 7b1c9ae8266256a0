"""The work of one piece of a build or an import, the same whether the serial loop of
pipeline/build.py runs it or a Ray worker (pipeline/distributed.py) does: it computes and returns,
and never writes."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from ..core.layout import Layout
from ..data.splits import TaskData
from ..models.checkpoints import check_against, read_image_encoder
from ..models.clip import set_flat
from ..science.alignment import trajectory_table
from ..science.training import Objective, TrainConfig, finetune, finetune_jointly, full_batch_gradient


def train_task(encoder, layout: Layout, theta0: torch.Tensor, objective: Objective, task: TaskData, index: int,
               cfg: TrainConfig, dtype: torch.dtype,
               on_step: Callable[[int], None] | None = None) -> tuple[dict[str, torch.Tensor], pd.DataFrame]:
    """From theta0: g0, then cfg.epochs of fine-tuning. The stored vectors (tau, tau1, g0 in
    `dtype`) and the task's trajectory table. `on_step(n)`: n more optimizer or gradient steps done."""
    set_flat(encoder, theta0)
    g0 = full_batch_gradient(encoder, objective, task.train, cfg.batch_size)
    if on_step:
        on_step(-(-len(task.train) // cfg.batch_size))
    thetas = finetune(encoder, objective, task.train, cfg, index, on_step=on_step and (lambda: on_step(1)))
    start = theta0.to(thetas[0].dtype)
    vectors = {"tau": thetas[-1] - start, "tau1": thetas[0] - start, "g0": g0}
    return {k: v.to(dtype) for k, v in vectors.items()}, trajectory_table(task.name, layout, theta0, thetas, g0)


def train_jointly(encoder, theta0: torch.Tensor, objectives: dict[str, Objective], data: list[TaskData],
                  cfg: TrainConfig, dtype: torch.dtype, on_step: Callable[[], None] | None = None) -> torch.Tensor:
    """The multi-task baseline's delta (theta - theta0, in `dtype`): every task's data jointly."""
    set_flat(encoder, theta0)
    theta = finetune_jointly(encoder, objectives, {d.name: d.train for d in data}, cfg, on_step=on_step)
    return (theta - theta0.to(theta.dtype)).to(dtype)


def checkpoint_tau(path: Path, base: dict[str, torch.Tensor], layout: Layout, theta0: torch.Tensor, model: str,
                   dtype: torch.dtype) -> torch.Tensor:
    """tau = finetuned - theta0 (in `dtype`) from one published fine-tuned image encoder, checked
    against the model's layout; `base` (theta0 as named tensors) fills what a Hugging Face file lacks."""
    params = read_image_encoder(path, base=base)
    check_against(params, dict(zip(layout.names, layout.shapes)), model)
    return (layout.flatten(params, dtype=torch.float32) - theta0).to(dtype)
