"""The machine a run measures: its CPU, memory, load and memory bandwidth, the code measured, and
which file pages the page cache holds (to time cold and hot opens)."""
from __future__ import annotations

import ctypes
import os
import platform
import resource
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from .plan import GB, ROOT, timed
from tvexplorer import __version__


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_clock() -> tuple[float, float, float]:
    """(wall seconds, busy CPU seconds of the whole machine, CPU seconds of this process and of its
    children that have been waited for)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")  # steal: other VMs took it
    own = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    return time.perf_counter(), busy, own


def others_share(start: tuple[float, float, float]) -> float:
    """Share of all cores that other processes kept busy since `start`: 0 when this benchmark had the
    machine to itself. On 2 cores even 0.25 slows multi-threaded torch a lot (see the report)."""
    now = cpu_clock()
    wall = now[0] - start[0]
    others = (now[1] - start[1]) - (now[2] - start[2])
    return max(0.0, others / (wall * (os.cpu_count() or 1))) if wall > 0 else 0.0


def proc_field(path: str, field: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == field:
                return value.strip()
    except OSError:
        pass
    return None


def meminfo_bytes(field: str) -> int:
    value = proc_field("/proc/meminfo", field)
    return int(value.split()[0]) * 1024 if value else 0


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def code_version() -> dict:
    """The commit measured, and which files of the package or of this suite differ from it (the figures are of those edits)."""
    commit, changed = _git("rev-parse", "--short", "HEAD"), _git("status", "--porcelain", "--", "tvexplorer", "benchmarks/bench")
    return {"commit": commit.strip() if commit else None,
            "uncommitted": [line[3:] for line in changed.splitlines()] if changed else []}


def machine(device: torch.device) -> dict:
    return {
        "cpu": proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_bytes": meminfo_bytes("MemTotal"),
        "available_at_start_bytes": meminfo_bytes("MemAvailable"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "tvexplorer": __version__,
        "load_average_at_start": os.getloadavg()[0],
    }


def copy_bandwidth(nbytes: int, repeats: int = 5) -> dict:
    """Memory bandwidth as the best of several `dst.copy_(src)` of nbytes, read + write counted."""
    src = torch.ones(nbytes // 4)
    dst = torch.zeros_like(src)  # zeros_like writes every page, so no copy pays for page faults
    seconds = [timed(lambda: dst.copy_(src))[0] for _ in range(repeats)]
    return {"buffer_bytes": nbytes, "seconds": seconds, "copy_gbps": 2 * nbytes / min(seconds) / GB}


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    return libc


def _resident_pages(libc, path: Path) -> tuple[int, int]:
    size = path.stat().st_size
    if size == 0:
        return 0, 0
    pages = -(-size // _PAGE)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED: maps without reading
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            flags = (ctypes.c_ubyte * pages)()
            if libc.mincore(addr, size, flags) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            return int((np.frombuffer(flags, dtype=np.uint8) & 1).sum()), pages
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def resident_fraction(paths: list[Path]) -> float | None:
    """Share of the files' pages in the page cache (mincore), or None where that cannot be asked."""
    try:
        libc = _libc()
        counts = [_resident_pages(libc, p) for p in paths]
    except (OSError, AttributeError):
        return None
    total = sum(n for _, n in counts)
    return sum(r for r, _ in counts) / total if total else None


def evict(paths: list[Path]) -> None:
    """Drop the files' clean pages from the page cache; no root needed, unlike drop_caches."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
