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
    training         the fine-tuning settings (science.training.TrainConfig), or null for imported vectors
    metrics          accuracies: a per-task dict {task: accuracy} under each of PER_TASK_METRICS that was
                     measured; {"best_scaling", "accuracy", "average", "val_average_by_scaling"} under
                     task_arithmetic, task_arithmetic_one_epoch and each of TUNED_METHODS; and the mean
                     over tasks of every one of AVERAGED_METRICS under average_key(metric)
    files            {relative path: {"bytes", "sha256"}} for every file of the cache but this one
    atm, preview, theory, ...   optional records that later writers add (ATM rounds, the instant
                     preview, the SGD theory record); kept as they are, after the keys above
    grams            optional; {"input_axis": {parameter: 0 or 1}, "seed", "examples": {task: images}}:
                     the input Gram matrices that RegMean needs, one file grams/<task>.safetensors per
                     task (tvexplorer/science/grams.py)
    tuning           optional; {name: record} of tuned coefficients (science.tuning, science.adamerging):
                     name "METHOD:per_task" / "METHOD:per_layer" (tuned on validation) or
                     "adamerging:task_wise" / "adamerging:layer_wise"; each record holds "method",
                     "scaling", "coefficients" ({task: value} or null), "layer_coefficients"
                     ({task: {layer: value}} or null), "accuracy" and "average" on test, and how it was found

The manifest is written last (atomically, under the writer lock), so a cache whose manifest lists a
file has that file complete.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .errors import CacheError
from .files import atomic_write

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
GRAMS = "grams"  # the record of stored input Gram matrices

# Metric keys that hold one accuracy per task; merges whose best validation scaling a build records;
# and every metric that has a mean over tasks, stored under average_key(metric).
PER_TASK_METRICS = ("zero_shot", "linear_probe", "one_epoch", "finetuned", "multitask")
TUNED_METHODS = ("ties", "tsv", "iso_c")
AVERAGED_METRICS = (*PER_TASK_METRICS, "task_arithmetic", "task_arithmetic_one_epoch", *TUNED_METHODS)


def average_key(metric: str) -> str:
    """Where a metric's mean over tasks is stored in "metrics"."""
    return f"{metric}_average"


def averages(metrics: dict) -> dict[str, float | None]:
    """The mean over tasks of each of AVERAGED_METRICS (None where it was not measured)."""
    return {metric: metrics.get(average_key(metric)) for metric in AVERAGED_METRICS}


def add_per_task(metrics: dict, metric: str, per_task: dict[str, float]) -> None:
    """Record a per-task accuracy and its mean over tasks."""
    metrics[metric] = per_task
    metrics[average_key(metric)] = sum(per_task.values()) / len(per_task)


def add_tuned(metrics: dict, metric: str, record: dict) -> None:
    """Record a merge tuned on validation ({"best_scaling", "accuracy", "average", ...}) and its mean."""
    metrics[metric] = record
    metrics[average_key(metric)] = record["average"]


TUNING = "tuning"
MERGE_SETTINGS = ("method", "scaling", "coefficients", "layer_coefficients")


def add_tuning(manifest: dict, name: str, record: dict) -> None:
    """Record (or replace) a tuning result under manifest["tuning"][name]."""
    missing = [k for k in MERGE_SETTINGS if k not in record]
    if missing:
        raise ValueError(f"tuning record {name!r} lacks {', '.join(missing)}")
    manifest.setdefault(TUNING, {})[name] = record


def tuned_settings(manifest: dict, name: str) -> dict:
    """The merge settings ({method, scaling, coefficients, layer_coefficients}) of a recorded tuning result."""
    records = manifest.get(TUNING, {})
    if name not in records:
        raise ValueError(f"no tuning result {name!r} in this cache; recorded: {', '.join(records) or '(none; run `tune` first)'}")
    return {k: records[name][k] for k in MERGE_SETTINGS}


@dataclass
class TaskRecord:
    name: str
    classnames: list[str]
    templates: list[str]
    data: dict   # the data source's spec, enough to load the task again (data.sources.load_task)
    sizes: dict  # {"train", "val", "test"}: how many images each split held

    def to_json(self) -> dict:
        return {"name": self.name, "classnames": list(self.classnames), "templates": list(self.templates),
                "data": self.data, "sizes": self.sizes}


@dataclass
class Manifest:
    """A new cache's manifest, as its writer fills it in; to_json() is what goes on disk."""
    created_by: str
    model: dict
    layout: dict
    vector_dtype: str
    tasks: list[TaskRecord]
    training: dict | None
    files: dict[str, dict]
    metrics: dict = field(default_factory=dict)
    vector_kinds: list[str] | None = None
    source: dict | None = None

    def to_json(self) -> dict:
        optional = {"vector_kinds": self.vector_kinds, "source": self.source}
        return {"schema_version": SCHEMA_VERSION, "created_by": self.created_by, "model": self.model,
                "layout": self.layout, "vector_dtype": self.vector_dtype,
                **{k: v for k, v in optional.items() if v is not None},
                "tasks": [t.to_json() for t in self.tasks], "training": self.training, "metrics": self.metrics,
                "files": self.files}


def write_manifest(root: Path, manifest: Manifest | dict) -> None:
    """Replace root's manifest atomically; a dict is one read from disk with records added to it."""
    data = manifest.to_json() if isinstance(manifest, Manifest) else manifest
    text = json.dumps(data, indent=1, sort_keys=False)
    atomic_write(root / MANIFEST, lambda tmp: tmp.write_text(text))


def read_manifest(root: Path) -> dict:
    """The manifest of the cache folder `root`, checked as far as it can be without opening the files."""
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise CacheError(f"{manifest_path}: missing, so {root} is not a tvexplorer cache (or its build did not finish)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CacheError(f"{manifest_path}: not valid JSON ({e}); rebuild the cache") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise CacheError(f"{manifest_path}: schema version {version!r}, this tvexplorer reads version {SCHEMA_VERSION}; "
                         "rebuild the cache or use a matching tvexplorer")
    for rel in manifest["files"]:
        _check_inside(manifest_path, rel)
    return manifest


def _check_inside(manifest_path: Path, rel: str) -> None:
    """Refuse a listed file that is not a plain relative path below the cache folder, before anything
    touches it: a downloaded manifest is third-party input. The name is judged, not where a symbolic
    link leads, because a hub snapshot's files are links into the hub's own blob store."""
    name = PurePosixPath(rel)
    if not name.parts or name.is_absolute() or ".." in name.parts:
        raise CacheError(f"{manifest_path}: lists the file {rel!r}, which is not inside the cache folder (an absolute "
                         "path or one with '..'); the manifest is damaged or hostile: get the cache from its source again")
