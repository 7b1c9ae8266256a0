"""Task data: its train/validation/test splits, and batching (sources.py says where the images come from).

Images travel as uint8 [N, H, W, 3] tensors at the model's resolution and are normalised per
batch, so that stored evaluation subsets stay small and exact. No augmentation anywhere: the
gradient record and the full-batch check need the training loss to be one fixed function.

Two split types share one interface (len, batches, subset, take): `Split` (core/split.py) holds its
images in memory; `LazySplit` decodes them batch by batch from a dataset, for real benchmarks that
do not fit in memory. Both order their batches, subsets and samples by the same seeded permutations, so the
same items give the same results whichever type holds them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..core.split import Split, seeded_order, seeded_subset

VAL_FRACTION, VAL_SEED, VAL_MAX = 0.1, 0, 5000
TAKE_BATCH = 256  # images decoded at a time when a lazy split is loaded into memory


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


@dataclass(frozen=True, eq=False)
class LazySplit:
    """The items `indices` of `dataset`, decoded when batched. `dataset[i]` is (uint8 [H, W, 3], label)."""
    dataset: Dataset
    indices: torch.Tensor  # int64 [N]
    workers: int = field(default_factory=default_workers)  # DataLoader processes; batches keep their order

    def __len__(self) -> int:
        return len(self.indices)

    def batches(self, batch_size: int, shuffle_seed: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        items = Subset(self.dataset, self.indices[seeded_order(len(self), shuffle_seed)].tolist())
        for images, labels in DataLoader(items, batch_size=batch_size, num_workers=self.workers):
            yield images, labels

    def subset(self, positions: torch.Tensor) -> LazySplit:
        return LazySplit(self.dataset, self.indices[positions], self.workers)

    def take(self, n: int | None = None, seed: int = 0) -> Split:
        """A seeded random subset of at most n samples (all when n is None), decoded into memory."""
        images, labels = zip(*self.subset(seeded_subset(len(self), n, seed)).batches(TAKE_BATCH))
        return Split(torch.cat(images), torch.cat(labels))


@dataclass(frozen=True)
class TaskData:
    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    train: Split | LazySplit
    val: Split | LazySplit
    test: Split | LazySplit


def split_validation(pool: Split | LazySplit) -> tuple[Split | LazySplit, Split | LazySplit]:
    """(train, val): validation is 10% of the training pool, seed 0, at most 5000 samples."""
    n_val = min(VAL_MAX, max(1, round(VAL_FRACTION * len(pool))))
    order = seeded_order(len(pool), VAL_SEED)
    return pool.subset(order[n_val:]), pool.subset(order[:n_val])


def to_input(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW, as the image encoder expects."""
    x = images.permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
