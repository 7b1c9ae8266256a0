"""A person's own images for a new task: a folder or a .zip, checked in full before anything is written.

Accepted layouts (one wrapping folder around either is fine, as zip tools often add one):

    train/<class>/<image>, test/<class>/<image>   the person's own split
    <class>/<image>                               split here: a seeded holdout of each class is the test split

Class names are the folder names with underscores as spaces. Hidden files and folders (a leading
dot) and macOS's __MACOSX folder are skipped. Everything else must be an image that decodes.

`inspect_source` refuses, in one line, whatever could harm or mislead: archive entries that would
land outside the folder (absolute paths, '..', symbolic links), encrypted entries, archives or images
over the size limits (an archive's declared sizes are checked first, and what it really holds is
counted while reading, so a zip bomb is stopped at the limit), files that are not images or do not
decode, fewer than two classes, too few images in a class, and class names that two folders share.
`load_images` then decodes the accepted images at the model's resolution.
"""
from __future__ import annotations

import io
import os
import stat
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

import torch
from PIL import Image, UnidentifiedImageError

from ..core.split import Split, seeded_order
from .benchmarks import ClipPreprocess

SPLITS = ("train", "test")
SKIPPED = ("__MACOSX",)  # besides hidden names: folders that archive tools add
HOLDOUT_FRACTION, HOLDOUT_SEED = 0.2, 0


class BadSource(ValueError):
    """Images that cannot become a task; the one-line message names the file and the fix."""


@dataclass(frozen=True)
class SourceLimits:
    max_archive_bytes: int = 200_000_000     # the .zip file itself
    max_total_bytes: int = 500_000_000       # all images together, uncompressed
    max_files: int = 20_000
    max_image_bytes: int = 20_000_000
    max_image_pixels: int = 25_000_000       # width * height, checked before decoding
    min_classes: int = 2
    max_classes: int = 1000
    min_train_per_class: int = 5
    min_test_per_class: int = 1


DEFAULT_LIMITS = SourceLimits()


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


# ------------------------------------------------------------------ reading members, folder or zip

class _Folder:
    def __init__(self, root: Path, limits: SourceLimits):
        self.root, self.limits = root, limits

    def names(self) -> list[str]:
        names = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in [*dirnames, *filenames]:
                path = Path(dirpath) / name
                if path.is_symlink():
                    raise BadSource(f"{path}: a symbolic link; copy the image itself into the folder")
            dirnames[:] = sorted(d for d in dirnames if not _skipped(d))
            rel = Path(dirpath).relative_to(self.root)
            names += [(rel / f).as_posix() for f in sorted(filenames) if not _skipped(f)]
            if len(names) > self.limits.max_files:
                raise BadSource(f"{self.root}: more than {self.limits.max_files} files; use fewer images")
        return names

    def size(self, name: str) -> int:
        return (self.root / name).stat().st_size

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()


class _Zip:
    def __init__(self, path: Path, limits: SourceLimits):
        self.path, self.limits = path, limits
        if path.stat().st_size > limits.max_archive_bytes:
            raise BadSource(f"{path}: the archive is {_mb(path.stat().st_size)}, over the limit of "
                            f"{_mb(limits.max_archive_bytes)}; use fewer or smaller images")
        try:
            self.zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile as e:
            raise BadSource(f"{path}: not a readable zip archive ({e}); make it again with a zip tool") from None
        self.infos: dict[str, zipfile.ZipInfo] = {}

    def names(self) -> list[str]:
        infos = self.zip.infolist()
        if len(infos) > self.limits.max_files:
            raise BadSource(f"{self.path}: {len(infos)} entries, over the limit of {self.limits.max_files}; use fewer images")
        declared = 0
        for info in infos:
            name = _member_name(self.path, info)
            if info.is_dir() or any(_skipped(part) for part in name.split("/")):
                continue
            if name in self.infos:
                raise BadSource(f"{self.path}: holds {name!r} twice; make the archive again")
            declared += info.file_size
            self.infos[name] = info
        if declared > self.limits.max_total_bytes:
            raise BadSource(f"{self.path}: would unpack to {_mb(declared)}, over the limit of "
                            f"{_mb(self.limits.max_total_bytes)}; use fewer or smaller images")
        return sorted(self.infos)

    def size(self, name: str) -> int:
        return self.infos[name].file_size

    def read(self, name: str) -> bytes:
        """The entry's bytes, never more than it declares: reading stops one byte past the declared size."""
        info = self.infos[name]
        try:
            with self.zip.open(info) as f:
                data = f.read(info.file_size + 1)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as e:
            raise BadSource(f"{self.path}: entry {name} cannot be read ({e}); make the archive again") from None
        if len(data) != info.file_size:
            raise BadSource(f"{self.path}: entry {name} holds {len(data)} bytes but declares {info.file_size}; "
                            "the archive is damaged or crafted")
        return data


def _member_name(path: Path, info: zipfile.ZipInfo) -> str:
    """The entry's path inside the folder; refused when it would land outside it, is a link or is encrypted."""
    raw = info.filename
    name = PurePosixPath(raw.replace("\\", "/"))
    if name.is_absolute() or ".." in name.parts or (name.parts and ":" in name.parts[0]):
        raise BadSource(f"{path}: entry {raw!r} would be written outside the folder (absolute path or '..'); "
                        "the archive is unsafe, make it again from the image folder")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise BadSource(f"{path}: entry {raw!r} is a symbolic link; zip the images themselves")
    if info.flag_bits & 0x1:
        raise BadSource(f"{path}: entry {raw!r} is encrypted; zip the images without a password")
    return name.as_posix().rstrip("/")


def _skipped(name: str) -> bool:
    return name.startswith(".") or name in SKIPPED


# ------------------------------------------------------------------ the layout and its classes

@dataclass(frozen=True)
class ImageSource:
    """What a folder or zip holds, checked: its classes and, per split, each class's image files."""
    path: Path
    kind: str                      # "folder" or "zip"
    given_split: bool              # train/ and test/ given, or split here by a seeded holdout
    folders: tuple[str, ...]       # class folders, sorted; a class's label is its position here
    classnames: tuple[str, ...]
    files: dict = field(repr=False)  # split -> class folder -> member names

    def counts(self) -> dict[str, dict[str, int]]:
        return {c: {s: len(self.files[s][f]) for s in SPLITS} for f, c in zip(self.folders, self.classnames)}

    def summary(self) -> dict:
        counts = self.counts()
        return {"source": str(self.path), "kind": self.kind,
                "split": "train/ and test/ folders" if self.given_split else
                         f"seeded holdout ({HOLDOUT_FRACTION:.0%} of each class is the test split)",
                "classes": counts, "train": sum(c["train"] for c in counts.values()),
                "test": sum(c["test"] for c in counts.values())}

    def line(self) -> str:
        s = self.summary()
        return (f"{len(self.classnames)} classes ({', '.join(self.classnames)}): {s['train']} training and "
                f"{s['test']} test images ({s['split']})")


def _open(path: Path, limits: SourceLimits):
    if path.is_dir():
        return _Folder(path, limits)
    if path.is_file() and zipfile.is_zipfile(path):
        return _Zip(path, limits)
    if not path.exists():
        raise BadSource(f"{path}: no such folder or file; give a folder of class folders or a .zip of one")
    raise BadSource(f"{path}: neither a folder nor a zip archive; give a folder of class folders or a .zip of one")


def _unwrapped(names: list[str]) -> tuple[str, list[str]]:
    """(prefix, names below it): one wrapping folder, as zip tools often add, is looked through."""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and all("/" in n for n in names) and tops.isdisjoint(SPLITS):
        top = tops.pop()
        inner = [n.split("/", 1)[1] for n in names]
        if all("/" in n for n in inner):
            return top + "/", inner
    return "", names


def _group(path: Path, names: list[str], depth: int) -> dict[str, list[str]]:
    """Names of the form [split/]class/file, grouped by their first `depth` parts joined."""
    groups = defaultdict(list)
    for name in names:
        parts = name.split("/")
        if len(parts) != depth + 1:
            where = "train/<class>/ or test/<class>/" if depth == 2 else "<class>/"
            raise BadSource(f"{path}: {name} is not directly inside a class folder; put every image in {where}")
        groups["/".join(parts[:depth])].append(name)
    return groups


def _classnames(path: Path, folders: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    names = []
    for folder in folders:
        name = " ".join(folder.replace("_", " ").split())
        if not name:
            raise BadSource(f"{path}: the class folder {folder!r} gives an empty class name; rename it")
        key = name.casefold()
        if key in seen:
            raise BadSource(f"{path}: the class folders {seen[key]!r} and {folder!r} both give the class name "
                            f"{name!r} (underscores are spaces, case is ignored); rename or merge one")
        seen[key] = folder
        names.append(name)
    return names


def _layout(path: Path, names: list[str]) -> tuple[bool, list[str], dict]:
    """(split given, class folders, split -> folder -> names), holdout not yet applied."""
    tops = {n.split("/", 1)[0] for n in names}
    if tops & set(SPLITS):
        if not set(SPLITS) <= tops:
            missing = (set(SPLITS) - tops).pop()
            raise BadSource(f"{path}: has {(set(SPLITS) & tops).pop()}/ but no {missing}/; give both, "
                            "or only class folders to have a test split held out")
        extra = sorted(tops - set(SPLITS))
        if extra:
            raise BadSource(f"{path}: {extra[0]} is beside train/ and test/; keep only those two there")
        groups = _group(path, names, 2)
        by_split = {s: {k.split("/", 1)[1]: v for k, v in groups.items() if k.startswith(s + "/")} for s in SPLITS}
        if set(by_split["train"]) != set(by_split["test"]):
            odd = sorted(set(by_split["train"]) ^ set(by_split["test"]))[0]
            raise BadSource(f"{path}: class {odd!r} is in only one of train/ and test/; give every class in both")
        return True, sorted(by_split["train"]), by_split
    groups = _group(path, names, 1)
    return False, sorted(groups), {"train": dict(groups)}


def _holdout(files: list[str]) -> tuple[list[str], list[str]]:
    """(train, test) of one class: a seeded HOLDOUT_FRACTION (at least one image) is the test split."""
    n_test = max(1, round(HOLDOUT_FRACTION * len(files)))
    order = seeded_order(len(files), HOLDOUT_SEED).tolist()
    test = sorted(files[i] for i in order[:n_test])
    return [f for f in files if f not in set(test)], test


def inspect_source(path: str | os.PathLike, limits: SourceLimits | None = None) -> ImageSource:
    """Check a folder or .zip of images completely (every image is decoded) and describe it; raises
    BadSource with one line at the first problem. Nothing is written anywhere. `limits`: default DEFAULT_LIMITS."""
    path, limits = Path(path).expanduser(), limits or DEFAULT_LIMITS
    reader = _open(path, limits)
    names = reader.names()
    if not names:
        raise BadSource(f"{path}: holds no images; give class folders of images")
    prefix, inner = _unwrapped(names)
    given, folders, grouped = _layout(path, inner)
    if len(folders) < limits.min_classes:
        raise BadSource(f"{path}: {len(folders)} class folder{'s' if len(folders) != 1 else ''} "
                        f"({', '.join(folders) or 'none'}); a task needs at least {limits.min_classes} classes")
    if len(folders) > limits.max_classes:
        raise BadSource(f"{path}: {len(folders)} classes, over the limit of {limits.max_classes}")
    classnames = _classnames(path, folders)
    files = {s: {} for s in SPLITS}
    for folder in folders:
        members = [prefix + n for n in grouped["train"][folder]]
        if given:
            files["train"][folder], files["test"][folder] = members, [prefix + n for n in grouped["test"][folder]]
        else:
            if len(members) < limits.min_train_per_class + limits.min_test_per_class:
                raise BadSource(f"{path}: class {folder!r} has {len(members)} images; each class needs at least "
                                f"{limits.min_train_per_class + limits.min_test_per_class} (some are held out for testing)")
            files["train"][folder], files["test"][folder] = _holdout(members)
        for split, least in (("train", limits.min_train_per_class), ("test", limits.min_test_per_class)):
            if len(files[split][folder]) < least:
                raise BadSource(f"{path}: class {folder!r} has {len(files[split][folder])} {split} images; "
                                f"each class needs at least {least} there")
    source = ImageSource(path, "zip" if isinstance(reader, _Zip) else "folder", given, tuple(folders),
                         tuple(classnames), files)
    for _ in _decoded(reader, source, limits):
        pass  # every image decoded once, so that one that does not is refused before anything is written
    return source


def _decoded(reader, source: ImageSource, limits: SourceLimits) -> Iterator[tuple[str, int, Image.Image]]:
    """(split, label, decoded RGB image) for every image, checking each one's size before decoding it."""
    total = 0
    for split in SPLITS:
        for label, folder in enumerate(source.folders):
            for name in source.files[split][folder]:
                size = reader.size(name)
                if size > limits.max_image_bytes:
                    raise BadSource(f"{source.path}: {name} is {_mb(size)}, over the limit of "
                                    f"{_mb(limits.max_image_bytes)} per image; make it smaller")
                data = reader.read(name)
                total += len(data)
                if total > limits.max_total_bytes:
                    raise BadSource(f"{source.path}: the images add up to more than {_mb(limits.max_total_bytes)}; "
                                    "use fewer or smaller images")
                yield split, label, _decode(source.path, name, data, limits)


def _decode(path: Path, name: str, data: bytes, limits: SourceLimits) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > limits.max_image_pixels:
            raise BadSource(f"{path}: {name} is {width}x{height} pixels, over the limit of "
                            f"{limits.max_image_pixels:,} pixels per image; make it smaller")
        image.load()
        return image.convert("RGB")
    except UnidentifiedImageError:
        raise BadSource(f"{path}: {name} is not an image (PIL does not recognise it); remove it") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, BadSource):
            raise
        raise BadSource(f"{path}: {name} does not decode as an image ({e}); remove or replace it") from None


def load_images(source: ImageSource, image_size: int, limits: SourceLimits | None = None) -> dict[str, Split]:
    """{"train", "test"}: the images at the model's resolution (CLIP's preprocessing), labels by class folder."""
    limits = limits or DEFAULT_LIMITS
    preprocess = ClipPreprocess(int(image_size))
    images, labels = {s: [] for s in SPLITS}, {s: [] for s in SPLITS}
    reader = _open(source.path, limits)
    reader.names()  # checked again, and a zip's entries indexed
    for split, label, image in _decoded(reader, source, limits):
        images[split].append(preprocess(image))
        labels[split].append(label)
    return {s: Split(torch.stack(images[s]), torch.tensor(labels[s], dtype=torch.int64)) for s in SPLITS}
