"""The "Add a task" panel's logic: what an upload holds, the limits a web page puts on it, the images
collected class by class into a folder of this visitor's own, and the run that adds the task (a kind of
work, work.py: on ZeroGPU two GPU calls of the visitor's own) into the cache the app writes to (the work
copy of a protected cache). The layout and its handlers are tabs/addtask.py."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd

from ..data.imagesource import BadSource, ImageSource, SourceLimits, inspect_source
from ..pipeline.addtask import check_cache, check_task_name, check_templates
from . import runs
from .work import APP_LIMITS, add_task_work

ADD_TASK = "add_task"  # the kind of run (runs.py)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def limits_text(limits: SourceLimits = APP_LIMITS, zero_gpu: bool = False) -> str:
    """The limits, in words, as the panel states them."""
    mb = lambda n: f"{n / 1e6:g} MB"
    text = (f"Limits: a zip of at most {mb(limits.max_archive_bytes)} and {limits.max_files:,} files "
            f"({mb(limits.max_total_bytes)} unpacked); each image at most {mb(limits.max_image_bytes)} and "
            f"{limits.max_image_pixels / 1e6:g} megapixels; {limits.min_classes} to {limits.max_classes} classes, each "
            f"with at least {limits.min_train_per_class} training and {limits.min_test_per_class} test image "
            "(class folders alone: a seeded 20 % of each class is held out for testing).")
    if zero_gpu:
        text += (" On this ZeroGPU Space the work runs as two GPU calls of at most 60 s each (fine-tuning, then the "
                 "accuracies, task arithmetic and preview), charged to your daily GPU quota; the task lives in this "
                 "Space's work folder, which a restart clears unless a Storage Bucket is mounted.")
    return text


def found_table(source: ImageSource) -> pd.DataFrame:
    """One row per class: its name (from its folder) and its training and test images."""
    rows = [{"class": c, "folder": f, "train": n["train"], "test": n["test"]}
            for f, (c, n) in zip(source.folders, source.counts().items())]
    return pd.DataFrame(rows, columns=["class", "folder", "train", "test"])


def found_text(source: ImageSource) -> str:
    return f"✓ **Found** {source.line()}."


class Staging:
    """A visitor's images collected class by class: FOLDER/<class>/<image>, inspected like any folder."""

    def __init__(self, folder: str | None = None):
        self.folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="tvexplorer-upload-"))

    def add(self, classname: str, files: list[str]) -> None:
        """Copy `files` into the class `classname` (its folder name: spaces become underscores)."""
        name = "_".join((classname or "").split())
        if not name or name.startswith(".") or "/" in name or "\\" in name or name == "..":
            raise BadSource(f"class name {classname!r}: give a name such as 'red disc' before adding its images")
        if not files:
            raise BadSource(f"no images chosen for class {classname!r}; choose a few image files first")
        target = self.folder / name
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            path = Path(f)
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise BadSource(f"{path.name}: not an image file name ({', '.join(IMAGE_SUFFIXES)}); choose images")
            shutil.copyfile(path, target / path.name)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def source_of(zip_file: str | None, staged: str | None) -> Path:
    """What to add: the uploaded zip, else the images collected class by class."""
    if zip_file:
        return Path(zip_file)
    if staged and Path(staged).is_dir() and any(Path(staged).iterdir()):
        return Path(staged)
    raise BadSource("upload a zip of class folders, or add a few images per class, first")


def inspect(zip_file: str | None, staged: str | None) -> ImageSource:
    return inspect_source(source_of(zip_file, staged), APP_LIMITS)


def start(ex, name: str, source: str | Path, templates: list[str] | None = None) -> runs.Run:
    """Check the name, the templates and the images, then start adding the task (runs.Busy while another
    task is being added); it goes into the cache the app writes to, made on first need."""
    cache = ex.atm_cache
    check_task_name(cache, (name or "").strip())
    check_cache(cache)
    templates = check_templates([t for t in templates or [] if t.strip()] or ["a photo of a {}."])
    inspect_source(source, APP_LIMITS)
    if runs.busy(ADD_TASK):
        raise runs.Busy(runs.busy_message(ADD_TASK, "another task being added"))
    root = ex.writable_atm_root()
    return runs.start(ADD_TASK, f"adding task {name}", add_task_work(str(root), name.strip(), str(source), templates),
                      {"task": name.strip()}, parts=2, what="another task being added")


def where_added(ex) -> str:
    if not ex.read_only:
        return f"Tasks are added to the cache itself: {ex.atm_root}."
    return (f"The cache is treated as read-only: tasks are added to its copy-on-write work folder {ex.work_folder} "
            "(set TVEXPLORER_WORKDIR to choose another place).")
