"""Where a task's images come from: the data source named in its stored data spec (the demo world,
a real benchmark through torchvision, a Hugging Face dataset, an image folder, or images kept in the
cache itself for a task added with `add-task`) loads it as TaskData."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..core.cache import Cache
from ..core.split import Split
from .splits import TaskData, split_validation


def _demo(spec: dict) -> TaskData:
    from .world import TASKS
    task = TASKS[spec["task"]]

    def size(split, n):  # never more than a real data set holds, so no image is in two splits
        return min(n, task.available(split) or n)

    def split(name: str, n: int) -> Split:
        images, labels = task.sample(name, size(name, n), seed=spec["seed"])
        return Split(resized(torch.from_numpy(images), spec.get("image_size")), torch.from_numpy(labels))

    train, val = split_validation(split("train", spec["n_train"]))
    return TaskData(task.name, task.classnames, task.templates, train, val, split("test", spec["n_test"]))


def _benchmark(spec: dict) -> TaskData:
    from .benchmarks import load_benchmark  # torchvision and the registry load only when real data is asked for
    return load_benchmark(spec)


def _folder(spec: dict) -> TaskData:
    from .benchmarks import load_folder
    return load_folder(spec)


def _stored(spec: dict) -> TaskData:
    """A task added to a cache (pipeline/addtask.py): its training pool and test split, at the model's
    resolution, in the cache's file spec["file"]; spec["root"] is the cache folder (see `task_spec`)."""
    from safetensors.torch import load_file
    if "root" not in spec:
        raise ValueError(f"task {spec['name']} keeps its images in its cache; load it with task_spec(cache, name)")
    t = load_file(str(Path(spec["root"]) / spec["file"]))
    train, val = split_validation(Split(t["train_images"], t["train_labels"]))
    return TaskData(spec["name"], tuple(spec["classnames"]), tuple(spec["templates"]), train, val,
                    Split(t["test_images"], t["test_labels"]))


def _hub(spec: dict) -> TaskData:
    from .hubdata import load_hub  # the datasets library loads only when hub data is asked for
    return load_hub(spec)


# Data sources by the name stored in a task's data spec (benchmarks.py and hubdata.py for the real ones).
STORED = "stored"  # images kept in the cache itself (add-task)
SOURCES: dict[str, Callable[[dict], TaskData]] = {"demo": _demo, "benchmark": _benchmark, "folder": _folder, "hf": _hub,
                                                  STORED: _stored}
# The spec key that holds the task's name, per source: what load_task(spec).name will be, known without loading.
NAME_KEYS = {"demo": "task", "benchmark": "dataset", "folder": "name", "hf": "dataset", STORED: "name"}


def task_name(spec: dict) -> str:
    return spec[NAME_KEYS[spec["source"]]]


def task_spec(cache: Cache, task: str) -> dict:
    """The data spec of one of the cache's tasks, ready for load_task."""
    return located(cache.manifest.task(task).data, cache.root)


def located(spec: dict, root: Path) -> dict:
    """A spec whose images the cache at `root` keeps is told where the cache is now (it may have been
    copied or moved since); any other spec as it is."""
    return {**spec, "root": str(root)} if spec.get("source") == STORED else spec


def load_task(spec: dict) -> TaskData:
    source = spec.get("source")
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r} in task spec; known sources: {', '.join(SOURCES)}")
    return SOURCES[source](spec)


def resized(images: torch.Tensor, size: int | None, chunk: int = 256) -> torch.Tensor:
    """uint8 [N, H, W, 3] square images at `size` x `size` (bicubic, as CLIP's preprocessing; None: unchanged),
    `chunk` images at a time so that no float copy of the whole split is made."""
    if size is None or size == images.shape[1]:
        return images
    out = torch.empty(len(images), size, size, 3, dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk].permute(0, 3, 1, 2).float()
        part = torch.nn.functional.interpolate(part, size=(size, size), mode="bicubic", align_corners=False)
        out[start:start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out
