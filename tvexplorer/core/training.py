"""The fine-tuning settings: what a build trained with, recorded in the cache's manifest ("training"),
and what ATM and the command line train with."""
from __future__ import annotations

from dataclasses import asdict, dataclass

OPTIMIZERS = ("adamw", "gd", "sgd")
FLOAT64_OPTIMIZERS = ("gd", "sgd")  # plain steps, tiny next to the weights: kept in float64
PRECISIONS = ("float32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Defaults are ATM's for real CLIP (AdamW lr 1e-5, weight decay 0.1, batch 128, clipping);
    `optimizer="gd"` is plain full-batch gradient descent: one epoch is one step of -lr * g.
    `optimizer="sgd"` is plain mini-batch SGD (constant lr; no momentum, weight decay or clipping;
    the same batch order every epoch, and only full batches), the setting of paper B's theorem.
    `precision="bf16"` runs fine-tuning's forward pass under bfloat16 autocast (weights, optimizer
    state and the gradient record g0 stay float32)."""
    optimizer: str = "adamw"
    lr: float = 1e-5
    weight_decay: float = 0.1
    batch_size: int = 128
    epochs: int = 10
    grad_clip: float = 10.0
    seed: int = 0
    precision: str = "float32"

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.precision == "bf16" and self.optimizer in FLOAT64_OPTIMIZERS:
            raise ValueError(f"plain {self.optimizer} runs in float64 so that no step is rounded away; use --precision float32")

    def to_json(self) -> dict:
        return asdict(self)
