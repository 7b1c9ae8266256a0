"""Real CLIP benchmarks: the registry in datasets.json, CLIP's image preprocessing, and the two data
sources built on them.

- "benchmark": `{"source": "benchmark", "dataset": "MNIST", "root": "/data", "image_size": 224,
  "download": false}` loads a registered dataset (see `DATASETS`, `SUITES` and `benchmark_specs`).
- "folder": `{"source": "folder", "name": "MyTask", "root": "/data/mytask", "image_size": 224}` loads
  a user's images laid out as root/train/<class>/* and root/test/<class>/*. Optional keys: "train" and
  "test" (other sub-folders; both may name one folder when "split_files" divides it), "split_files"
  ({"train": file, "test": file} under root, listing the file names in each split, as RESISC45 does),
  "classnames" (default: the class folders' names) and "templates" (default: "a photo of a {}.").

The training pool is the official training split, validation 10 % of it (`splits.split_validation`),
the test split the official test split. Splits are lazy: images are decoded batch by batch.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torchvision.datasets
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import default_loader
from torchvision.transforms import functional as F, InterpolationMode

from ..core.errors import first_line
from .splits import LazySplit, TaskData, split_validation

_REGISTRY = json.loads(Path(__file__).with_name("datasets.json").read_text())
DATASETS: dict[str, dict] = _REGISTRY["datasets"]
SUITES: dict[str, list[str]] = _REGISTRY["suites"]
FOLDER_TEMPLATES = ["a photo of a {}."]


class DatasetNotFound(FileNotFoundError):
    """A dataset's files are missing or incomplete; the message says where they were looked for and how to get them."""


@dataclass(frozen=True)
class ClipPreprocess:
    """PIL image -> uint8 [size, size, 3], as CLIP prepares images: shorter side resized to `size`
    (bicubic), centre crop, RGB. Scaling and normalisation happen per batch (`splits.to_input`)."""
    size: int
    transpose: bool = False  # EMNIST stores its images transposed

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if self.transpose:
            image = image.transpose(Image.Transpose.TRANSPOSE)
        image = F.center_crop(F.resize(image, self.size, interpolation=InterpolationMode.BICUBIC), self.size)
        return torch.from_numpy(np.array(image.convert("RGB")))


class SUN397Partition(Dataset):
    """SUN397 restricted to one of its official partition files (e.g. Training_01.txt), in that
    file's order. torchvision's SUN397 has no splits and lists its files in file-system order."""

    def __init__(self, root, partition: str, transform):
        root = Path(root)
        class_paths = (root / "ClassName.txt").read_text().split()  # "/a/abbey", "/a/apartment_building/outdoor", ...
        index = {path: i for i, path in enumerate(class_paths)}
        self.samples = [(root / line.lstrip("/"), index[line.rsplit("/", 1)[0]])
                        for line in (root / partition).read_text().split()]
        # CLIP's names: the path without its initial-letter folder, sub-categories joined by a space
        self.classes = [path.split("/", 2)[2].replace("/", " ") for path in class_paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        return self.transform(default_loader(path)), label


def dataset_names(names_or_suite: str | Iterable[str]) -> list[str]:
    """Registered names from a suite ("8", "14", "20"), a comma-separated string or a list of names
    (any letter case)."""
    if isinstance(names_or_suite, str):
        if names_or_suite in SUITES:
            return list(SUITES[names_or_suite])
        names_or_suite = names_or_suite.split(",")
    known = {name.lower(): name for name in DATASETS}
    names = []
    for raw in names_or_suite:
        name = known.get(raw.strip().lower())
        if name is None:
            raise ValueError(f"unknown dataset {raw.strip()!r}; datasets: {', '.join(DATASETS)}; suites: {', '.join(SUITES)}")
        if name in names:
            raise ValueError(f"dataset {name} is named twice; each task must be distinct")
        names.append(name)
    return names


def benchmark_specs(names_or_suite: str | Iterable[str], root, image_size: int, download: bool = False) -> list[dict]:
    """One "benchmark" data spec per dataset, in the suite's or the given order."""
    return [{"source": "benchmark", "dataset": name, "root": str(root), "image_size": int(image_size),
             "download": bool(download)} for name in dataset_names(names_or_suite)]


def load_benchmark(spec: dict) -> TaskData:
    _require(spec, ("dataset", "root", "image_size"))
    [name] = dataset_names([spec["dataset"]])
    return _load(name, DATASETS[name], Path(spec["root"]).expanduser(), spec["image_size"], spec.get("download", False))


def load_folder(spec: dict) -> TaskData:
    _require(spec, ("name", "root", "image_size"))
    train, test = spec.get("train", "train"), spec.get("test", "test")
    entry = {"class": "ImageFolder", "train": {"root": train}, "test": {"root": test}, "folder": ".",
             "templates": spec.get("templates", FOLDER_TEMPLATES),
             "get": f"put each split's images in one sub-folder per class: {{root}}/{train}/<class>/* and {{root}}/{test}/<class>/*",
             **{key: spec[key] for key in ("split_files", "classnames") if key in spec}}
    bad = [t for t in entry["templates"] if "{}" not in t]
    if bad:
        raise ValueError(f"template {bad[0]!r} of task {spec['name']} has no '{{}}' for the class name")
    return _load(spec["name"], entry, Path(spec["root"]).expanduser(), spec["image_size"], False)


def _require(spec: dict, keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in spec]
    if missing:
        raise ValueError(f"{spec.get('source')} task spec lacks {', '.join(map(repr, missing))}; it needs {', '.join(map(repr, keys))}")


def _load(name: str, entry: dict, root: Path, image_size: int, download: bool) -> TaskData:
    package = entry.get("requires")
    if package and importlib.util.find_spec(package) is None:
        raise ModuleNotFoundError(f"{name} needs the {package} package: pip install {package}")
    preprocess = ClipPreprocess(int(image_size), entry.get("transpose", False))
    pool, classnames = _split(name, entry, root, "train", preprocess, download)
    test, _ = _split(name, entry, root, "test", preprocess, download)
    train, val = split_validation(pool)
    return TaskData(name, tuple(classnames), tuple(entry["templates"]), train, val, test)


def _split(name: str, entry: dict, root: Path, split: str, preprocess, download: bool) -> tuple[LazySplit, list[str]]:
    kwargs = dict(entry[split])
    where = root / kwargs.pop("root", "")
    cls = SUN397Partition if entry["class"] == "SUN397Partition" else getattr(torchvision.datasets, entry["class"])
    if entry.get("download"):
        kwargs["download"] = download
    try:
        dataset = cls(where, transform=preprocess, **kwargs)
        keep = _listed(dataset, root / entry["split_files"][split]) if "split_files" in entry else range(len(dataset))
    except (RuntimeError, OSError) as e:  # torchvision's "Dataset not found", missing files, unreadable folders
        raise DatasetNotFound(_missing(name, entry, root, download, e)) from e
    return LazySplit(dataset, torch.as_tensor(keep, dtype=torch.int64)), _classnames(name, entry, dataset)


def _listed(dataset, split_file: Path) -> list[int]:
    """Positions of the dataset's images whose file names the split file lists (one per line)."""
    listed = set(split_file.read_text().split())
    keep = [i for i, (path, _) in enumerate(dataset.samples) if Path(path).name in listed]
    if len(keep) != len(listed):
        raise FileNotFoundError(f"{len(listed) - len(keep)} images listed in {split_file} are missing")
    return keep


def _classnames(name: str, entry: dict, dataset) -> list[str]:
    own = getattr(dataset, "classes", None)
    names = entry.get("classnames") or [c.replace("_", " ") for c in own]
    if own is not None and len(own) != len(names):
        raise ValueError(f"{name}: the data has {len(own)} classes but {len(names)} class names are given; "
                         "check the data folder or the class names")
    return list(names)


def _missing(name: str, entry: dict, root: Path, download: bool, error: Exception) -> str:
    """One line: which data set, which folder, what is wrong with it when a file says so, how to get it."""
    # an OSError names the missing file; torchvision's RuntimeErrors only say "not found" and suggest its own flag
    problem = f" ({first_line(error)})" if isinstance(error, OSError) and str(error) else ""
    how = []
    if entry.get("download") and not download:
        how.append('pass download=True ("download": true in the task spec) to let torchvision fetch it')
    elif entry.get("download"):
        how.append("torchvision could not fetch it (see the error chained above)")
    if "get" in entry:
        how.append(entry["get"].format(root=root))
    return f"{name}: no usable data in {root / entry['folder']}{problem}; " + "; ".join(how)
