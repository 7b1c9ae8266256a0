"""Real benchmarks from the Hugging Face hub through the `datasets` library: the copies FusionBench
evaluates on (hub_datasets.json), beside torchvision's formats and image folders (benchmarks.py).

`{"source": "hf", "dataset": "MNIST", "image_size": 224, "root": null}` loads the registered hub
dataset (parquet, or any format `datasets` reads) from the hub, or from a local copy of its repository
at root/<repo> when a root is given. Prompt templates come from datasets.json, class names from
hub_datasets.json where the hub's label order or names differ from datasets.json's. The training
pool is the hub's training split, validation 10 % of it, the test split the hub's test split: the
same rule and the same seeded evaluation subsets as every other source. Images are decoded lazily,
batch by batch.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch
from torch.utils.data import Dataset

from ..core.errors import described
from .benchmarks import DATASETS, ClipPreprocess, DatasetNotFound, dataset_names
from .splits import LazySplit, TaskData, split_validation

HUB_DATASETS: dict[str, dict] = json.loads(Path(__file__).with_name("hub_datasets.json").read_text())["datasets"]


class HubImages(Dataset):
    """One split of a `datasets.Dataset` as (uint8 [H, W, 3], label) items, decoded on access."""

    def __init__(self, table, image: str, label: str, preprocess: ClipPreprocess):
        self.table, self.image, self.label, self.preprocess = table, image, label, preprocess

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int):
        row = self.table[int(i)]
        return self.preprocess(row[self.image]), int(row[self.label])  # int(): PCAM's labels are booleans


def hub_specs(names_or_suite: str | Iterable[str], root, image_size: int) -> list[dict]:
    """One "hf" data spec per dataset, in the suite's or the given order; root None means the hub."""
    names = dataset_names(names_or_suite)
    return [{"source": "hf", "dataset": name, "root": None if root is None else str(root), "image_size": int(image_size)}
            for name in names]


def load_hub(spec: dict) -> TaskData:
    missing = [k for k in ("dataset", "image_size") if k not in spec]
    if missing:
        raise ValueError(f"hf task spec lacks {', '.join(map(repr, missing))}; it needs 'dataset' and 'image_size'")
    [name] = dataset_names([spec["dataset"]])
    entry = HUB_DATASETS[name]
    columns = {"image": "image", "label": "label", **entry.get("columns", {})}
    splits = {"train": "train", "test": "test", **entry.get("splits", {})}
    preprocess = ClipPreprocess(int(spec["image_size"]))
    tables = {split: _load_split(name, entry, spec.get("root"), hub_split, columns) for split, hub_split in splits.items()}
    classnames = _classnames(name, entry, tables["test"].features[columns["label"]])
    pool, test = (LazySplit(HubImages(tables[s], columns["image"], columns["label"], preprocess), torch.arange(len(tables[s])))
                  for s in ("train", "test"))
    train, val = split_validation(pool)
    return TaskData(name, tuple(classnames), tuple(DATASETS[name]["templates"]), train, val, test)


def _load_split(name: str, entry: dict, root, split: str, columns: dict):
    import datasets
    where = entry["repo"] if root is None else str(Path(root).expanduser() / entry["repo"])
    if root is not None and not Path(where).is_dir():
        raise DatasetNotFound(f"{name}: no local copy of the hub dataset {entry['repo']} at {where}; download it there "
                              f"(huggingface-cli download {entry['repo']} --repo-type dataset --local-dir {where}), "
                              "or leave out --data-root to load it from the hub")
    try:
        table = datasets.load_dataset(where, entry.get("config"), split=split)
    except Exception as e:  # network, unknown repository or split, unreadable files: all mean no usable data
        raise DatasetNotFound(f"{name}: could not load split {split!r} of {where} with the datasets library ({described(e)})") from None
    absent = [c for c in columns.values() if c not in table.column_names]
    if absent:
        raise DatasetNotFound(f"{name}: {where} split {split!r} has no column {absent[0]!r} (columns: {', '.join(table.column_names)})")
    return table


def _classnames(name: str, entry: dict, label_feature) -> list[str]:
    own = getattr(label_feature, "names", None)  # a ClassLabel's names, in label order
    names = entry.get("classnames") or DATASETS[name].get("classnames") or [c.replace("_", " ") for c in own or []]
    if not names:
        raise ValueError(f"{name}: the hub dataset's labels have no class names and hub_datasets.json gives none; add them there")
    if own is not None and len(own) != len(names):
        raise ValueError(f"{name}: the hub dataset has {len(own)} classes but {len(names)} class names are given; "
                         "check the repository or the class names in hub_datasets.json")
    return list(names)
