"""The parts of the manifest that a build writes, as frozen records: each is read from its JSON once
(`from_json`, through core.fields, so a bad field is a one-line CacheError that names it) and written
back by `to_json`. What later writers add is core/additions.py; the whole manifest, and what each part
means, core/manifest.py."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

from .errors import CacheError
from .fields import Fields, bad, each, flag, number, numbers, obj, optional, text, texts, whole

# Metric keys that hold one accuracy per task; merges whose best validation scaling a build records;
# and every metric that has a mean over tasks, stored beside it under average_key(metric).
PER_TASK_METRICS = ("zero_shot", "linear_probe", "one_epoch", "finetuned", "multitask")
TUNED_METHODS = ("ties", "tsv", "iso_c")
AVERAGED_METRICS = (*PER_TASK_METRICS, "task_arithmetic", "task_arithmetic_one_epoch", *TUNED_METHODS)


def average_key(metric: str) -> str:
    """Where a metric's mean over tasks is stored in "metrics"."""
    return f"{metric}_average"


def mean(accuracy: Mapping[str, float]) -> float:
    return sum(accuracy.values()) / len(accuracy)


@dataclass(frozen=True)
class Encoder:
    """The image encoder as models.clip rebuilds it: open_clip's vision config (which open_clip reads,
    so it stays its dict), the output width, the activation actually built, and the input normalisation."""
    embed_dim: int
    vision_cfg: dict
    quick_gelu: bool
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_json(cls, value, where: str = "model.encoder") -> Encoder:
        f = Fields(value, where)
        out = cls(f.get("embed_dim", whole), f.get("vision_cfg", obj), f.get("quick_gelu", flag),
                  f.get("image_size", whole), f.get("mean", each(number)), f.get("std", each(number)))
        f.done()
        return out

    def to_json(self) -> dict:
        return {"embed_dim": self.embed_dim, "vision_cfg": self.vision_cfg, "quick_gelu": self.quick_gelu,
                "image_size": self.image_size, "mean": list(self.mean), "std": list(self.std)}

    @property
    def is_open_clip_vit(self) -> bool:
        """open_clip's own ViT (a ResNet tower's `layers` is a list, a timm tower names its model)."""
        return isinstance(self.vision_cfg.get("layers"), int) and not self.vision_cfg.get("timm_model_name")


@dataclass(frozen=True)
class ModelRecord:
    """The open_clip model name and pretrained tag the cache was built from, and its image encoder."""
    name: str
    pretrained: str | None
    encoder: Encoder

    @classmethod
    def from_json(cls, value) -> ModelRecord:
        f = Fields(value, "model")
        out = cls(f.get("name", text), f.get("pretrained", optional(text)), f.get("encoder", Encoder.from_json))
        f.done()
        return out

    def to_json(self) -> dict:
        return {"name": self.name, "pretrained": self.pretrained, "encoder": self.encoder.to_json()}


@dataclass(frozen=True)
class SplitSizes:
    """How many images each split of a task held."""
    train: int
    val: int
    test: int

    @classmethod
    def from_json(cls, value, where: str) -> SplitSizes:
        f = Fields(value, where)
        out = cls(f.get("train", whole), f.get("val", whole), f.get("test", whole))
        f.done()
        return out

    def to_json(self) -> dict:
        return {"train": self.train, "val": self.val, "test": self.test}


@dataclass(frozen=True)
class TaskRecord:
    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    data: dict  # the data source's spec, enough to load the task again (data.sources.load_task)
    sizes: SplitSizes

    @classmethod
    def from_json(cls, value, where: str) -> TaskRecord:
        f = Fields(value, where)
        out = cls(f.get("name", text), f.get("classnames", texts), f.get("templates", texts), f.get("data", obj),
                  f.get("sizes", SplitSizes.from_json))
        f.done()
        if not out.name:
            raise bad(f.path("name"), "empty")
        return out

    def to_json(self) -> dict:
        return {"name": self.name, "classnames": list(self.classnames), "templates": list(self.templates),
                "data": self.data, "sizes": self.sizes.to_json()}


@dataclass(frozen=True)
class FileEntry:
    """A listed file's size in bytes and its sha256."""
    size: int
    sha256: str

    @classmethod
    def from_json(cls, value, where: str) -> FileEntry:
        f = Fields(value, where)
        out = cls(f.get("size", whole), f.get("sha256", text))
        f.done()
        return out

    def to_json(self) -> dict:
        return {"size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class TunedMerge:
    """A merge at its scaling chosen on validation from the build's grid: test accuracy per task, its
    mean, the validation mean at every scaling tried, and the method's parameters (None: its defaults
    when the record was made, as builds before the results table recorded them)."""
    best_scaling: float
    accuracy: dict[str, float]
    average: float
    val_average_by_scaling: dict[str, float]
    params: dict | None = None

    @classmethod
    def from_json(cls, value, where: str) -> TunedMerge:
        f = Fields(value, where)
        out = cls(f.get("best_scaling", number), f.get("accuracy", numbers), f.get("average", number),
                  f.get("val_average_by_scaling", numbers), f.get("params", obj, None))
        f.done()
        return out

    def to_json(self) -> dict:
        out = {"best_scaling": self.best_scaling, "accuracy": self.accuracy, "average": self.average,
               "val_average_by_scaling": self.val_average_by_scaling}
        return out if self.params is None else {**out, "params": self.params}


@dataclass(frozen=True)
class Metrics:
    """Accuracies on the test subsets: per task for each of PER_TASK_METRICS that was measured, and
    per merge method at its best validation scaling. Means over tasks are derived (and written beside
    each metric, under average_key, for readers of the JSON)."""
    zero_shot: dict[str, float] | None = None
    linear_probe: dict[str, float] | None = None
    one_epoch: dict[str, float] | None = None
    finetuned: dict[str, float] | None = None
    multitask: dict[str, float] | None = None
    merges: dict[str, TunedMerge] = field(default_factory=dict)

    @classmethod
    def from_json(cls, value) -> Metrics:
        f = Fields(value, "metrics")
        per_task = {m: f.get(m, numbers) for m in PER_TASK_METRICS if f.has(m)}
        for metric in [k for k in f.data if k.endswith("_average") and k.removesuffix("_average") in f.data]:
            f.get(metric, number)  # derived: written again from what it is the mean of
        merges = {name: TunedMerge.from_json(v, f.path(name)) for name, v in f.rest().items()}
        return cls(**per_task, merges=merges)

    def to_json(self) -> dict:
        out = {}
        for metric, values in self.per_task().items():
            out |= {metric: values, average_key(metric): mean(values)}
        for name, merge in self.merges.items():
            out |= {name: merge.to_json(), average_key(name): merge.average}
        return out

    def per_task(self) -> dict[str, dict[str, float]]:
        """Each of PER_TASK_METRICS that was measured: {metric: {task: accuracy}}."""
        return {m: getattr(self, m) for m in PER_TASK_METRICS if getattr(self, m) is not None}

    def averages(self) -> dict[str, float | None]:
        """The mean over tasks of each of AVERAGED_METRICS (None where it was not measured)."""
        return {metric: self.average(metric) for metric in AVERAGED_METRICS}

    def average(self, metric: str) -> float | None:
        """The mean over tasks of one of AVERAGED_METRICS or a recorded merge (None where not measured)."""
        per_task = getattr(self, metric) if metric in PER_TASK_METRICS else None
        if per_task is not None:
            return mean(per_task)
        return self.merges[metric].average if metric in self.merges else None

    def best_scaling(self, name: str) -> float | None:
        """The scaling chosen on validation for a recorded merge, None where it is not recorded."""
        return self.merges[name].best_scaling if name in self.merges else None

    def merge(self, name: str) -> TunedMerge:
        if name not in self.merges:
            raise CacheError(f"this cache records no {name} merge at its best validation scaling; recorded: "
                             f"{', '.join(self.merges) or 'none'} (`python -m tvexplorer table CACHE` records them all)")
        return self.merges[name]

    def with_per_task(self, metric: str, accuracy: Mapping[str, float]) -> Metrics:
        if metric not in PER_TASK_METRICS:
            raise ValueError(f"{metric!r} is not one of the per-task metrics {', '.join(PER_TASK_METRICS)}")
        return replace(self, **{metric: dict(accuracy)})

    def with_merge(self, name: str, merge: TunedMerge) -> Metrics:
        return replace(self, merges={**self.merges, name: merge})

    def require_finetuned(self) -> dict[str, float]:
        """The fine-tuned accuracies that normalised accuracy divides by."""
        if self.finetuned is None:
            raise CacheError("this cache records no fine-tuned accuracies (metrics.finetuned), which normalised "
                             "accuracy needs; rebuild the cache")
        return self.finetuned
