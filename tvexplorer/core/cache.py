"""The cache: one folder that holds everything the explorer needs, and nothing that must be retrained.

    manifest.json                 schema version, model, layout, tasks, training, metrics, ATM rounds,
                                  and every file below with its size and sha256 (written last; its
                                  schema: core/manifest.py)
    base.safetensors              image encoder at theta0, named tensors, float32
    heads.safetensors             one frozen zero-shot head per task [embed_dim, classes], logit_scale
    vectors/<task>.safetensors    flat, contiguous tau (final), tau1 (after epoch 1), g0 (full-batch
                                  gradient at theta0); a cache imported from published checkpoints
                                  holds tau only (manifest "vector_kinds") and no trajectory.csv
    eval/<task>.safetensors       fixed evaluation subsets: test and validation images (uint8), labels
    trajectory.csv                per task, epoch and layer: update norms and cosines
    preview/<task>.safetensors    linearised features for the instant preview (tvexplorer/science/preview.py)
    atm/<variant>/round_NNNN.safetensors   merged delta after each ATM round
    data/<task>.safetensors       the images of a task added with add-task (pipeline/addtask.py)
    added/<task>/                 what removing an added task restores: the manifest before it, and
                                  the files it replaced or set aside

Tensor files are memory-mapped copy-on-write, so opening a large cache reads only headers; each
file's sha256 is checked the first time it is read, unless this user's record of verified files
says that the same file, unchanged since, already matched. Every write goes to a temporary file, is
fsynced and renamed into place, and the manifest is replaced last, so an interrupted write (or a
full disk) leaves the previous cache intact. Writers hold the cache's lock file, so that two
processes (the app and the command line, say) take turns instead of overwriting each other's rounds.
"""
from __future__ import annotations

import os
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pandas as pd
import torch

from .errors import CacheError
from .files import mmap_tensors, write_tensors, writer_lock
from .layout import Layout
from .manifest import VECTOR_KINDS, Manifest, read_manifest, write_manifest
from .additions import AtmRound, AtmRun
from .split import Split
from .stamps import file_sha256

DTYPES = {"float32": torch.float32, "float16": torch.float16}  # storage dtypes of flat vectors


_OPEN: "weakref.WeakSet[Cache]" = weakref.WeakSet()


def _unlock_after_fork() -> None:
    """A process forked while another thread held a cache's lock (a ZeroGPU call runs in one) would wait for
    it forever: that thread does not exist there. The child gets fresh locks."""
    for cache in list(_OPEN):
        cache._lock = threading.Lock()


os.register_at_fork(after_in_child=_unlock_after_fork)


class Cache:
    """An opened cache folder. Cheap to open; tensors are memory-mapped on first use."""

    def __init__(self, root: Path, manifest: Manifest):
        self.root = root
        self.manifest = manifest
        self.layout: Layout = manifest.layout
        self._files: dict[str, dict[str, torch.Tensor]] = {}
        self._verified: set[str] = set()  # files whose sha256 has matched the manifest
        self._trajectory: pd.DataFrame | None = None
        self._lock = threading.Lock()
        _OPEN.add(self)

    # ------------------------------------------------------------ opening and validation
    @classmethod
    def open(cls, path: str | os.PathLike) -> "Cache":
        root = Path(path)
        if not root.is_dir():
            raise CacheError(f"{root}: no such cache folder; build one with `python -m tvexplorer build-demo --out {root}`")
        cache = cls(root, read_manifest(root))
        cache._check_files()
        return cache

    def _check_files(self) -> None:
        for rel, entry in self.manifest.files.items():
            path = self.root / rel
            if not path.is_file():
                raise CacheError(f"{rel}: missing from {self.root}; rebuild the cache or restore the file")
            size = path.stat().st_size
            if size != entry.size:
                state = "truncated" if size < entry.size else "larger than recorded"
                raise CacheError(f"{rel}: {state} ({size} bytes, manifest says {entry.size}); rebuild the cache")
        n = self.layout.numel
        base = self._mapped("base.safetensors", verify=False)
        if {k: tuple(v.shape) for k, v in base.items()} != dict(zip(self.layout.names, self.layout.shapes)):
            raise CacheError("base.safetensors: parameter names or shapes do not match the manifest's layout of the base model")
        for task in self.tasks:
            rel = self._vector_file(task)
            tensors = self._mapped(rel, verify=False)
            missing = [k for k in self.vector_kinds if k not in tensors]
            if missing:
                raise CacheError(f"{rel}: has no {', '.join(missing)}, which the manifest lists; rebuild the cache")
            for kind, t in tensors.items():
                if tuple(t.shape) != (n,):
                    raise CacheError(f"{rel}: {kind} has shape {tuple(t.shape)}, the base model has {n} parameters")

    def _mapped(self, rel: str, verify: bool = True) -> dict[str, torch.Tensor]:
        """Tensors of one listed file; with `verify`, its sha256 is checked against the manifest first (once)."""
        with self._lock:
            if rel not in self.manifest.files:
                raise CacheError(f"{rel}: not listed in the manifest of {self.root}")
            if verify:
                self._check_hash(rel)
            if rel not in self._files:
                self._files[rel] = mmap_tensors(self.root / rel, rel)
            return self._files[rel]

    def tensors(self, rel: str) -> dict[str, torch.Tensor]:
        """The tensors of one file listed in the manifest, memory-mapped, hash-checked on first use."""
        return self._mapped(rel)

    def _check_hash(self, rel: str, trust_stamps: bool = True) -> None:
        """Check a file against the manifest's sha256, once per opened cache; with `trust_stamps`, a file
        that this user's record shows unchanged since it was last hashed is not hashed again."""
        if trust_stamps and rel in self._verified:
            return
        if file_sha256(self.root / rel, trust_stamps) != self.manifest.files[rel].sha256:
            raise CacheError(f"{rel}: sha256 does not match the manifest (the file changed or is corrupt); rebuild the cache")
        self._verified.add(rel)

    def verify(self) -> None:
        """Hash every file now, whatever the record of verified files says (`info --verify`)."""
        for rel in self.manifest.files:
            self._check_hash(rel, trust_stamps=False)
            if rel.endswith(".safetensors"):
                self._mapped(rel)  # its header too

    # ------------------------------------------------------------ contents
    @property
    def tasks(self) -> list[str]:
        return self.manifest.task_names

    @staticmethod
    def _vector_file(task: str) -> str:
        return f"vectors/{task}.safetensors"

    def base(self) -> torch.Tensor:
        """theta0 of the image encoder as one flat float32 vector."""
        return self.layout.flatten(self._mapped("base.safetensors"))

    @property
    def base_sha256(self) -> str:
        """The sha256 of theta0's file: what names the base model exactly."""
        return self.manifest.files["base.safetensors"].sha256

    def heads(self) -> tuple[dict[str, torch.Tensor], float]:
        tensors = self._mapped("heads.safetensors")
        return {t: tensors[t].float() for t in self.tasks}, float(tensors["logit_scale"].reshape(-1)[0])

    @property
    def vector_kinds(self) -> tuple[str, ...]:
        """The kinds of flat vector stored per task: all of VECTOR_KINDS for a cache built by
        fine-tuning, only tau for one imported from published checkpoints."""
        return self.manifest.stored_vector_kinds

    @property
    def has_gradient_record(self) -> bool:
        return set(VECTOR_KINDS) <= set(self.vector_kinds)

    def vector(self, task: str, kind: str = "tau") -> torch.Tensor:
        if kind not in VECTOR_KINDS:
            raise KeyError(f"unknown vector kind {kind!r}; choose one of {', '.join(VECTOR_KINDS)}")
        if kind not in self.vector_kinds:
            raise CacheError(f"this cache has no {kind} vectors: it was imported from fine-tuned checkpoints, which "
                             "carry no first-epoch record (tau1, g0); build the cache by fine-tuning to get one")
        self.manifest.task(task)
        return self._mapped(self._vector_file(task))[kind]

    def vectors(self, kind: str = "tau") -> dict[str, torch.Tensor]:
        return {t: self.vector(t, kind) for t in self.tasks}

    def eval_split(self, task: str, split: str = "test") -> Split:
        self.manifest.task(task)
        tensors = self._mapped(f"eval/{task}.safetensors")
        return Split(tensors[f"{split}_images"], tensors[f"{split}_labels"])

    def trajectory(self) -> pd.DataFrame:
        """Per-epoch statistics (read and hash-checked once; callers get a copy)."""
        rel = "trajectory.csv"
        if rel not in self.manifest.files:
            raise CacheError("this cache has no trajectory record: it was imported from fine-tuned checkpoints; "
                             "build the cache by fine-tuning to get one")
        with self._lock:
            if self._trajectory is None:
                self._check_hash(rel)
                self._trajectory = pd.read_csv(self.root / rel)
            return self._trajectory.copy()

    def theory(self) -> pd.DataFrame | None:
        """The SGD theory record (tvexplorer/science/theory.py), or None when the build made none."""
        rel = "theory.csv"
        if rel not in self.manifest.files:
            return None
        self._check_hash(rel)
        return pd.read_csv(self.root / rel)

    # ------------------------------------------------------------ ATM rounds
    @property
    def vector_dtype(self) -> torch.dtype:
        return DTYPES[self.manifest.vector_dtype]

    def atm_delta(self, variant: str, round_: int) -> torch.Tensor:
        return self._mapped(self.manifest.atm_round(variant, round_).file)["delta"]

    def add_atm_round(self, variant: str, run_info: dict, record: dict, delta: torch.Tensor) -> None:
        """Save one finished round after the last one saved (by any process): its delta file first,
        then the manifest that lists it. `run_info`: the run's settings, used when it has no round yet;
        `record`: the round's fields but its number and file (core.records.AtmRound)."""
        with self.writing():
            run = self.manifest.atm.get(variant) or AtmRun.from_json({**run_info, "rounds": []}, f"atm.{variant}")
            k = len(run.rounds) + 1
            rel = f"atm/{variant}/round_{k:04d}.safetensors"
            saved = AtmRound.from_json({"round": k, "file": rel, **record}, f"atm.{variant}.rounds[{k - 1}]")
            self.add_files({rel: {"delta": delta.to(self.vector_dtype)}},
                           lambda manifest: manifest.with_atm_round(variant, run, saved))

    def add_files(self, files: dict[str, dict[str, torch.Tensor]],
                  update: Callable[[Manifest], Manifest] | None = None) -> None:
        """Add (or replace) tensor files, then the manifest that lists them, changed by `update` (which
        returns the new manifest).

        Under the writer lock, starting from the manifest on disk, so that nothing another process
        saved is lost. Each file is written atomically before the manifest names it, so an
        interruption leaves the previous cache readable; a replaced file is re-hashed on its next use."""
        with self.writing():
            manifest = self.manifest.with_files({rel: write_tensors(self.root, rel, tensors) for rel, tensors in files.items()})
            if update is not None:
                manifest = update(manifest)
            write_manifest(self.root, manifest)
            self._use_manifest(manifest, replaced=files)

    @contextmanager
    def writing(self) -> Iterator["Cache"]:
        """Hold this cache's writer lock (see `writer_lock`), with the manifest as it is on disk now:
        another process may have saved to the cache since it was opened."""
        with writer_lock(self.root):
            self._use_manifest(read_manifest(self.root))
            yield self

    def _use_manifest(self, manifest: Manifest, replaced: Iterable[str] = ()) -> None:
        """Switch to `manifest`, forgetting the mappings and checks of files that it changed or replaced."""
        with self._lock:
            old, new = self.manifest.files, manifest.files
            for rel in {*replaced, *(r for r in {*old, *new} if old.get(r) != new.get(r))}:
                self._files.pop(rel, None)
                self._verified.discard(rel)
            self.manifest = manifest
