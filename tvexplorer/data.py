"""Task data: where each task's images come from, its train/validation/test splits, and batching.

Images travel as uint8 [N, H, W, 3] tensors at the model's resolution and are normalised per
batch, so that stored evaluation subsets stay small and exact. No augmentation anywhere: the
gradient record and the full-batch check need the training loss to be one fixed function.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

VAL_FRACTION, VAL_SEED, VAL_MAX = 0.1, 0, 5000


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 [N, H, W, 3]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, shuffle_seed: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.arange(len(self))
        if shuffle_seed is not None:
            order = torch.randperm(len(self), generator=torch.Generator().manual_seed(shuffle_seed))
        for start in range(0, len(self), batch_size):
            idx = order[start:start + batch_size]
            yield self.images[idx], self.labels[idx]


@dataclass(frozen=True)
class TaskData:
    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    train: Split
    val: Split
    test: Split


def split_validation(pool: Split) -> tuple[Split, Split]:
    """(train, val): validation is 10% of the training pool, seed 0, at most 5000 samples."""
    n_val = min(VAL_MAX, max(1, round(VAL_FRACTION * len(pool))))
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(VAL_SEED))
    val, train = order[:n_val], order[n_val:]
    return Split(pool.images[train], pool.labels[train]), Split(pool.images[val], pool.labels[val])


def to_input(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW, as the image encoder expects."""
    x = images.permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _demo(spec: dict) -> TaskData:
    from .demo.world import TASKS
    task = TASKS[spec["task"]]

    def size(split, n):  # never more than a real data set holds, so no image is in two splits
        return min(n, task.available(split) or n)

    images, labels = task.sample("train", size("train", spec["n_train"]), seed=spec["seed"])
    train, val = split_validation(Split(torch.from_numpy(images), torch.from_numpy(labels)))
    images, labels = task.sample("test", size("test", spec["n_test"]), seed=spec["seed"])
    return TaskData(task.name, task.classnames, task.templates, train, val,
                    Split(torch.from_numpy(images), torch.from_numpy(labels)))


# Data sources by the name stored in a task's data spec; real benchmarks register here too.
SOURCES: dict[str, Callable[[dict], TaskData]] = {"demo": _demo}


def load_task(spec: dict) -> TaskData:
    source = spec.get("source")
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r} in task spec; known sources: {', '.join(SOURCES)}")
    return SOURCES[source](spec)
