"""Fine-tuning the image encoder against a frozen head, and the exact full-batch gradient at theta0.

Both use the same loss: mean cross-entropy of `logit_scale * normalize(encoder(x)) @ head` over a
task's training split, with no augmentation. The gradient is taken in eval mode and fine-tuning
runs in train mode; open_clip's ViTs have no dropout or batch norm by default, so the two modes
compute the same function and g0 is the gradient of exactly the loss that training descends.

Flat vectors follow `encoder.parameters()` order, which is the order of the cache's layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.nn.utils import parameters_to_vector

from ..core.records import Encoder
from ..core.split import Split, seeded_order
from ..core.training import FLOAT64_OPTIMIZERS, TrainConfig
from ..data.splits import LazySplit, to_input
from ..models.clip import get_flat, logits, set_flat

@dataclass
class Objective:
    """One task's training problem: a frozen head and the image normalisation of the encoder."""
    head: torch.Tensor
    logit_scale: float
    mean: list
    std: list

    def loss(self, encoder, images: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        device = self.head.device
        x = to_input(images.to(device), self.mean, self.std).to(self.head.dtype)
        return F.cross_entropy(logits(encoder, self.head, self.logit_scale, x), labels.to(device), reduction=reduction)


def training_dtype(cfg: TrainConfig) -> torch.dtype:
    """Plain GD and SGD run in float64: one step of -lr * g is tiny next to the weights, and float32
    weights would round much of it away; in float64 the identity tau1 = -lr * g0 holds to ~1e-10."""
    return torch.float64 if cfg.optimizer in FLOAT64_OPTIMIZERS else torch.float32


def prepare(encoder, heads: dict[str, torch.Tensor], logit_scale: float, encoder_info: Encoder, cfg: TrainConfig,
            device) -> dict[str, Objective]:
    """Move `encoder` to the device and dtype that training uses; one objective per task, its head
    in the same dtype."""
    dtype = training_dtype(cfg)
    encoder.to(device, dtype)
    return {t: Objective(h.to(device, dtype), logit_scale, encoder_info.mean, encoder_info.std) for t, h in heads.items()}


def steps_per_epoch(n: int, cfg: TrainConfig) -> int:
    if cfg.optimizer == "gd":
        return 1
    return n // cfg.batch_size if cfg.optimizer == "sgd" else -(-n // cfg.batch_size)


def default_precision(device: torch.device) -> str:
    """Mixed precision where it pays and is safe: bfloat16 autocast on a GPU, float32 elsewhere."""
    return "bf16" if torch.device(device).type == "cuda" else "float32"


def shuffle_seed(seed: int, task_index: int, epoch: int) -> int:
    """Data order of one epoch; ATM round k with a 1-epoch budget sees the order of build epoch k."""
    return (seed * 1_000_003 + task_index) * 10_007 + epoch


def full_batch_gradient(encoder, objective: Objective, split: Split | LazySplit, batch_size: int) -> torch.Tensor:
    """g = grad of the mean training loss, accumulated exactly over the whole split (flat, CPU)."""
    encoder.eval()
    encoder.zero_grad(set_to_none=True)
    for images, labels in split.batches(batch_size):
        (objective.loss(encoder, images, labels, reduction="sum") / len(split)).backward()
    grad = parameters_to_vector(p.grad for p in encoder.parameters()).detach().cpu()
    encoder.zero_grad(set_to_none=True)
    return grad


def _sgd_epoch(encoder, objective: Objective, split: Split | LazySplit, cfg: TrainConfig, task_index: int,
               on_step: Callable[[], None] | None) -> None:
    """One epoch of plain SGD: theta -= lr * (mean gradient of the batch), over full batches only,
    in the order of epoch 0 every time (the theorem's fixed order and equal batch sizes)."""
    if len(split) < cfg.batch_size:
        raise ValueError(f"sgd needs at least one full batch: {len(split)} training samples, batch size {cfg.batch_size}")
    params = [p for p in encoder.parameters() if p.requires_grad]
    encoder.train()
    for images, labels in split.batches(cfg.batch_size, shuffle_seed(cfg.seed, task_index, 0)):
        if len(labels) < cfg.batch_size:  # the remainder: every step averages over equally many samples
            break
        grads = torch.autograd.grad(objective.loss(encoder, images, labels), params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(cfg.lr * g)
        if on_step:
            on_step()
    encoder.eval()


def finetune(encoder, objective: Objective, split: Split | LazySplit, cfg: TrainConfig, task_index: int,
             first_epoch: int = 0, epochs: int | None = None,
             on_step: Callable[[], None] | None = None) -> list[torch.Tensor]:
    """Train `encoder` in place from its current weights with a fresh optimizer; returns the flat
    parameters after each epoch. `first_epoch` offsets the data order (ATM's later rounds)."""
    params = [p for p in encoder.parameters() if p.requires_grad]
    snapshots = []
    if cfg.optimizer in FLOAT64_OPTIMIZERS:
        for _ in range(epochs or cfg.epochs):
            if cfg.optimizer == "sgd":
                _sgd_epoch(encoder, objective, split, cfg, task_index, on_step)
            else:
                grad = full_batch_gradient(encoder, objective, split, cfg.batch_size)
                set_flat(encoder, get_flat(encoder) - cfg.lr * grad)
                if on_step:
                    on_step()
            snapshots.append(get_flat(encoder))
        return snapshots
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    for epoch in range(first_epoch, first_epoch + (epochs or cfg.epochs)):
        encoder.train()
        for images, labels in split.batches(cfg.batch_size, shuffle_seed(cfg.seed, task_index, epoch)):
            _step(encoder, optimizer, params, objective.loss, (images, labels), cfg)
            if on_step:
                on_step()
        snapshots.append(get_flat(encoder))
    encoder.eval()
    return snapshots


def batch_stream(split: Split | LazySplit, cfg: TrainConfig, task_index: int, first_step: int) -> Iterator[tuple]:
    """Mini-batches in the data order of fine-tuning's epochs (epoch e shuffled by shuffle_seed(seed,
    task, e)), from global step `first_step` on, without end: ATM's rounds continue the build's order."""
    epoch, skip = divmod(first_step, steps_per_epoch(len(split), cfg))
    while True:
        order = seeded_order(len(split), shuffle_seed(cfg.seed, task_index, epoch))
        yield from split.subset(order[skip * cfg.batch_size:]).batches(cfg.batch_size)
        epoch, skip = epoch + 1, 0


def tune_steps(encoder, objective: Objective, split: Split | LazySplit, cfg: TrainConfig, task_index: int,
               first_step: int, steps: int, optimizer: str = "adamw", lr: float | None = None,
               on_step: Callable[[], None] | None = None) -> torch.Tensor:
    """`steps` optimizer steps from the encoder's current weights with a fresh optimizer (AdamW with the
    config's weight decay, or plain SGD), in the build's data order from `first_step`; clipping as in
    fine-tuning. Returns the flat parameters at the end. One epoch of AdamW from step e * steps_per_epoch
    is exactly `finetune`'s epoch e."""
    params = [p for p in encoder.parameters() if p.requires_grad]
    lr = cfg.lr if lr is None else lr
    opt = (torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay) if optimizer == "adamw"
           else torch.optim.SGD(params, lr=lr))
    encoder.train()
    for _, batch in zip(range(steps), batch_stream(split, cfg, task_index, first_step)):
        _step(encoder, opt, params, objective.loss, batch, cfg)
        if on_step:
            on_step()
    encoder.eval()
    return get_flat(encoder)


@torch.no_grad()
def mean_loss(encoder, objective: Objective, split: Split | LazySplit, batch_size: int) -> float:
    """Mean cross-entropy of the encoder over the whole split (eval mode)."""
    encoder.eval()
    total = sum(objective.loss(encoder, images, labels, reduction="sum").item() for images, labels in split.batches(batch_size))
    return total / len(split)


def _step(encoder, optimizer, params, loss_fn, batch, cfg: TrainConfig) -> None:
    optimizer.zero_grad(set_to_none=True)
    device = params[0].device
    with torch.autocast(device.type, torch.bfloat16, enabled=cfg.precision == "bf16"):
        loss = loss_fn(encoder, *batch)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    optimizer.step()


def check_joint_optimizer(cfg: TrainConfig) -> None:
    """The multi-task baseline mirrors AdamW fine-tuning; say so before any training starts."""
    if cfg.optimizer != "adamw":
        raise ValueError(f"the multi-task baseline is defined for AdamW fine-tuning, not {cfg.optimizer!r}; "
                         "drop --multitask or use --optimizer adamw")


def finetune_jointly(encoder, objectives: dict[str, Objective], splits: dict[str, Split | LazySplit],
                     cfg: TrainConfig, on_step: Callable[[], None] | None = None) -> torch.Tensor:
    """The multi-task baseline: one AdamW run on all tasks' training sets at once, as many steps as
    the individual fine-tunes together, each sample scored with its own task's frozen head.
    Returns the flat parameters at the end."""
    check_joint_optimizer(cfg)
    tasks = list(splits)
    owner = torch.cat([torch.full((len(splits[t]),), i) for i, t in enumerate(tasks)])  # pooled sample -> task
    position = torch.cat([torch.arange(len(splits[t])) for t in tasks])                # -> index in its split
    steps = cfg.epochs * sum(-(-len(splits[t]) // cfg.batch_size) for t in tasks)

    def loss(encoder, batch):  # the batch's mean loss, each task's samples through its own head
        total = 0.0
        for i in owner[batch].unique().tolist():
            images, labels = next(splits[tasks[i]].subset(position[batch][owner[batch] == i]).batches(len(batch)))
            total = total + objectives[tasks[i]].loss(encoder, images, labels, reduction="sum")
        return total / len(batch)

    params = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    encoder.train()
    generator = torch.Generator().manual_seed(cfg.seed)
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < cfg.batch_size:  # a new pass over the pool when the current one runs short
            order = torch.cat([order, torch.randperm(len(owner), generator=generator)])
        idx, order = order[:cfg.batch_size], order[cfg.batch_size:]
        _step(encoder, optimizer, params, loss, (idx,), cfg)
        if on_step:
            on_step()
    encoder.eval()
    return get_flat(encoder)
