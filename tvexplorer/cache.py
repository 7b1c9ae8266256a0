"""The cache: one folder that holds everything the explorer needs, and nothing that must be retrained.

    manifest.json                 schema version, model, layout, tasks, training, metrics, ATM rounds,
                                  and every file below with its size and sha256 (written last)
    base.safetensors              image encoder at theta0, named tensors, float32
    heads.safetensors             one frozen zero-shot head per task [embed_dim, classes], logit_scale
    vectors/<task>.safetensors    flat, contiguous tau (final), tau1 (after epoch 1), g0 (full-batch
                                  gradient at theta0); a cache imported from published checkpoints
                                  holds tau only (manifest "vector_kinds") and no trajectory.csv
    eval/<task>.safetensors       fixed evaluation subsets: test and validation images (uint8), labels
    trajectory.csv                per task, epoch and layer: update norms and cosines
    preview/<task>.safetensors    linearised features for the instant preview (tvexplorer/preview.py)
    atm/<variant>/round_NNNN.safetensors   merged delta after each ATM round

Tensor files are memory-mapped copy-on-write, so opening a large cache reads only headers; each
file's sha256 is checked the first time it is read, unless this user's record of verified files
says that the same file, unchanged since, already matched. Every write goes to a temporary file, is
fsynced and renamed into place, and the manifest is replaced last, so an interrupted write (or a
full disk) leaves the previous cache intact. Writers hold the cache's lock file, so that two
processes (the app and the command line, say) take turns instead of overwriting each other's rounds.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from .split import Split
from .errors import described
from .layout import Layout

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".tvexplorer.lock"  # hidden, so that work copies, which skip dot files, do not copy it
VECTOR_KINDS = ("tau", "tau1", "g0")
DTYPES = {"float32": torch.float32, "float16": torch.float16}  # storage dtypes of flat vectors
_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "U8": np.uint8}


class CacheError(ValueError):
    """A cache that cannot be read as it is; the message names the file and what is wrong."""


# ---------------------------------------------------------------- atomic writes

class WriteError(OSError):
    """A file of a cache or work folder could not be written (a full disk, say); the one-line message
    names the file, the error and the space left there."""

    @classmethod
    def of(cls, path: Path, error: OSError) -> "WriteError":
        where = Path(path)
        while not where.exists() and where != where.parent:  # the folder may not exist yet
            where = where.parent
        try:
            free = f"{_bytes(shutil.disk_usage(where).free)} free there"
        except OSError:
            free = "free space unknown"
        fix = ("free some space or write to another disk" if error.errno in (errno.ENOSPC, errno.EDQUOT)
               else "check that the folder is writable")
        return cls(f"could not write {path}: {error.strerror or error} ({free}); {fix}")


def _bytes(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000


def _as_os_error(error: Exception) -> OSError | None:
    """safetensors reports a failed write as its own exception with the OS error number in the text."""
    if isinstance(error, OSError):
        return error
    found = re.search(r"os error (\d+)", str(error))
    return OSError(int(found[1]), os.strerror(int(found[1]))) if found else None


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, fsync it, rename it over `path`, fsync the folder.

    Any failure leaves `path` as it was and no temporary file; one to write (a full disk, a read-only
    folder) raises WriteError."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except (OSError, SafetensorError) as e:
        os_error = _as_os_error(e)
        if os_error is None:
            raise
        tmp.unlink(missing_ok=True)  # first, so that the free space reported is what is really left
        raise WriteError.of(path, os_error) from e
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- the writer lock

class _HeldLock:
    """One process's hold on one cache's lock file: the first `writer_lock` of a thread takes the file
    lock, nested ones (ATM saving rounds, a build writing its preview) only count."""

    def __init__(self):
        self.thread_lock = threading.RLock()  # threads of one process take turns here
        self.depth, self.fd = 0, -1


_HELD: dict[str, _HeldLock] = {}
_HELD_GUARD = threading.Lock()


@contextmanager
def writer_lock(root: str | os.PathLike) -> Iterator[None]:
    """Hold `root`'s writer lock (making the folder if needed). Every writer of a cache holds it, so
    the app and the command line take turns; a writer that has to wait says so once on stderr.

    It is an flock on ROOT/.tvexplorer.lock: the system releases it when its process ends, however
    it ends, so a crashed writer never leaves a stale lock behind."""
    path = Path(root) / LOCK
    with _HELD_GUARD:
        held = _HELD.setdefault(os.path.realpath(root), _HeldLock())
    with held.thread_lock:
        if held.depth == 0:
            held.fd = _take_lock_file(path)
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
            if held.depth == 0:
                os.close(held.fd)  # releases the lock


def _take_lock_file(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise WriteError.of(path, e) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            print(f"waiting: {path.parent} is being written by another process (pid {holder}); "
                  "this one goes on when that one has finished", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:  # Ctrl-C while waiting, say
        os.close(fd)
        raise
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
    except OSError:
        pass  # only for the waiting message; a full disk is reported by the write that needs the space
    return fd


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _entry(path: Path) -> dict:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def write_tensors(root: Path, rel: str, tensors: dict[str, torch.Tensor]) -> dict:
    """Atomically write a safetensors file under `root`; returns its manifest entry."""
    # Copies, because safetensors refuses tensors that share storage (views of one flat vector).
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    atomic_write(root / rel, lambda tmp: save_file(tensors, str(tmp)))
    return _entry(root / rel)


def write_table(root: Path, rel: str, table: pd.DataFrame) -> dict:
    atomic_write(root / rel, lambda tmp: table.to_csv(tmp, index=False))
    return _entry(root / rel)


def write_manifest(root: Path, manifest: dict) -> None:
    text = json.dumps(manifest, indent=1, sort_keys=False)
    atomic_write(root / MANIFEST, lambda tmp: tmp.write_text(text))


# ---------------------------------------------------------------- reading

def _read_header(path: Path, rel: str) -> tuple[dict, int]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CacheError(f"{rel}: not a safetensors file (shorter than its 8-byte header length); rebuild the cache")
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000:
            raise CacheError(f"{rel}: not a safetensors file (header length {n} is implausible); rebuild the cache")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CacheError(f"{rel}: safetensors header is not valid JSON ({e}); rebuild the cache") from None
    header.pop("__metadata__", None)
    return header, 8 + n


def mmap_tensors(path: Path, rel: str) -> dict[str, torch.Tensor]:
    """Copy-on-write memory maps of every tensor in a safetensors file: nothing is read until used."""
    header, start = _read_header(path, rel)
    size = path.stat().st_size
    out = {}
    for name, info in header.items():
        dtype = _NUMPY_DTYPES.get(info["dtype"])
        if dtype is None:
            raise CacheError(f"{rel}: tensor {name!r} has dtype {info['dtype']}, which caches do not use")
        begin, end = info["data_offsets"]
        if start + end > size:
            raise CacheError(f"{rel}: truncated, tensor {name!r} ends at byte {start + end} of {size}; rebuild the cache")
        shape = tuple(info["shape"])
        if end == begin:
            out[name] = torch.from_numpy(np.zeros(shape, dtype))
        else:
            out[name] = torch.from_numpy(np.memmap(path, dtype=dtype, mode="c", offset=start + begin, shape=shape))
    return out


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


class Cache:
    """An opened cache folder. Cheap to open; tensors are memory-mapped on first use."""

    def __init__(self, root: Path, manifest: dict):
        self.root = root
        self.manifest = manifest
        self.layout = Layout.from_json(manifest["layout"])
        self._files: dict[str, dict[str, torch.Tensor]] = {}
        self._verified: set[str] = set()  # files whose sha256 has matched the manifest
        self._trajectory: pd.DataFrame | None = None
        self._lock = threading.Lock()

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
        for rel, entry in self.manifest["files"].items():
            path = self.root / rel
            if not path.is_file():
                raise CacheError(f"{rel}: missing from {self.root}; rebuild the cache or restore the file")
            size = path.stat().st_size
            if size != entry["size"]:
                state = "truncated" if size < entry["size"] else "larger than recorded"
                raise CacheError(f"{rel}: {state} ({size} bytes, manifest says {entry['size']}); rebuild the cache")
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
            if rel not in self.manifest["files"]:
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
        if file_sha256(self.root / rel, trust_stamps) != self.manifest["files"][rel]["sha256"]:
            raise CacheError(f"{rel}: sha256 does not match the manifest (the file changed or is corrupt); rebuild the cache")
        self._verified.add(rel)

    def verify(self) -> None:
        """Hash every file now, whatever the record of verified files says (`info --verify`)."""
        for rel in self.manifest["files"]:
            self._check_hash(rel, trust_stamps=False)
            if rel.endswith(".safetensors"):
                self._mapped(rel)  # its header too

    # ------------------------------------------------------------ contents
    @property
    def tasks(self) -> list[str]:
        return [t["name"] for t in self.manifest["tasks"]]

    def task(self, name: str) -> dict:
        for t in self.manifest["tasks"]:
            if t["name"] == name:
                return t
        raise KeyError(f"unknown task {name!r}; this cache has: {', '.join(self.tasks)}")

    @property
    def metrics(self) -> dict:
        return self.manifest["metrics"]

    @property
    def training(self) -> dict:
        return self.manifest["training"]

    @staticmethod
    def _vector_file(task: str) -> str:
        return f"vectors/{task}.safetensors"

    def base(self) -> torch.Tensor:
        """theta0 of the image encoder as one flat float32 vector."""
        return self.layout.flatten(self._mapped("base.safetensors"))

    def heads(self) -> tuple[dict[str, torch.Tensor], float]:
        tensors = self._mapped("heads.safetensors")
        return {t: tensors[t].float() for t in self.tasks}, float(tensors["logit_scale"].reshape(-1)[0])

    @property
    def vector_kinds(self) -> tuple[str, ...]:
        """The kinds of flat vector stored per task: all of VECTOR_KINDS for a cache built by
        fine-tuning, only tau for one imported from published checkpoints."""
        return tuple(self.manifest.get("vector_kinds", VECTOR_KINDS))

    @property
    def has_gradient_record(self) -> bool:
        return set(VECTOR_KINDS) <= set(self.vector_kinds)

    def vector(self, task: str, kind: str = "tau") -> torch.Tensor:
        if kind not in VECTOR_KINDS:
            raise KeyError(f"unknown vector kind {kind!r}; choose one of {', '.join(VECTOR_KINDS)}")
        if kind not in self.vector_kinds:
            raise CacheError(f"this cache has no {kind} vectors: it was imported from fine-tuned checkpoints, which "
                             "carry no first-epoch record (tau1, g0); build the cache by fine-tuning to get one")
        self.task(task)
        return self._mapped(self._vector_file(task))[kind]

    def vectors(self, kind: str = "tau") -> dict[str, torch.Tensor]:
        return {t: self.vector(t, kind) for t in self.tasks}

    def eval_split(self, task: str, split: str = "test") -> Split:
        self.task(task)
        tensors = self._mapped(f"eval/{task}.safetensors")
        return Split(tensors[f"{split}_images"], tensors[f"{split}_labels"])

    def trajectory(self) -> pd.DataFrame:
        """Per-epoch statistics (read and hash-checked once; callers get a copy)."""
        rel = "trajectory.csv"
        if rel not in self.manifest["files"]:
            raise CacheError("this cache has no trajectory record: it was imported from fine-tuned checkpoints; "
                             "build the cache by fine-tuning to get one")
        with self._lock:
            if self._trajectory is None:
                self._check_hash(rel)
                self._trajectory = pd.read_csv(self.root / rel)
            return self._trajectory.copy()

    def theory(self) -> pd.DataFrame | None:
        """The SGD theory record (tvexplorer/theory.py), or None when the build made none."""
        rel = "theory.csv"
        if rel not in self.manifest["files"]:
            return None
        self._check_hash(rel)
        return pd.read_csv(self.root / rel)

    # ------------------------------------------------------------ ATM rounds
    @property
    def vector_dtype(self) -> torch.dtype:
        return DTYPES[self.manifest["vector_dtype"]]

    def atm_runs(self) -> dict[str, dict]:
        return self.manifest.get("atm", {})

    def atm_delta(self, variant: str, round_: int) -> torch.Tensor:
        rounds = self.atm_runs()[variant]["rounds"]
        return self._mapped(rounds[round_ - 1]["file"])["delta"]

    def add_atm_round(self, variant: str, run_info: dict, record: dict, delta: torch.Tensor) -> None:
        """Save one finished round after the last one saved (by any process): its delta file first,
        then the manifest that lists it."""
        with self.writing():
            run = self.atm_runs().get(variant, {**run_info, "rounds": []})
            k = len(run["rounds"]) + 1
            rel = f"atm/{variant}/round_{k:04d}.safetensors"

            def update(manifest: dict) -> None:
                run = manifest.setdefault("atm", {}).setdefault(variant, {**run_info, "rounds": []})
                run["rounds"].append({"round": k, "file": rel, **record})
            self.add_files({rel: {"delta": delta.to(self.vector_dtype)}}, update)

    def add_files(self, files: dict[str, dict[str, torch.Tensor]], update: Callable[[dict], None] | None = None) -> None:
        """Add (or replace) tensor files, then the manifest that lists them, changed by `update`.

        Under the writer lock, starting from the manifest on disk, so that nothing another process
        saved is lost. Each file is written atomically before the manifest names it, so an
        interruption leaves the previous cache readable; a replaced file is re-hashed on its next use."""
        with self.writing():
            manifest = json.loads(json.dumps(self.manifest))
            for rel, tensors in files.items():
                manifest["files"][rel] = write_tensors(self.root, rel, tensors)
            if update is not None:
                update(manifest)
            write_manifest(self.root, manifest)
            self._use_manifest(manifest, replaced=files)

    @contextmanager
    def writing(self) -> Iterator["Cache"]:
        """Hold this cache's writer lock (see `writer_lock`), with the manifest as it is on disk now:
        another process may have saved to the cache since it was opened."""
        with writer_lock(self.root):
            self._use_manifest(read_manifest(self.root))
            yield self

    def _use_manifest(self, manifest: dict, replaced: Iterable[str] = ()) -> None:
        """Switch to `manifest`, forgetting the mappings and checks of files that it changed or replaced."""
        with self._lock:
            old, new = self.manifest["files"], manifest["files"]
            for rel in {*replaced, *(r for r in {*old, *new} if old.get(r) != new.get(r))}:
                self._files.pop(rel, None)
                self._verified.discard(rel)
            self.manifest = manifest


# ---------------------------------------------------------------- the record of verified files

RECENT_S = 2.0  # files changed this recently are hashed but not stamped (see file_sha256)
_RECORD_VERSION = 2
_record_unwritable = False


def _verified_record() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "tvexplorer" / "verified.json"


def _read_record() -> dict:
    """This user's record of verified files: {"files": {resolved path: [size, mtime_ns, inode, sha256]},
    "folders": {resolved folder of a downloaded cache: sha256 of the manifest it was verified with}}."""
    try:
        record = json.loads(_verified_record().read_text())
    except (OSError, ValueError):
        record = {}
    if not isinstance(record, dict) or record.get("version") != _RECORD_VERSION:  # version 1 held folders only
        folders = {k: v for k, v in record.items() if isinstance(v, str)} if isinstance(record, dict) else {}
        record = {"version": _RECORD_VERSION, "files": {}, "folders": folders}
    return record


def _stat_key(path: str) -> list | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _remember(files: dict | None = None, folders: dict | None = None) -> None:
    """Add stamps to the record, dropping those that can no longer match (files changed or gone).

    The record only saves time: two processes that update it at once may lose a stamp (the file is
    hashed again), and one that cannot be written is a note, not an error."""
    global _record_unwritable
    record = _read_record()
    record["files"].update(files or {})
    record["folders"].update(folders or {})
    record["files"] = {p: s for p, s in record["files"].items() if _stat_key(p) == s[:3]}
    record["folders"] = {f: d for f, d in record["folders"].items() if os.path.isdir(f)}
    text = json.dumps(record)
    try:
        atomic_write(_verified_record(), lambda tmp: tmp.write_text(text))
    except WriteError as e:
        if not _record_unwritable:
            print(f"note: {e}; files will be hashed again on their next use", file=sys.stderr, flush=True)
        _record_unwritable = True


def file_sha256(path: Path, trust_stamps: bool = True) -> str:
    """The sha256 of a file. With `trust_stamps`, taken from this user's record when the file is
    unchanged since it was hashed (same resolved path, size, mtime and inode), else hashed now and
    recorded. Caches replace files by renaming new ones into place, which changes the inode.

    A file changed less than RECENT_S before it is hashed is not recorded: file systems keep mtime in
    coarse ticks (FAT in 2 s), so a rewrite in the same tick could leave size and mtime as they were."""
    real = os.path.realpath(path)
    key = _stat_key(real)  # before hashing: a change while hashing then shows as a different stat
    if trust_stamps and key is not None:
        stamp = _read_record()["files"].get(real)
        if stamp is not None and stamp[:3] == key:
            return stamp[3]
    digest = sha256_file(path)
    if key is not None and time.time() - key[1] / 1e9 > RECENT_S:
        _remember(files={real: [*key, digest]})
    return digest


# ---------------------------------------------------------------- caches on the Hugging Face Hub

HF_PREFIX = "hf://"


def _verify_once(folder: Path) -> None:
    """Check every file of a downloaded cache against its manifest, once per manifest: a later open of
    the same download is then as cheap as a local one."""
    key, digest = str(folder.resolve()), sha256_file(folder / MANIFEST)
    if _read_record()["folders"].get(key) == digest:
        return
    Cache.open(folder).verify()
    _remember(folders={key: digest})


def resolve_location(location) -> Path:
    """A cache folder from a path, or from `hf://[datasets/]ORG/REPO[/SUBFOLDER][@REVISION]`: downloaded
    with huggingface_hub into its cache folder and verified against the manifest; offline, the copy
    downloaded earlier is used, and a line on stderr says so."""
    text = str(location)
    if not text.startswith(HF_PREFIX):
        return Path(text).expanduser()
    rest, _, revision = text[len(HF_PREFIX):].partition("@")
    repo_type = "model"
    for prefix, kind in (("datasets/", "dataset"), ("spaces/", "space"), ("models/", "model")):
        if rest.startswith(prefix):
            repo_type, rest = kind, rest[len(prefix):]
    parts = [p for p in rest.split("/") if p]
    if len(parts) < 2:
        raise CacheError(f"{text}: expected hf://[datasets/]ORG/REPO[/SUBFOLDER][@REVISION]")
    repo_id, sub = "/".join(parts[:2]), "/".join(parts[2:])
    from huggingface_hub import snapshot_download
    where = dict(repo_type=repo_type, revision=revision or None, allow_patterns=[f"{sub}/**"] if sub else None)
    try:
        local = snapshot_download(repo_id, **where)
    except Exception as e:  # network, authentication, unknown repository
        reason = described(e)
        try:
            local = snapshot_download(repo_id, local_files_only=True, **where)
        except Exception:
            raise CacheError(f"{text}: could not download the cache ({reason}), and no copy was downloaded before") from None
        print(f"note: {text}: offline ({reason}); using the copy downloaded earlier at {local}", file=sys.stderr, flush=True)
    folder = Path(local) / sub if sub else Path(local)
    _verify_once(folder)
    return folder
