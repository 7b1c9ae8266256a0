"""Where a task's images come from: the data source named in its stored data spec (the demo world,
a real benchmark through torchvision, a Hugging Face dataset, an image folder) loads it as TaskData."""
from __future__ import annotations

from typing import Callable

import torch

from ..core.split import Split
from .splits import TaskData, split_validation


def _demo(spec: dict) -> TaskData:
    from .world import TASKS
    task = TASKS[spec["task"]]

    def size(split, n):  # never more than a real data set holds, so no image is in two splits
        return min(n, task.available(split) or n)

    images, labels = task.sample("train", size("train", spec["n_train"]), seed=spec["seed"])
    train, val = split_validation(Split(torch.from_numpy(images), torch.from_numpy(labels)))
    images, labels = task.sample("test", size("test", spec["n_test"]), seed=spec["seed"])
    return TaskData(task.name, task.classnames, task.templates, train, val,
                    Split(torch.from_numpy(images), torch.from_numpy(labels)))


def _benchmark(spec: dict) -> TaskData:
    from .benchmarks import load_benchmark  # torchvision and the registry load only when real data is asked for
    return load_benchmark(spec)


def _folder(spec: dict) -> TaskData:
    from .benchmarks import load_folder
    return load_folder(spec)


def _hub(spec: dict) -> TaskData:
    from .hubdata import load_hub  # the datasets library loads only when hub data is asked for
    return load_hub(spec)


# Data sources by the name stored in a task's data spec (benchmarks.py and hubdata.py for the real ones).
SOURCES: dict[str, Callable[[dict], TaskData]] = {"demo": _demo, "benchmark": _benchmark, "folder": _folder, "hf": _hub}


def load_task(spec: dict) -> TaskData:
    source = spec.get("source")
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r} in task spec; known sources: {', '.join(SOURCES)}")
    return SOURCES[source](spec)
