"""The records that writers after the build add to a cache's manifest: ATM runs and their rounds, tuned
coefficients, the instant preview, RegMean's Gram matrices and the tasks added with add-task; and the keys that name a merge or a
saved ATM round. Read and written like the build's records (core/records.py)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from .fields import Fields, bad, by_name, each, flag, number, numbers, obj, optional, text, texts, whole


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


@dataclass(frozen=True)
class AddedTask:
    """A task added to a finished cache (pipeline/addtask.py) and how to take it off again: the
    manifest as it was before (`undo`, a listed file), the files the addition replaced or dropped,
    kept beside it ({path: kept copy}), what it made stale (in words), and whether its accuracies
    and preview are done. `source`: what the images were (data.imagesource's summary)."""
    source: dict
    undo: str
    set_aside: dict[str, str]
    stale: tuple[str, ...]
    finished: bool

    @classmethod
    def from_json(cls, value, where: str) -> AddedTask:
        f = Fields(value, where)
        out = cls(f.get("source", obj), f.get("undo", text), f.get("set_aside", by_name(text)), f.get("stale", texts),
                  f.get("finished", flag))
        f.done()
        return out

    def to_json(self) -> dict:
        return {"source": self.source, "undo": self.undo, "set_aside": self.set_aside, "stale": list(self.stale),
                "finished": self.finished}


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
            raise ValueError(f"an ATM round is named {ATM_PREFIX}VARIANT:ROUND such as {ATM_PREFIX}standard:2, "
                             f"got {key!r}")
        return cls(atm_variant=variant, atm_round=int(number))
