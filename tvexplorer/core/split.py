"""A split held in memory: uint8 images [N, H, W, 3] and their labels, as caches store evaluation
subsets and as data sources load small tasks; and the seeded orders that every split type (this one
and data.splits.LazySplit) batches and subsets by, so the same items give the same results in either."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch


def seeded_order(n: int, seed: int | None) -> torch.Tensor:
    """0..n-1, or a permutation of it drawn from a generator seeded with `seed`."""
    if seed is None:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def seeded_subset(n_total: int, n: int | None, seed: int) -> torch.Tensor:
    """Positions of a seeded random subset of at most n of n_total items (all when n is None), in
    ascending order, so that a subset holding everything is the split itself."""
    if n is not None and n < 1:
        raise ValueError(f"a subset needs at least one sample, got n={n}")
    return seeded_order(n_total, seed)[:n].sort().values


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 [N, H, W, 3]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, shuffle_seed: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = seeded_order(len(self), shuffle_seed)
        for start in range(0, len(self), batch_size):
            idx = order[start:start + batch_size]
            yield self.images[idx], self.labels[idx]

    def subset(self, positions: torch.Tensor) -> Split:
        return Split(self.images[positions], self.labels[positions])

    def take(self, n: int | None = None, seed: int = 0) -> Split:
        """A seeded random subset of at most n samples (all when n is None)."""
        return self.subset(seeded_subset(len(self), n, seed))
