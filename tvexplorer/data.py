"""Task data: where each task's images come from, its train/validation/test splits, and batching.

Images travel as uint8 [N, H, W, 3] tensors at the model's resolution and are normalised per
batch, so that stored evaluation subsets stay small and exact. No augmentation anywhere: the
gradient record and the full-batch check need the training loss to be one fixed function.

Two split types share one interface (len, batches, subset, take): `Split` holds its images in
memory; `LazySplit` decodes them batch by batch from a dataset, for real benchmarks that do not fit
in memory. Both order their batches, subsets and samples by the same seeded permutations, so the
same items give the same results whichever type holds them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Subset

VAL_FRACTION, VAL_SEED, VAL_MAX = 0.1, 0, 5000
TAKE_BATCH = 256  # images decoded at a time when a lazy split is loaded into memory


def _order(n: int, seed: int | None) -> torch.Tensor:
    """0..n-1, or a permutation of it drawn from a generator seeded with `seed`."""
    if seed is None:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _sample(n_total: int, n: int | None, seed: int) -> torch.Tensor:
    """Positions of a seeded random subset of at most n of n_total items (all when n is None), in
    ascending order, so that a subset holding everything is the split itself."""
    if n is not None and n < 1:
        raise ValueError(f"a subset needs at least one sample, got n={n}")
    return _order(n_total, seed)[:n].sort().values


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 [N, H, W, 3]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, shuffle_seed: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = _order(len(self), shuffle_seed)
        for start in range(0, len(self), batch_size):
            idx = order[start:start + batch_size]
            yield self.images[idx], self.labels[idx]

    def subset(self, positions: torch.Tensor) -> Split:
        return Split(self.images[positions], self.labels[positions])

    def take(self, n: int | None = None, seed: int = 0) -> Split:
        """A seeded random subset of at most n samples (all when n is None)."""
        return self.subset(_sample(len(self), n, seed))


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
        items = Subset(self.dataset, self.indices[_order(len(self), shuffle_seed)].tolist())
        for images, labels in DataLoader(items, batch_size=batch_size, num_workers=self.workers):
            yield images, labels

    def subset(self, positions: torch.Tensor) -> LazySplit:
        return LazySplit(self.dataset, self.indices[positions], self.workers)

    def take(self, n: int | None = None, seed: int = 0) -> Split:
        """A seeded random subset of at most n samples (all when n is None), decoded into memory."""
        images, labels = zip(*self.subset(_sample(len(self), n, seed)).batches(TAKE_BATCH))
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
    order = _order(len(pool), VAL_SEED)
    return pool.subset(order[n_val:]), pool.subset(order[:n_val])


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


def _benchmark(spec: dict) -> TaskData:
    from .datasets import load_benchmark  # torchvision and the registry load only when real data is asked for
    return load_benchmark(spec)


def _folder(spec: dict) -> TaskData:
    from .datasets import load_folder
    return load_folder(spec)


# Data sources by the name stored in a task's data spec (see tvexplorer/datasets.py for the real ones).
SOURCES: dict[str, Callable[[dict], TaskData]] = {"demo": _demo, "benchmark": _benchmark, "folder": _folder}


def load_task(spec: dict) -> TaskData:
    source = spec.get("source")
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r} in task spec; known sources: {', '.join(SOURCES)}")
    return SOURCES[source](spec)
