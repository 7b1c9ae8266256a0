"""The parts of the manifest as frozen records: each is read from its JSON once (`from_json`, through
core.fields, so a bad field is a one-line CacheError that names it) and written back by `to_json`.
The whole manifest, and what each part means, is core/manifest.py."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

from .errors import CacheError
from .fields import Fields, bad, by_name, each, flag, number, numbers, obj, optional, text, texts, whole

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

    @classmethod
    def of(cls, value: Encoder | dict) -> Encoder:
        """The typed encoder; a dict is the manifest's JSON view, which science/atm.py still passes
        (until the lead converts it: issue 20)."""
        return value if isinstance(value, Encoder) else cls.from_json(value)

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
                             f"{', '.join(self.merges) or 'none'} (`python -m tvexplorer table CACHE` records every method)")
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


@dataclass(frozen=True)
class AtmRound:
    """One saved ATM round: the file of its merged delta, how that merge did on test, and the task
    updates' norms and cosines; `details`: what else the round's writer recorded (science/atm.py)."""
    round: int
    file: str
    accuracy: dict[str, float]
    average: float
    normalized_average: float
    update_norms: dict[str, float]
    update_cosines: tuple[tuple[float, ...], ...]  # task x task, in the cache's task order
    details: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, value, where: str) -> AtmRound:
        f = Fields(value, where)
        return cls(f.get("round", whole), f.get("file", text), f.get("accuracy", numbers), f.get("average", number),
                   f.get("normalized_average", number), f.get("update_norms", numbers),
                   f.get("update_cosines", each(each(number))), f.rest())

    def to_json(self) -> dict:
        return {"round": self.round, "file": self.file, "accuracy": self.accuracy, "average": self.average,
                "normalized_average": self.normalized_average, "update_norms": self.update_norms,
                "update_cosines": [list(row) for row in self.update_cosines], **self.details}


@dataclass(frozen=True)
class AtmRun:
    """One ATM variant's settings (kept from its first round on) and its saved rounds, 1, 2, ... in order;
    `details`: the run's other settings, as science/atm.py records them."""
    coefficient: float
    budget_epochs: float  # epochs of fine-tuning per task and round (a fraction where a run asked for one)
    train_split: str
    start: dict  # where round 1 starts: {"method": "none"} or {"method": "task_arithmetic", "scaling": s}
    rounds: tuple[AtmRound, ...] = ()
    details: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, value, where: str) -> AtmRun:
        f = Fields(value, where)
        out = cls(f.get("coefficient", number), f.get("budget_epochs", number), f.get("train_split", text),
                  f.get("start", obj), f.get("rounds", each(AtmRound.from_json), ()))
        out = replace(out, details=f.rest())
        numbered = [r.round for r in out.rounds]
        if numbered != list(range(1, len(numbered) + 1)):
            raise bad(f.path("rounds"), f"rounds numbered {numbered}, expected 1 to {len(numbered)} in order")
        return out

    def to_json(self) -> dict:
        return {**self.settings(), "rounds": [r.to_json() for r in self.rounds]}

    def settings(self) -> dict:
        """The run's settings, as the JSON holds them (all but its rounds)."""
        return {"coefficient": self.coefficient, "budget_epochs": self.budget_epochs, "train_split": self.train_split,
                "start": self.start, **self.details}

    def round_(self, variant: str, number: int) -> AtmRound:
        if not 1 <= number <= len(self.rounds):
            raise ValueError(f"ATM {variant} has rounds 1 to {len(self.rounds)} saved; there is no round {number}")
        return self.rounds[number - 1]


MERGE_SETTINGS = ("method", "scaling", "coefficients", "layer_coefficients")


@dataclass(frozen=True)
class TuningRecord:
    """Coefficients tuned on validation (science.tuning) or learned by AdaMerging (science.adamerging):
    the merge settings that reproduce the merge, its test accuracy, and how it was found (`details`,
    which each tuner writes in its own words)."""
    method: str
    scaling: float
    coefficients: dict[str, float] | None
    layer_coefficients: dict[str, dict[str, float]] | None
    accuracy: dict[str, float]
    average: float
    details: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, value, where: str) -> TuningRecord:
        f = Fields(value, where)
        return cls(f.get("method", text), f.get("scaling", number), f.get("coefficients", optional(numbers)),
                   f.get("layer_coefficients", optional(by_name(numbers))), f.get("accuracy", numbers),
                   f.get("average", number), f.rest())

    def to_json(self) -> dict:
        return {**self.settings(), "accuracy": self.accuracy, "average": self.average, **self.details}

    def settings(self) -> dict:
        """What merge_flat takes: {method, scaling, coefficients, layer_coefficients}."""
        return {"method": self.method, "scaling": self.scaling, "coefficients": self.coefficients,
                "layer_coefficients": self.layer_coefficients}


@dataclass(frozen=True)
class PreviewCheck:
    """One setting at which the build compared the instant preview with exact evaluation."""
    setting: str
    kind: str
    split: str
    scaling: float
    coefficients: dict[str, float] | None
    preview: dict[str, float]
    exact: dict[str, float]
    preview_average: float
    exact_average: float
    max_abs_diff: float
    worst_task: str

    @classmethod
    def from_json(cls, value, where: str) -> PreviewCheck:
        f = Fields(value, where)
        out = cls(f.get("setting", text), f.get("kind", text), f.get("split", text), f.get("scaling", number),
                  f.get("coefficients", optional(numbers)), f.get("preview", numbers), f.get("exact", numbers),
                  f.get("preview_average", number), f.get("exact_average", number), f.get("max_abs_diff", number),
                  f.get("worst_task", text))
        f.done()
        return out

    def to_json(self) -> dict:
        return {"setting": self.setting, "kind": self.kind, "split": self.split, "scaling": self.scaling,
                "coefficients": self.coefficients, "preview": self.preview, "exact": self.exact,
                "preview_average": self.preview_average, "exact_average": self.exact_average,
                "max_abs_diff": self.max_abs_diff, "worst_task": self.worst_task}


@dataclass(frozen=True)
class PreviewRecord:
    """The instant preview (science/preview.py): one file per task, the vector kinds and splits it
    linearised, the task vectors it was built for, and its checks against exact evaluation."""
    files: dict[str, str]
    kinds: tuple[str, ...]
    splits: tuple[str, ...]
    vectors: tuple[str, ...]
    checks: tuple[PreviewCheck, ...] = ()

    @classmethod
    def from_json(cls, value) -> PreviewRecord:
        f = Fields(value, "preview")
        out = cls(f.get("files", by_name(text)), f.get("kinds", texts), f.get("splits", texts), f.get("vectors", texts),
                  f.get("checks", each(PreviewCheck.from_json), ()))
        f.get("max_abs_diff", optional(number), None)  # derived from the checks
        f.done()
        return out

    def to_json(self) -> dict:
        return {"files": self.files, "kinds": list(self.kinds), "splits": list(self.splits),
                "vectors": list(self.vectors), "checks": [c.to_json() for c in self.checks],
                "max_abs_diff": self.max_abs_diff}

    @property
    def max_abs_diff(self) -> float | None:
        return max((c.max_abs_diff for c in self.checks), default=None)


@dataclass(frozen=True)
class GramsRecord:
    """RegMean's input Gram matrices (science/grams.py): per parameter, which axis of its weight is the
    input one; the seed of the training images used, and how many per task."""
    input_axis: dict[str, int]
    seed: int
    examples: dict[str, int]

    @classmethod
    def from_json(cls, value) -> GramsRecord:
        f = Fields(value, "grams")
        out = cls(f.get("input_axis", by_name(whole)), f.get("seed", whole), f.get("examples", by_name(whole)))
        f.done()
        return out

    def to_json(self) -> dict:
        return {"input_axis": self.input_axis, "seed": self.seed, "examples": self.examples}


ATM_PREFIX = "atm:"


@dataclass(frozen=True)
class MethodKey:
    """What a merge menu names: a merge method of the registry (`ties`), or a saved ATM round
    (`atm:standard:3`, variant and round)."""
    method: str | None = None
    atm_variant: str | None = None
    atm_round: int | None = None

    @property
    def is_atm(self) -> bool:
        return self.atm_variant is not None

    def __str__(self) -> str:
        return f"{ATM_PREFIX}{self.atm_variant}:{self.atm_round}" if self.is_atm else str(self.method)

    @classmethod
    def parse(cls, key: str) -> MethodKey:
        """A method name as it is, or 'atm:VARIANT:ROUND'; whether either exists is the caller's to check."""
        if not key.startswith(ATM_PREFIX):
            return cls(method=key)
        variant, _, number = key[len(ATM_PREFIX):].partition(":")
        if not variant or not number.strip().isdigit():
            raise ValueError(f"an ATM round is named {ATM_PREFIX}VARIANT:ROUND such as {ATM_PREFIX}standard:2, got {key!r}")
        return cls(atm_variant=variant, atm_round=int(number))
