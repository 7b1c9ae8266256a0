"""Files of a cache or work folder: writes that a crash or a full disk cannot half-finish (temporary
file, fsync, rename, one-line WriteError), the per-folder writer lock, sha256, and memory-mapped
safetensors reads that check each header before mapping."""
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
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from .errors import CacheError
from .records import FileEntry
LOCK = ".tvexplorer.lock"  # hidden, so that work copies, which skip dot files, do not copy it
_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "U8": np.uint8}


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


def _entry(path: Path) -> FileEntry:
    return FileEntry(path.stat().st_size, sha256_file(path))


def write_tensors(root: Path, rel: str, tensors: dict[str, torch.Tensor]) -> FileEntry:
    """Atomically write a safetensors file under `root`; returns its manifest entry."""
    # Copies, because safetensors refuses tensors that share storage (views of one flat vector).
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    atomic_write(root / rel, lambda tmp: save_file(tensors, str(tmp)))
    return _entry(root / rel)


def write_table(root: Path, rel: str, table: pd.DataFrame) -> FileEntry:
    atomic_write(root / rel, lambda tmp: table.to_csv(tmp, index=False))
    return _entry(root / rel)


def write_bytes(root: Path, rel: str, data: bytes) -> FileEntry:
    atomic_write(root / rel, lambda tmp: tmp.write_bytes(data))
    return FileEntry(len(data), hashlib.sha256(data).hexdigest())


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
