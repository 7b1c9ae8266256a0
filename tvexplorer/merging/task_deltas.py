"""Task-conditioned merges (EMR, TALL masks) give each task its own merged delta. `TaskDeltas` holds
them as a mapping task -> delta that computes one delta when it is asked for, so that evaluating the
tasks one after the other never holds more than one per-task delta beside the method's shared state."""
from __future__ import annotations

from typing import Callable, Iterator, Mapping, Sequence

import torch

Tensor = torch.Tensor


class TaskDeltas(Mapping[str, Tensor]):
    """task name -> that task's merged delta, computed afresh on each lookup by delta_of(task index)."""

    def __init__(self, tasks: Sequence[str], delta_of: Callable[[int], Tensor]):
        self._index = {t: i for i, t in enumerate(tasks)}
        self._delta_of = delta_of

    def __getitem__(self, task: str):
        if task not in self._index:
            raise KeyError(f"no merged delta for task {task!r}; this merge has: {', '.join(self._index)}")
        return self._delta_of(self._index[task])

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def map(self, fn: Callable[[Tensor], object]) -> "TaskDeltas":
        """The same lazy mapping with fn applied to each delta as it is computed."""
        return TaskDeltas(list(self._index), lambda i: fn(self._delta_of(i)))
