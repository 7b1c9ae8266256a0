"""manifest.json, the one file that says what a cache holds: read and written only here.

Schema (version 1), one JSON object, in this order:

    schema_version   1
    created_by       "tvexplorer X.Y.Z" (with what else made it, e.g. "bench (synthetic)")
    model            {"name", "pretrained", "encoder"}: the open_clip name and tag, and the image encoder
                     as models.clip rebuilds it (embed_dim, vision_cfg, quick_gelu, image_size, mean, std)
    layout           the flat parameter layout (core.layout.Layout.to_json)
    vector_dtype     "float32" or "float16": how task vectors are stored
    vector_kinds     optional; which of tau, tau1, g0 the vector files hold (absent: all three)
    source           optional; {"kind": "fine-tuned"} for a build, or where imported checkpoints came from
    tasks            [{"name", "classnames", "templates", "data" (the data source's spec, data.sources),
                       "sizes": {"train", "val", "test"}}], in the cache's task order
    training         the fine-tuning settings (core.training.TrainConfig), or null for imported vectors
    metrics          accuracies: a per-task dict {task: accuracy} under each of PER_TASK_METRICS that was
                     measured; {"best_scaling", "accuracy", "average", "val_average_by_scaling", "params"
                     (optional)} under task_arithmetic, task_arithmetic_one_epoch, each of TUNED_METHODS
                     and every method the results table recorded; and the mean over tasks of each of
                     these under average_key(metric)
    files            {relative path: {"size", "sha256"}} for every file of the cache but this one
                     (size in bytes)
    preview          optional; the instant preview (science/preview.py): {"files": {task: path}, "kinds",
                     "splits", "vectors" (the tasks it was built for), "checks", "max_abs_diff"}
    grams            optional; {"input_axis": {parameter: 0 or 1}, "seed", "examples": {task: images}}:
                     the input Gram matrices that RegMean needs, one file grams/<task>.safetensors per
                     task (tvexplorer/science/grams.py)
    tuning           optional; {name: record} of tuned coefficients (science.tuning, science.adamerging):
                     name "METHOD:per_task" / "METHOD:per_layer" (tuned on validation) or
                     "adamerging:task_wise" / "adamerging:layer_wise"; each record holds "method",
                     "scaling", "coefficients" ({task: value} or null), "layer_coefficients"
                     ({task: {layer: value}} or null), "accuracy" and "average" on test, and how it was found
    atm              optional; {variant: {"coefficient", "budget_epochs", "train_split", "start", "rounds":
                     [{"round", "file", "accuracy", "average", "normalized_average", "update_norms",
                     "update_cosines"}]}}: the saved ATM rounds (science/atm.py), 1, 2, ... in order
    added_tasks      optional; {task: {"source", "undo", "set_aside", "stale", "finished"}}: the tasks added
                     to the finished cache with add-task, in the order they were added, and how to
                     remove each (core.additions.AddedTask, pipeline/addtask.py)

Readers get it typed (`Manifest` and the records of core/records.py, core/additions.py), read and checked once when the
cache is opened: a missing, mistyped, unknown or inconsistent field is one CacheError that names it.
Writers make a new Manifest (the records are frozen) and `write_manifest` puts it on disk.
The manifest is written last (atomically, under the writer lock), so a cache whose manifest lists a
file has that file complete.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from .errors import CacheError
from .fields import Fields, bad, by_name, each, number, obj, optional, text, texts, whole
from .files import atomic_write
from .additions import MERGE_SETTINGS, AddedTask, AtmRound, AtmRun, GramsRecord, PreviewRecord, TuningRecord
from .layout import Layout
from .records import FileEntry, Metrics, ModelRecord, TaskRecord
from .training import TrainConfig

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
GRAMS = "grams"  # the record of stored input Gram matrices
TUNING = "tuning"
PREVIEW = "preview"
ADDED_TASKS = "added_tasks"
VECTOR_KINDS = ("tau", "tau1", "g0")
VECTOR_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class Manifest:
    """What a cache holds, typed; `from_json` reads and checks it, `to_json` is what goes on disk."""
    created_by: str
    model: ModelRecord
    layout: Layout
    vector_dtype: str
    tasks: tuple[TaskRecord, ...]
    training: TrainConfig | None
    files: dict[str, FileEntry]
    metrics: Metrics = field(default_factory=Metrics)
    vector_kinds: tuple[str, ...] | None = None  # None: all of VECTOR_KINDS (the field is absent on disk)
    source: dict | None = None
    preview: PreviewRecord | None = None
    grams: GramsRecord | None = None
    tuning: dict[str, TuningRecord] = field(default_factory=dict)
    atm: dict[str, AtmRun] = field(default_factory=dict)
    added_tasks: dict[str, AddedTask] = field(default_factory=dict)

    # ------------------------------------------------------------ reading and writing
    @classmethod
    def from_json(cls, value) -> Manifest:
        f = Fields(value, "")
        version = value.get("schema_version") if isinstance(value, dict) else None
        if version != SCHEMA_VERSION:
            raise CacheError(f"schema version {version!r}, this tvexplorer reads version {SCHEMA_VERSION}; "
                             "rebuild the cache or use a matching tvexplorer")
        f.get("schema_version", whole)
        manifest = cls(
            created_by=f.get("created_by", text),
            model=f.get("model", lambda v, _: ModelRecord.from_json(v)),
            layout=f.get("layout", _layout),
            vector_dtype=f.get("vector_dtype", text),
            vector_kinds=f.get("vector_kinds", texts, None),
            source=f.get("source", optional(obj), None),
            tasks=f.get("tasks", each(lambda v, where: TaskRecord.from_json(v, where))),
            training=f.get("training", optional(_training)),
            metrics=f.get("metrics", lambda v, _: Metrics.from_json(v)),
            files=f.get("files", by_name(FileEntry.from_json)),
            preview=f.get(PREVIEW, optional(lambda v, _: PreviewRecord.from_json(v)), None),
            grams=f.get(GRAMS, optional(lambda v, _: GramsRecord.from_json(v)), None),
            tuning=f.get(TUNING, by_name(TuningRecord.from_json), {}),
            atm=f.get("atm", by_name(AtmRun.from_json), {}),
            added_tasks=f.get(ADDED_TASKS, by_name(AddedTask.from_json), {}),
        )
        f.done()
        manifest._check_consistent()
        return manifest

    def to_json(self) -> dict:
        optional_parts = {"vector_kinds": None if self.vector_kinds is None else list(self.vector_kinds),
                          "source": self.source}
        later = {PREVIEW: self.preview and self.preview.to_json(), GRAMS: self.grams and self.grams.to_json(),
                 TUNING: {n: r.to_json() for n, r in self.tuning.items()} or None,
                 "atm": {v: r.to_json() for v, r in self.atm.items()} or None,
                 ADDED_TASKS: {t: r.to_json() for t, r in self.added_tasks.items()} or None}
        return {"schema_version": SCHEMA_VERSION, "created_by": self.created_by, "model": self.model.to_json(),
                "layout": self.layout.to_json(), "vector_dtype": self.vector_dtype,
                **{k: v for k, v in optional_parts.items() if v is not None},
                "tasks": [t.to_json() for t in self.tasks],
                "training": None if self.training is None else self.training.to_json(),
                "metrics": self.metrics.to_json(), "files": {rel: e.to_json() for rel, e in self.files.items()},
                **{k: v for k, v in later.items() if v is not None}}

    def _check_consistent(self) -> None:
        """What no single field shows: names that must agree across the manifest."""
        names = self.task_names
        if len(set(names)) != len(names):
            raise bad("tasks", f"a task is listed twice: {', '.join(n for n in names if names.count(n) > 1)}")
        if self.vector_dtype not in VECTOR_DTYPES:
            raise bad("vector_dtype", f"{self.vector_dtype!r} is none of {', '.join(VECTOR_DTYPES)}")
        kinds = self.stored_vector_kinds
        if "tau" not in kinds or not set(kinds) <= set(VECTOR_KINDS):
            raise bad("vector_kinds", f"{list(kinds)} must hold tau and only kinds among {', '.join(VECTOR_KINDS)}")
        for rel in self.files:
            _check_inside(rel)
        for metric, accuracy in self.metrics.per_task().items():
            _known_tasks(f"metrics.{metric}", accuracy, names)
        listed = [(f"atm.{v}.rounds[{r.round - 1}].file", r.file) for v, run in self.atm.items() for r in run.rounds]
        listed += [(f"preview.files.{t}", rel) for t, rel in (self.preview.files.items() if self.preview else ())]
        for where, rel in listed:
            if rel not in self.files:
                raise bad(where, f"{rel} is not among the listed files")
        if self.grams is not None:
            _known_tasks("grams.examples", self.grams.examples, names)
        _known_tasks(ADDED_TASKS, self.added_tasks, names)
        for task, added in self.added_tasks.items():
            for where, rel in [("undo", added.undo), *((f"set_aside.{r}", a) for r, a in added.set_aside.items())]:
                if rel not in self.files:
                    raise bad(f"{ADDED_TASKS}.{task}.{where}", f"{rel} is not among the listed files")

    # ------------------------------------------------------------ contents
    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def task(self, name: str) -> TaskRecord:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"unknown task {name!r}; this cache has: {', '.join(self.task_names)}")

    @property
    def stored_vector_kinds(self) -> tuple[str, ...]:
        """The kinds of flat vector stored per task: all of VECTOR_KINDS for a cache built by
        fine-tuning, only tau for one imported from published checkpoints."""
        return VECTOR_KINDS if self.vector_kinds is None else self.vector_kinds

    @property
    def provenance(self) -> dict:
        """Where the task vectors came from ({"kind": "fine-tuned"} where the manifest does not say)."""
        return self.source if self.source is not None else {"kind": "fine-tuned"}

    def atm_rounds(self, variant: str) -> tuple[AtmRound, ...]:
        """The saved rounds of an ATM variant, 1, 2, ... in order (none for a variant never run)."""
        return self.atm[variant].rounds if variant in self.atm else ()

    def atm_round(self, variant: str, number: int) -> AtmRound:
        """A saved ATM round, or a one-line ValueError that says which runs and rounds there are."""
        if variant not in self.atm:
            raise ValueError(f"this cache has no saved ATM {variant!r} run; saved runs: "
                             f"{', '.join(self.atm) or 'none'} (run `python -m tvexplorer atm` first)")
        return self.atm[variant].round_(variant, number)

    def tuned(self, name: str) -> TuningRecord:
        if name not in self.tuning:
            raise ValueError(f"no tuning result {name!r} in this cache; recorded: "
                             f"{', '.join(self.tuning) or '(none; run `tune` first)'}")
        return self.tuning[name]

    # ------------------------------------------------------------ new manifests (the records are frozen)
    def with_files(self, files: dict[str, FileEntry]) -> Manifest:
        return replace(self, files={**self.files, **files})

    def with_tuning(self, name: str, record: TuningRecord | dict) -> Manifest:
        """Record (or replace) a tuning result; a dict is checked as the manifest would be read."""
        if isinstance(record, dict):
            missing = [k for k in MERGE_SETTINGS if k not in record]
            if missing:
                raise ValueError(f"tuning record {name!r} lacks {', '.join(missing)}")
            record = TuningRecord.from_json(record, f"{TUNING}.{name}")
        return replace(self, tuning={**self.tuning, name: record})

    def with_atm_round(self, variant: str, run: AtmRun, record: AtmRound) -> Manifest:
        """`record` saved after the rounds of `variant` (started with `run`'s settings if it has none)."""
        current = self.atm.get(variant, run)
        return replace(self, atm={**self.atm, variant: replace(current, rounds=(*current.rounds, record))})



def _layout(value, where: str) -> Layout:
    rows = each(each(lambda v, w: v))(value, where)
    for i, row in enumerate(rows):
        if len(row) != 2:
            raise bad(f"{where}[{i}]", "expected [name, shape]")
        text(row[0], f"{where}[{i}][0]")
        each(whole)(row[1], f"{where}[{i}][1]")
    return Layout.from_json([list(r) for r in rows])


def _training(value, where: str) -> TrainConfig:
    f = Fields(value, where)
    settings = {"optimizer": f.get("optimizer", text), "lr": f.get("lr", number),
                "weight_decay": f.get("weight_decay", number), "batch_size": f.get("batch_size", whole),
                "epochs": f.get("epochs", whole), "grad_clip": f.get("grad_clip", number), "seed": f.get("seed", whole),
                "precision": f.get("precision", text)}
    f.done()
    try:
        return TrainConfig(**settings)
    except ValueError as e:
        raise bad(where, str(e)) from None


def _known_tasks(where: str, per_task: dict, names: list[str]) -> None:
    unknown = [t for t in per_task if t not in names]
    if unknown:
        raise bad(where, f"names task(s) {', '.join(unknown)} that the manifest's tasks do not list")


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Replace root's manifest atomically."""
    text_ = json.dumps(manifest.to_json(), indent=1, sort_keys=False)
    atomic_write(root / MANIFEST, lambda tmp: tmp.write_text(text_))


def read_manifest(root: Path) -> Manifest:
    """The manifest of the cache folder `root`, read and checked as far as it can be without opening the files."""
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise CacheError(f"{manifest_path}: missing, so {root} is not a tvexplorer cache (or its build did not finish)")
    try:
        data = json.loads(manifest_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CacheError(f"{manifest_path}: not valid JSON ({e}); rebuild the cache") from None
    try:
        return Manifest.from_json(data)
    except CacheError as e:
        raise CacheError(f"{manifest_path}: {e}") from None


def _check_inside(rel: str) -> None:
    """Refuse a listed file that is not a plain relative path below the cache folder, before anything
    touches it: a downloaded manifest is third-party input. The name is judged, not where a symbolic
    link leads, because a hub snapshot's files are links into the hub's own blob store."""
    name = PurePosixPath(rel)
    if not name.parts or name.is_absolute() or ".." in name.parts:
        raise CacheError(f"lists the file {rel!r}, which is not inside the cache folder (an absolute path or one "
                         "with '..'); the manifest is damaged or hostile: get the cache from its source again")
