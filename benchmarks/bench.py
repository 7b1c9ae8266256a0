"""`python -m tvexplorer bench`: merging, evaluation, cache opening and the app, each measured in the
same run as what it is compared with.

- merge: task arithmetic, TIES, TSV-M and Iso-C over T memory-mapped float32 task vectors of the
  ViT-B/32 image encoder's size, as GB/s of task vectors read against this machine's memory
  bandwidth (a large tensor copy), and peak memory as a multiple of the task vectors' size;
- fusionbench: FusionBench's own implementations on the same inputs (in benchmarks/.venv, made by
  benchmarks/setup.sh): time, peak memory, and whether both give the same merged weights;
- evaluation: images/s of `Evaluator.accuracy` against a bare forward loop over the same batches;
- cache: `Cache.open`, and open + task arithmetic, against torch.load of pickled checkpoints + merge,
  with the files evicted from the page cache (cold) and then resident (hot);
- app: slider release to numbers through the app's /evaluate endpoint against the bare call.

Inputs are synthetic (random weights, random task vectors), written to a temporary folder that is
removed afterwards. Merges run on the CPU, as in the app (its task vectors are memory-mapped files);
evaluation and the app use `device`. Each merge runs in a fresh subprocess so that its peak resident
memory is its own; that peak counts the input pages it reads, so an ideal streaming merge is near
1 + 1/T times the task vectors.
"""
from __future__ import annotations

import ctypes
import gc
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tvexplorer import __version__
from tvexplorer.cache import MANIFEST, SCHEMA_VERSION, Cache, mmap_tensors, sha256_file, write_manifest, write_tensors
from tvexplorer.layout import Layout
from tvexplorer.merging import merge_flat

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("merge", "fusionbench", "evaluation", "cache", "app")
MERGES = {"task_arithmetic": {}, "ties": {"k": 20}, "tsv": {}, "iso_c": {}}
FUSIONBENCH_PYTHON = ROOT / "benchmarks" / ".venv" / "bin" / "python"
FUSIONBENCH_SCRIPT = ROOT / "benchmarks" / "fusionbench_ref.py"
FUSIONBENCH_INSTALL = "bash benchmarks/setup.sh   # makes benchmarks/.venv with fusion-bench, reusing the installed torch"
SAME_RESULT_RTOL = 1e-4  # |ours - theirs| / |ours| (L2) below which two merges count as the same weights
GB = 1e9

# FusionBench and ours differ here by definition; none of it matters for these inputs (see the report).
SEMANTIC_NOTES = (
    ("TIES: FusionBench keeps int(P*k)+1 entries per task (kthvalue of the (P-int(P*k))-th smallest), "
     "ours ceil(P*k): the same count unless P*k is an integer, where FusionBench keeps one more."),
    ("TIES: where a parameter's trimmed values sum to exactly 0, FusionBench gives it the majority elected "
     "sign over all parameters and averages that side; ours merges it to 0."),
    ("TIES: ours multiplies each task by its coefficient before trimming; FusionBench's ties_merging has "
     "no per-task coefficients (all 1 here, so equal)."),
    ("TSV-M: FusionBench keeps int(r*(1/T)) singular triplets per task and zero-pads the concatenation "
     "to r columns, ours r//T without padding: the same merged matrix for these shapes."),
    ("Task arithmetic: FusionBench's TaskArithmeticAlgorithm takes models and subtracts the pretrained one "
     "from each; it is given an all-zero pretrained model, so its fine-tuned models are the task vectors. "
     "(Its module-level task_arithmetic_merge() raises a TypeError on any nn.Module in 0.2.33.)"),
)


# ---------------------------------------------------------------------------------------- the plan

def vit_b32() -> dict:
    """The ViT-B/32 image encoder as a cache manifest describes it (the same tower that
    open_clip.create_model("ViT-B-32").visual builds); its weights here are random."""
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    cfg = open_clip.get_model_config("ViT-B-32")
    return {"embed_dim": cfg["embed_dim"], "vision_cfg": cfg["vision_cfg"], "quick_gelu": False,
            "image_size": cfg["vision_cfg"]["image_size"], "mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD)}


def tiny_vit() -> dict:
    """About 1M parameters, for the quick mode; P*k is not an integer, so TIES keeps the same count as FusionBench."""
    vision = {"image_size": 32, "patch_size": 8, "width": 128, "layers": 5, "head_width": 64}
    return {"embed_dim": 64, "vision_cfg": vision, "quick_gelu": False, "image_size": 32,
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


@dataclass(frozen=True)
class Plan:
    name: str
    encoder: dict          # the image encoder as a manifest describes it (filled in by run: it needs open_clip)
    tasks: int
    images_per_task: int
    copy_bytes: int        # size of each buffer in the bandwidth test
    calls: dict            # calls of each of our merges, the best counts (FusionBench's: one each)
    requests: int          # /evaluate requests on the app
    fresh_process: bool    # one subprocess per merge (else one per side, to save start-up time)
    timeout_s: int         # per merge worker


FULL = Plan("full", encoder={}, tasks=8, images_per_task=16, copy_bytes=1 << 30, requests=15, fresh_process=True,
            calls={"task_arithmetic": 5, "ties": 3, "tsv": 2, "iso_c": 2}, timeout_s=3600)
QUICK = Plan("quick", encoder={}, tasks=3, images_per_task=2, copy_bytes=64 << 20, requests=3, fresh_process=False,
             calls=dict.fromkeys(MERGES, 2), timeout_s=600)


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_clock() -> tuple[float, float, float]:
    """(wall seconds, busy CPU seconds of the whole machine, CPU seconds of this process and of its
    children that have been waited for)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")  # steal: other VMs took it
    own = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    return time.perf_counter(), busy, own


def _others_share(start: tuple[float, float, float]) -> float:
    """Share of all cores that other processes kept busy since `start`: 0 when this benchmark had the
    machine to itself. On 2 cores even 0.25 slows multi-threaded torch a lot (see the report)."""
    now = _cpu_clock()
    wall = now[0] - start[0]
    others = (now[1] - start[1]) - (now[2] - start[2])
    return max(0.0, others / (wall * (os.cpu_count() or 1))) if wall > 0 else 0.0


# ---------------------------------------------------------------------------------------- the machine

def _proc_field(path: str, field: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == field:
                return value.strip()
    except OSError:
        pass
    return None


def _meminfo_bytes(field: str) -> int:
    value = _proc_field("/proc/meminfo", field)
    return int(value.split()[0]) * 1024 if value else 0


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def code_version() -> dict:
    """The commit measured, and which package files differ from it (the figures are of those edits)."""
    commit, changed = _git("rev-parse", "--short", "HEAD"), _git("status", "--porcelain", "--", "tvexplorer")
    return {"commit": commit.strip() if commit else None,
            "uncommitted": [line[3:] for line in changed.splitlines()] if changed else []}


def machine(device: torch.device) -> dict:
    return {
        "cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_bytes": _meminfo_bytes("MemTotal"),
        "available_at_start_bytes": _meminfo_bytes("MemAvailable"),
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
    seconds = [_timed(lambda: dst.copy_(src))[0] for _ in range(repeats)]
    return {"buffer_bytes": nbytes, "seconds": seconds, "copy_gbps": 2 * nbytes / min(seconds) / GB}


# ---------------------------------------------------------------------------------------- page cache

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


# ---------------------------------------------------------------------------------------- the synthetic cache

@dataclass(frozen=True)
class World:
    root: Path          # a cache in the real format
    encoder: dict
    layout: Layout
    tasks: tuple[str, ...]

    @property
    def vector_bytes(self) -> int:
        """Bytes of the T task vectors (float32) that a merge reads."""
        return 4 * self.layout.numel * len(self.tasks)

    def vector_files(self) -> list[Path]:
        return [self.root / f"vectors/{t}.safetensors" for t in self.tasks]


def _random(n: int, scale: float, seed: int) -> torch.Tensor:
    return torch.empty(n).normal_(0.0, scale, generator=torch.Generator().manual_seed(seed))


def _heads(tasks: tuple[str, ...], embed: int, classes: int) -> dict[str, torch.Tensor]:
    heads = {t: F.normalize(_random(embed * classes, 1.0, 100 + i).view(embed, classes), dim=0) for i, t in enumerate(tasks)}
    return {**heads, "logit_scale": torch.tensor([100.0])}


def _eval_subset(plan: Plan, seed: int, classes: int) -> dict[str, torch.Tensor]:
    g, size = torch.Generator().manual_seed(seed), plan.encoder["image_size"]
    images = torch.randint(0, 256, (plan.images_per_task, size, size, 3), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, classes, (plan.images_per_task,), generator=g)
    return {"test_images": images, "test_labels": labels, "val_images": images[:1], "val_labels": labels[:1]}


def write_world(root: Path, plan: Plan, classes: int = 10) -> World:
    """A cache as build.py writes it (base, heads, vectors with tau, tau1 and g0, evaluation subsets,
    manifest last), with random weights; no trajectory.csv, which nothing measured here reads."""
    from tvexplorer.models import build_image_encoder
    from tvexplorer.training import get_flat
    encoder = build_image_encoder(plan.encoder)
    layout = Layout.of(dict(encoder.named_parameters()))
    tasks = tuple(f"task{i}" for i in range(plan.tasks))
    files = {"base.safetensors": write_tensors(root, "base.safetensors", layout.unflatten(get_flat(encoder).float())),
             "heads.safetensors": write_tensors(root, "heads.safetensors", _heads(tasks, plan.encoder["embed_dim"], classes))}
    for i, task in enumerate(tasks):
        vectors = {kind: _random(layout.numel, 1e-3, 1000 * i + j) for j, kind in enumerate(("tau", "tau1", "g0"))}
        files[f"vectors/{task}.safetensors"] = write_tensors(root, f"vectors/{task}.safetensors", vectors)
        files[f"eval/{task}.safetensors"] = write_tensors(root, f"eval/{task}.safetensors", _eval_subset(plan, i, classes))
    write_manifest(root, {
        "schema_version": SCHEMA_VERSION,
        "created_by": f"tvexplorer {__version__} bench (synthetic)",
        "model": {"name": "synthetic", "pretrained": None, "encoder": plan.encoder},
        "layout": layout.to_json(),
        "vector_dtype": "float32",
        "tasks": [{"name": t, "classnames": [f"class {c}" for c in range(classes)], "templates": ["a photo of a {}."],
                   "data": {"source": "synthetic"}, "sizes": {"train": 0, "val": 1, "test": plan.images_per_task}}
                  for t in tasks],
        "training": {},
        "metrics": {},
        "files": files,
    })
    return World(root, plan.encoder, layout, tasks)


def mapped_tau(root: Path, tasks: list[str]) -> dict[str, torch.Tensor]:
    """Each task's tau, memory-mapped exactly as the cache maps it (no hash check, nothing read yet)."""
    return {t: mmap_tensors(root / f"vectors/{t}.safetensors", f"vectors/{t}.safetensors")["tau"] for t in tasks}


# ---------------------------------------------------------------------------------------- merge workers

def _status_bytes(field: str) -> int:
    value = _proc_field("/proc/self/status", field)
    return int(value.split()[0]) * 1024 if value else 0


def _reset_peak() -> bool:
    """Reset VmHWM to the current resident size (Linux >= 4.0), so the next peak is this merge's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _guarded(allowance: int):
    """Address-space limit of (what is mapped now + allowance): past it allocations fail in this
    process, which reports an out-of-memory, instead of the machine swapping or its OOM killer firing."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _status_bytes("VmSize") + allowance
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _measure(merge: Callable[[], object], repeats: int, allowance: int, baseline: int) -> tuple[dict, object]:
    record = {"seconds": [], "error": None, "out_of_memory": False, "peak_reset": _reset_peak()}
    merged = None
    restore = _guarded(allowance)
    try:
        for _ in range(repeats):
            merged = None  # the previous result must not count in this call's peak
            seconds, merged = _timed(merge)
            record["seconds"].append(seconds)
    except Exception as e:  # noqa: BLE001 - a failing merge is a row of the report, not the end of the run
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        record["out_of_memory"] = isinstance(e, MemoryError) or (
            isinstance(e, RuntimeError) and ("alloc" in message.lower() or "memory" in message.lower()))
        record["error"] = f"{type(e).__name__}: {message[:300]}"
        merged = None
    finally:
        restore()
    record["peak_bytes"] = _status_bytes("VmHWM") - baseline
    record["guard_bytes"] = allowance
    return record, merged


Prepared = tuple[Callable[[], object], Callable[[object], torch.Tensor]]


def run_jobs(spec_path: str, prepare: Callable[[dict, Layout, dict[str, torch.Tensor]], Prepared],
             extra: dict | None = None) -> None:
    """Worker side, ours and FusionBench's alike: for each job of the spec, map the task vectors and let
    `prepare` turn them into (the call under test, a conversion of its result to our flat layout), so
    that converting inputs and outputs stays outside the timed region. Times the call and records its
    peak resident memory above the worker's baseline from before any input was touched. Results are
    written after every job, so a crash keeps the finished ones."""
    from safetensors.torch import save_file
    spec = json.loads(Path(spec_path).read_text())
    root = Path(spec["cache"])
    layout = Layout.from_json(json.loads((root / MANIFEST).read_text())["layout"])
    baseline = _status_bytes("VmRSS")
    records = []
    for job in spec["jobs"]:
        merge, to_flat = prepare(job, layout, mapped_tau(root, spec["tasks"]))
        gc.collect()  # unmaps whatever prepare copied from and dropped
        record, merged = _measure(merge, job["calls"], spec["allowance_bytes"], baseline)
        del merge
        if merged is not None:
            record["output"] = str(Path(spec["out_dir"]) / f"{spec['tag']}-{job['method']}.safetensors")
            save_file({"merged": to_flat(merged).float().contiguous()}, record["output"])
        records.append({"method": job["method"], **record})
        Path(spec["result"]).write_text(json.dumps({"jobs": records, **(extra or {})}))
        del merged
        gc.collect()


def _prepare_ours(job: dict, layout: Layout, vectors: dict[str, torch.Tensor]) -> Prepared:
    return (lambda: merge_flat(job["method"], vectors, layout, scaling=1.0, **job["params"])), (lambda t: t)


def merge_worker(spec_path: str) -> None:
    """Entry point of our merge subprocess."""
    run_jobs(spec_path, _prepare_ours)


def _worker(command: list[str], spec: dict, spec_path: Path, log_path: Path, timeout_s: int) -> str | None:
    """Run one worker on its spec; returns why it failed, or None."""
    spec_path.write_text(json.dumps(spec))
    # Ours imports this tree (cwd is the repo root); FusionBench's venv has it installed by benchmarks/setup.sh.
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run([*command, str(spec_path)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return f"timed out after {timeout_s} s"
    return None if proc.returncode == 0 else _exit_reason(proc.returncode)


def _run_workers(command: list[str], world: World, tasks: list[str], methods: list[str], plan: Plan,
                 out_dir: Path, tag: str) -> tuple[list[dict], dict]:
    """Run the merge jobs in subprocesses (one per job in the full plan); returns the job records
    and the worker's extra fields. A worker that dies leaves an error on each job it did not finish."""
    groups = [[m] for m in methods] if plan.fresh_process else [methods]
    records, extra = [], {}
    for group in groups:
        name = f"{tag}-{group[0]}"
        spec = {"cache": str(world.root), "tasks": tasks, "tag": tag, "out_dir": str(out_dir),
                "result": str(out_dir / f"{name}.result.json"),
                "jobs": [{"method": m, "params": MERGES[m], "calls": plan.calls[m] if tag.startswith("ours") else 1}
                         for m in group],
                "allowance_bytes": max(0, _meminfo_bytes("MemAvailable") - _reserve())}
        _log(f"{tag}: {', '.join(group)} on {len(tasks)} tasks")
        start = _cpu_clock()
        failure = _worker(command, spec, out_dir / f"{name}.spec.json", out_dir / f"{name}.log", plan.timeout_s)
        others = _others_share(start)
        done = json.loads(Path(spec["result"]).read_text()) if Path(spec["result"]).exists() else {"jobs": []}
        extra.update({k: v for k, v in done.items() if k != "jobs"})
        finished = {r["method"] for r in done["jobs"]}
        records += [{**r, "others_cpu_share": others} for r in done["jobs"]]
        if failure:
            tail = [x.strip(" │╭╰─") for x in (out_dir / f"{name}.log").read_text().splitlines() if x.strip(" │╭╰─")][-2:]
            records += [{"method": m, "seconds": [], "error": f"worker {failure}: {' | '.join(tail)}"[:500],
                         "out_of_memory": "SIGKILL" in failure, "others_cpu_share": others}
                        for m in group if m not in finished]
    return records, extra


def _reserve() -> int:
    """Memory left to everyone else (other users of the machine, the page cache) while a worker runs."""
    return max(4 << 30, _meminfo_bytes("MemTotal") // 4)


def _exit_reason(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        return f"killed by {name}" + (" (the kernel's OOM killer?)" if name == "SIGKILL" else "")
    return f"exited with status {code}"


# ---------------------------------------------------------------------------------------- 1. merge

def _merge_row(record: dict, vector_bytes: int, copy_gbps: float) -> dict:
    row = {"error": record.get("error"), "out_of_memory": record.get("out_of_memory", False),
           "others_cpu_share": record.get("others_cpu_share")}
    if record.get("seconds"):
        best = min(record["seconds"])
        gbps = vector_bytes / best / GB
        row |= {"best_s": best, "first_s": record["seconds"][0], "calls": len(record["seconds"]),
                "gbps": gbps, "bandwidth_fraction": gbps / copy_gbps}
    if record.get("peak_bytes", 0) > 0:
        row |= {"peak_bytes": record["peak_bytes"], "peak_multiple": record["peak_bytes"] / vector_bytes}
    return row


# cwd is the repo root, so the worker imports this tree's tvexplorer and, from benchmarks/, this suite.
OURS_WORKER = [sys.executable, "-c",
               "import sys; sys.path.insert(1, 'benchmarks'); from bench import merge_worker; merge_worker(sys.argv[1])"]


def bench_merge(world: World, plan: Plan, copy_gbps: float, out_dir: Path, tasks: list[str] | None = None,
                methods: list[str] | None = None, tag: str = "ours") -> tuple[dict, dict[str, str]]:
    """Our merges in subprocesses; returns the rows and the files holding the merged vectors."""
    tasks = list(tasks or world.tasks)
    records, _ = _run_workers(OURS_WORKER, world, tasks, list(methods or MERGES), plan, out_dir, tag)
    vector_bytes = 4 * world.layout.numel * len(tasks)
    return ({r["method"]: _merge_row(r, vector_bytes, copy_gbps) for r in records},
            {r["method"]: r["output"] for r in records if r.get("output")})


# ---------------------------------------------------------------------------------------- 2. FusionBench

def compare(ours_path: str, theirs_path: str) -> dict:
    """How far apart two merged vectors are; where they are not the same, how many entries differ
    (by over 1e-3 of the largest) and whether ours is 0 at each, as TIES's exact-zero-sum rule makes it."""
    a = mmap_tensors(Path(ours_path), "ours")["merged"]
    b = mmap_tensors(Path(theirs_path), "theirs")["merged"]
    diff = a - b
    scale = a.abs().max()
    out = {"rel_max_diff": float(diff.abs().max() / scale), "rel_l2_diff": float(diff.norm() / a.norm())}
    out["same"] = out["rel_l2_diff"] <= SAME_RESULT_RTOL
    if not out["same"]:
        differing = diff.abs() > 1e-3 * scale
        out |= {"differing_entries": int(differing.sum()), "ours_zero_where_differing": bool((a[differing] == 0).all())}
    return out


def _explained(method: str, row: dict, numel: int) -> bool:
    """Different only at a vanishing number of entries where ours is 0: TIES parameters whose trimmed
    values sum to exactly 0 (e.g. +x and -x), which FusionBench gives the majority sign (SEMANTIC_NOTES)."""
    return (method == "ties" and not row.get("same", True) and row.get("ours_zero_where_differing", False)
            and row["differing_entries"] <= 1e-6 * numel)


def _comparison_rows(ours: dict, ours_out: dict, theirs: list[dict], tasks: int, vector_bytes: int) -> dict:
    rows = {}
    for record in theirs:
        m = record["method"]
        row = {"tasks": tasks, "error": record.get("error"), "out_of_memory": record.get("out_of_memory", False),
               "theirs_others_cpu_share": record.get("others_cpu_share"),
               "ours_others_cpu_share": ours.get(m, {}).get("others_cpu_share")}
        if record.get("seconds"):
            row["theirs_s"] = min(record["seconds"])
        if record.get("peak_bytes", 0) > 0:
            row |= {"theirs_peak_bytes": record["peak_bytes"], "theirs_peak_multiple": record["peak_bytes"] / vector_bytes,
                    "guard_bytes": record.get("guard_bytes")}
        if ours.get(m, {}).get("best_s"):
            row |= {"ours_s": ours[m]["best_s"], "ours_peak_bytes": ours[m].get("peak_bytes"),
                    "ours_peak_multiple": ours[m].get("peak_multiple")}
        if "theirs_s" in row and "ours_s" in row:
            row |= {"ratio": row["ours_s"] / row["theirs_s"], "speedup": row["theirs_s"] / row["ours_s"]}
        if record.get("output") and m in ours_out:
            row |= compare(ours_out[m], record["output"])
            row["explained"] = _explained(m, row, vector_bytes // 4 // tasks)
        rows[m] = row
    return rows


def bench_fusionbench(world: World, plan: Plan, ours: dict, ours_out: dict, copy_gbps: float, out_dir: Path,
                      python: Path | None) -> dict:
    """FusionBench's implementations on the same inputs. One that runs out of memory is also run,
    with ours, on the first half of the tasks, so that there is still a comparison."""
    if python is None or not Path(python).exists():
        return {"available": False, "install": FUSIONBENCH_INSTALL, "notes": list(SEMANTIC_NOTES)}
    command = [str(python), str(FUSIONBENCH_SCRIPT)]
    theirs, extra = _run_workers(command, world, list(world.tasks), list(MERGES), plan, out_dir, "fusionbench")
    result = {"available": True, "python": str(python), "version": extra.get("fusion_bench_version"),
              "accelerator": "cpu", "reserve_bytes": _reserve(), "notes": list(SEMANTIC_NOTES),
              "methods": _comparison_rows(ours, ours_out, theirs, len(world.tasks), world.vector_bytes)}
    half = list(world.tasks[: len(world.tasks) // 2])
    for m, row in result["methods"].items():
        if row["out_of_memory"] and len(half) >= 2:
            fallback = replace(plan, fresh_process=True)
            sub = out_dir / f"half-{m}"
            sub.mkdir()
            ours_half, ours_half_out = bench_merge(world, fallback, copy_gbps, sub, half, [m], "ours-half")
            theirs_half, _ = _run_workers(command, world, half, [m], fallback, sub, "fusionbench-half")
            row["fallback"] = _comparison_rows(ours_half, ours_half_out, theirs_half, len(half),
                                               4 * world.layout.numel * len(half))[m]
    return result


# ---------------------------------------------------------------------------------------- 3. evaluation

def _seconds(fn: Callable[[], object], device: torch.device) -> float:
    def once():
        fn()
        _sync(device)
    return _timed(once)[0]


def _bare_loop(world: World, cache: Cache, delta: torch.Tensor, device: torch.device) -> tuple[Callable[[], None], int]:
    """A bare forward loop over each task's evaluation images as one batch (the Evaluator's batches
    hold up to 500 images, more than a task has here); returns (the loop, images)."""
    from tvexplorer.data import to_input
    from tvexplorer.models import build_image_encoder
    from tvexplorer.training import set_flat
    encoder = build_image_encoder(world.encoder).to(device)
    set_flat(encoder, cache.base().to(device) + delta.to(device))
    mean, std = world.encoder["mean"], world.encoder["std"]
    batches = [to_input(cache.eval_split(t).images.to(device), mean, std) for t in world.tasks]

    @torch.inference_mode()
    def bare():
        for x in batches:
            encoder(x)
    return bare, sum(len(x) for x in batches)


def bench_evaluation(world: World, device: torch.device, repeats: int = 4) -> dict:
    """Evaluator.accuracy of theta0 + delta against a bare forward loop over the same images."""
    from tvexplorer.evaluation import Evaluator
    cache = Cache.open(world.root)
    delta = mapped_tau(world.root, [world.tasks[0]])[world.tasks[0]]
    evaluator = Evaluator(cache, device=device)
    bare, images = _bare_loop(world, cache, delta, device)
    evaluator_runs, bare_runs = [], []
    for _ in range(repeats):  # alternated, so that a drift in the machine's speed hits both alike
        evaluator_runs.append(_seconds(lambda: evaluator.accuracy(delta), device))
        bare_runs.append(_seconds(bare, device))
    evaluator_s, bare_s = min(evaluator_runs), min(bare_runs)
    return {"device": str(device), "images": images, "image_size": world.encoder["image_size"], "calls": repeats,
            "evaluator_s": evaluator_s, "bare_s": bare_s, "evaluator_runs_s": evaluator_runs, "bare_runs_s": bare_runs,
            "evaluator_images_per_s": images / evaluator_s, "bare_images_per_s": images / bare_s,
            "overhead_pct": 100 * (evaluator_s / bare_s - 1)}


# ---------------------------------------------------------------------------------------- 4. opening a cache

def write_checkpoints(folder: Path, world: World) -> list[Path]:
    """theta0 and every task's theta0 + tau as pickled full state dicts, fsynced (so they can be evicted)."""
    folder.mkdir(parents=True)
    theta0 = Cache.open(world.root).base()
    paths = [folder / "pretrained.pt"]
    torch.save({k: v.clone() for k, v in world.layout.unflatten(theta0).items()}, paths[0])
    for task, tau in mapped_tau(world.root, list(world.tasks)).items():
        paths.append(folder / f"{task}.pt")
        torch.save({k: v.clone() for k, v in world.layout.unflatten(theta0 + tau).items()}, paths[-1])
    for p in paths:
        evict([p])  # fsyncs too
    return paths


def _open_and_merge(root: Path) -> torch.Tensor:
    cache = Cache.open(root)
    return merge_flat("task_arithmetic", cache.vectors("tau"), cache.layout, scaling=1.0)


def _load_and_merge(paths: list[Path], layout: Layout) -> torch.Tensor:
    theta0 = layout.flatten(torch.load(paths[0], weights_only=True))
    out = torch.zeros_like(theta0)
    for p in paths[1:]:
        out.add_(layout.flatten(torch.load(p, weights_only=True))).sub_(theta0)
    return out


def bench_cache(world: World, out_dir: Path) -> dict:
    """Cache.open and open + task arithmetic against torch.load of the checkpoints + the same merge,
    first with every file evicted from the page cache, then with the files just read (hot)."""
    checkpoints = write_checkpoints(out_dir / "checkpoints", world)
    cache_files = sorted(p for p in world.root.rglob("*") if p.is_file())
    out = {"cache_bytes": sum(p.stat().st_size for p in cache_files),
           "vector_file_bytes": sum(p.stat().st_size for p in world.vector_files()),
           "checkpoint_bytes": sum(p.stat().st_size for p in checkpoints), "checkpoints": len(checkpoints)}
    cases = {"open": (cache_files, lambda: Cache.open(world.root)),
             "open_merge": (cache_files, lambda: _open_and_merge(world.root)),
             "checkpoints_merge": (checkpoints, lambda: _load_and_merge(checkpoints, world.layout))}
    merged = {}
    for state in ("cold", "hot"):
        for name, (files, fn) in cases.items():
            if state == "cold":
                evict(files)
            out[f"{name}_{state}_resident_fraction"] = resident_fraction(files)
            out[f"{name}_{state}_s"], merged[name] = _timed(fn)
            gc.collect()
    out["hash_s"] = _timed(lambda: [sha256_file(p) for p in world.vector_files()])[0]
    out["hash_resident_fraction"] = resident_fraction(world.vector_files())
    a, b = merged["open_merge"], merged["checkpoints_merge"]
    out["checkpoints_rel_l2_diff"] = float((a - b).norm() / a.norm())
    return out


# ---------------------------------------------------------------------------------------- 5. the app

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(tasks: list[str], n: int) -> list[dict]:
    """n different settings (one coefficient moves, as a slider release does), so no memo answers."""
    return [{"method": "task_arithmetic", "scaling": 0.3, "vectors": "tau", "params": {},
             "coefficients": {tasks[i % len(tasks)]: round(-0.9 + 2.8 * (i + 1) / (n + 1), 4)}} for i in range(n)]


def _start_app(cache: Path, device: torch.device, log_path: Path):
    from gradio_client import Client
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--cache", str(cache), "--port", str(port),
                                 "--device", str(device), "--read-only"], stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT)
    deadline = time.time() + 180
    while True:
        try:
            return proc, Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        except Exception:  # noqa: BLE001 - any failure to connect means: not up yet
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                proc.wait()
                tail = " | ".join(log_path.read_text().strip().splitlines()[-3:])
                raise RuntimeError(f"the app did not start: {tail}") from None
            time.sleep(0.5)


def _spread(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
    return {"median_s": statistics.median(ordered), "min_s": ordered[0], "max_s": ordered[-1], "p90_s": p90}


def _round_trips(cache: Path, device: torch.device, warmup: dict, settings: list[dict], log_path: Path):
    """(seconds per /evaluate round trip, the server's own seconds per request), after one warm-up request."""
    proc, client = _start_app(cache, device, log_path)
    try:
        client.predict(**warmup, api_name="/evaluate")
        trips, server = [], []
        for s in settings:
            seconds, response = _timed(partial(client.predict, **s, api_name="/evaluate"))
            trips.append(seconds)
            server.append(response["seconds"])
        return trips, server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _bare_calls(cache: Path, device: torch.device, warmup: dict, settings: list[dict]) -> list[float]:
    from tvexplorer.evaluation import Evaluator
    evaluator = Evaluator(Cache.open(cache), device=device)
    call = lambda s: partial(evaluator.evaluate, s["method"], coefficients=s["coefficients"], scaling=s["scaling"],
                             vectors=s["vectors"])
    call(warmup)()
    return [_timed(call(s))[0] for s in settings]


def bench_app(cache: Path, device: torch.device, requests: int, out_dir: Path) -> dict:
    """Round trips to the app's /evaluate (each with new settings) against Evaluator.evaluate in-process,
    measured after the app has stopped so the two never compete for the cores."""
    warmup, *settings = _settings(Cache.open(cache).tasks, requests + 1)
    trips, server = _round_trips(cache, device, warmup, settings, out_dir / "app.log")
    bare = _bare_calls(cache, device, warmup, settings)
    out = {"cache": str(cache), "device": str(device), "requests": len(trips), "round_trip": _spread(trips),
           "server": _spread(server), "bare": _spread(bare)}
    out["overhead_median_diff"] = out["round_trip"]["median_s"] - out["bare"]["median_s"]  # seconds; noise can make it negative
    return out


# ---------------------------------------------------------------------------------------- targets and entry point

def targets(result: dict) -> list[dict]:
    """The goals this benchmark checks; met is None where a figure is missing."""
    out = []
    merge, fb = result.get("merge", {}).get("methods", {}), result.get("fusionbench", {})
    ta = merge.get("task_arithmetic", {})
    if "bandwidth_fraction" in ta:
        out.append({"goal": "task arithmetic at >= 0.5 x the measured memory bandwidth",
                    "measured": f"{ta['bandwidth_fraction']:.2f} x", "met": ta["bandwidth_fraction"] >= 0.5})
    for m in ("ties", "tsv", "iso_c"):
        row = fb.get("methods", {}).get(m)
        if not fb.get("available") or row is None:
            continue
        used = row if "speedup" in row else row.get("fallback", {})
        if "speedup" in used:
            where = "" if used is row else f" (FusionBench out of memory at {row['tasks']} tasks; at {used['tasks']})"
            same = (f"same but for the exact-zero-sum rule at {used['differing_entries']} entries" if used.get("explained")
                    else f"same={used.get('same')}")
            out.append({"goal": f"{m} >= 10x faster than FusionBench, same result",
                        "measured": f"{used['speedup']:.1f}x, {same}{where}",
                        "met": used["speedup"] >= 10 and bool(used.get("same") or used.get("explained"))})
        else:
            out.append({"goal": f"{m} >= 10x faster than FusionBench, same result",
                        "measured": f"not comparable: {row.get('error')}", "met": None})
    peaks = {m: r["peak_multiple"] for m, r in merge.items() if "peak_multiple" in r}
    if peaks:
        worst = max(peaks, key=peaks.get)
        out.append({"goal": "peak memory of every merge <= 2 x the task vectors",
                    "measured": f"worst {worst} {peaks[worst]:.2f} x", "met": peaks[worst] <= 2})
    ev = result.get("evaluation")
    if ev:
        out.append({"goal": "evaluation overhead <= 10 %", "measured": f"{ev['overhead_pct']:.1f} %",
                    "met": ev["overhead_pct"] <= 10})
    c = result.get("cache")
    if c:
        worst = max(c["open_cold_s"], c["open_hot_s"])
        out.append({"goal": "Cache.open < 1 s", "measured": f"{worst * 1000:.1f} ms (cold or hot, the slower)",
                    "met": worst < 1})
    return out


def _choose(only: list[str] | None) -> set[str]:
    chosen = set(SECTIONS if only is None else only)
    unknown = chosen - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown benchmark section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    if "fusionbench" in chosen:
        chosen.add("merge")  # the comparison needs our merged vectors
    return chosen


def _timed_section(result: dict, name: str, fn: Callable[[], object]) -> object:
    """Log, run and time one part; its wall time goes to result['wall_s'][name], and the share of the
    CPU that other processes used meanwhile to result['others_cpu_share'][name]."""
    _log(name)
    start = _cpu_clock()
    seconds, out = _timed(fn)
    result.setdefault("wall_s", {})[name] = seconds
    result.setdefault("others_cpu_share", {})[name] = _others_share(start)
    gc.collect()
    return out


def _app_section(app_cache: Path, device: torch.device, plan: Plan, tmp: Path) -> dict:
    if not (app_cache / MANIFEST).is_file():
        return {"skipped": f"no cache at {app_cache}"}
    return bench_app(app_cache, device, plan.requests, tmp)


def run(quick: bool = False, only: list[str] | None = None, device: str | torch.device | None = None, *,
        workdir: str | os.PathLike | None = None, app_cache: str | os.PathLike | None = None,
        fusionbench_python: str | os.PathLike | None = None) -> dict:
    """Run the benchmark sections in `only` (default: all of SECTIONS) and return the figures.

    quick: a ~1M-parameter encoder, 3 tasks and a few images (a smoke test). device: evaluation and
    app device (default cuda when available). workdir: where the synthetic files go (default: the
    system temp folder; removed afterwards). app_cache: the cache the app serves (default assets/demo).
    fusionbench_python: the interpreter with fusion-bench (default benchmarks/.venv/bin/python).
    """
    chosen = _choose(only)
    device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    plan = replace(QUICK, encoder=tiny_vit()) if quick else replace(FULL, encoder=vit_b32())
    fb_python = Path(fusionbench_python) if fusionbench_python else FUSIONBENCH_PYTHON
    result = {"mode": plan.name, "sections": [s for s in SECTIONS if s in chosen], "machine": machine(device),
              "code": code_version()}
    result["bandwidth"] = _timed_section(result, "bandwidth", lambda: copy_bandwidth(plan.copy_bytes))
    copy_gbps = result["bandwidth"]["copy_gbps"]
    tmp = Path(tempfile.mkdtemp(prefix="tvexplorer-bench-", dir=workdir))
    try:
        if chosen & {"merge", "evaluation", "cache"}:
            world = _timed_section(result, "inputs", lambda: write_world(tmp / "cache", plan))
            result["inputs"] = {"parameters": world.layout.numel, "tasks": len(world.tasks),
                                "vector_bytes": world.vector_bytes, "dtype": "float32",
                                "model": "tiny ViT" if quick else "ViT-B-32 image encoder"}
        if "merge" in chosen:
            (tmp / "merged").mkdir()
            rows, ours_out = _timed_section(result, "merge", lambda: bench_merge(world, plan, copy_gbps, tmp / "merged"))
            result["merge"] = {"methods": rows, "fresh_process": plan.fresh_process, "device": "cpu"}
        if "fusionbench" in chosen:
            result["fusionbench"] = _timed_section(result, "fusionbench", lambda: bench_fusionbench(
                world, plan, rows, ours_out, copy_gbps, tmp / "merged", fb_python if fb_python.exists() else None))
        if "evaluation" in chosen:
            result["evaluation"] = _timed_section(result, "evaluation", lambda: bench_evaluation(world, device))
        if "cache" in chosen:
            result["cache"] = _timed_section(result, "cache", lambda: bench_cache(world, tmp))
        if "app" in chosen:
            app = Path(app_cache) if app_cache else ROOT / "assets" / "demo"
            result["app"] = _timed_section(result, "app", lambda: _app_section(app, device, plan, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["machine"]["load_average_at_end"] = os.getloadavg()[0]
    result["targets"] = targets(result)
    return result


# ---------------------------------------------------------------------------------------- the report

def _gb(x) -> str:
    return "-" if x is None else f"{x / GB:.2f} GB"


def _s(x) -> str:
    if x is None:
        return "-"
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


def _pct(x) -> str:
    return "unknown" if x is None else f"{100 * x:.0f} %"


def _table(rows: list[list], header: list[str], text_last: bool = False) -> list[str]:
    """Numbers right-aligned; the first column, and the last when it holds text, left-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    left = {0, len(header) - 1} if text_last else {0}
    return ["  ".join(str(c).ljust(w) if i in left else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in [header, *rows]]


def _indent(lines: list[str]) -> list[str]:
    return ["  " + x for x in lines]


def _report_header(result: dict) -> list[str]:
    m, code = result["machine"], result["code"]
    gpu = f" ({m['gpu']})" if m.get("gpu") else ""
    edits = f", with uncommitted {', '.join(code['uncommitted'])}" if code["uncommitted"] else ""
    lines = [(f"tvexplorer bench ({result['mode']}): {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), "
              f"{_gb(m['ram_bytes'])} RAM ({_gb(m['available_at_start_bytes'])} available), torch {m['torch']}, device {m['device']}{gpu}"),
             (f"Code: commit {code['commit'] or '?'}{edits}; load average {m['load_average_at_start']:.2f} at start, "
              f"{m['load_average_at_end']:.2f} at end (1-minute averages; they count this benchmark's own processes too)")]
    if "inputs" in result:
        i = result["inputs"]
        lines.append(f"Inputs: {i['tasks']} task vectors of {i['parameters']:,} parameters ({i['model']}, random), "
                     f"{i['dtype']}, {_gb(i['vector_bytes'])} in all")
    return lines


def _report_merge(result: dict) -> list[str]:
    merge, bw = result["merge"], result["bandwidth"]
    process = "a fresh process per merge" if merge["fresh_process"] else "one process for all"
    rows = []
    for m, r in merge["methods"].items():
        if r.get("error"):
            rows.append([m, "failed", "", "", "", "", "", "", r["error"][:80]])
        else:
            rows.append([m, _s(r["best_s"]), f"({_s(r['first_s'])})", r["calls"], f"{r['gbps']:.2f}",
                         _pct(r["bandwidth_fraction"]), _gb(r.get("peak_bytes")),
                         f"{r['peak_multiple']:.2f} x" if "peak_multiple" in r else "-", _pct(r["others_cpu_share"])])
    return ["", f"Merge (ours; CPU; memory-mapped float32 inputs; best of n calls, the first, after mapping, in brackets; {process})",
            (f"  against the memory bandwidth: {bw['copy_gbps']:.1f} GB/s (dst.copy_(src) of {_gb(bw['buffer_bytes'])}, "
             "read + write counted, best of 5)"),
            *_indent(_table(rows, ["method", "time", "(first)", "n", "GB/s read", "of bandwidth", "peak memory",
                                   "x task vectors", "others' CPU"])),
            ("  peak memory: the merge process's peak resident size above its size before it touched an input; "
             "it includes the input pages read; others' CPU: share of all cores other processes used meanwhile")]


def _fb_row(name: str, r: dict) -> list:
    multiple = lambda k: f"{r[k]:.2f} x" if r.get(k) is not None else "-"
    theirs = _s(r["theirs_s"]) if "theirs_s" in r else ("out of memory" if r.get("out_of_memory") else "failed")
    if r.get("out_of_memory"):
        same = f"- (out of memory: it may allocate {_gb(r.get('guard_bytes'))} beyond its inputs, and needed more)"
    elif r.get("explained"):
        same = (f"yes but {r['differing_entries']} entries, where ours is 0 (the exact-zero-sum rule, note 2) "
                f"({r['rel_max_diff']:.1e}, {r['rel_l2_diff']:.1e})")
    elif "same" in r:
        same = f"{'yes' if r['same'] else 'NO'} ({r['rel_max_diff']:.1e}, {r['rel_l2_diff']:.1e})"
    else:
        same = (r.get("error") or "-")[:90]
    others = f"{_pct(r.get('ours_others_cpu_share'))} / {_pct(r.get('theirs_others_cpu_share'))}"
    return [name, r["tasks"], _s(r.get("ours_s")), theirs, f"{r['ratio']:.3f}" if "ratio" in r else "-",
            f"{r['speedup']:.1f}x" if "speedup" in r else "-", multiple("ours_peak_multiple"),
            multiple("theirs_peak_multiple"), others, same]


def _report_fusionbench(result: dict) -> list[str]:
    fb = result["fusionbench"]
    if not fb["available"]:
        return ["", "Against FusionBench: skipped, FusionBench is not installed; install it with", f"    {fb['install']}"]
    rows = []
    for m, r in fb["methods"].items():
        rows.append(_fb_row(m, r))
        if "fallback" in r:
            rows.append(_fb_row(f"  {m}, first {r['fallback']['tasks']} tasks", r["fallback"]))
    guard = (f"; guarded at the memory available minus {_gb(fb['reserve_bytes'])}, an allocation past it is reported "
             "as out of memory")
    return ["", (f"Against FusionBench {fb.get('version') or '?'} (its own functions on the same inputs, accelerator cpu, "
                 f"one call each{guard})"),
            *_indent(_table(rows, ["method", "tasks", "ours", "FusionBench", "ours/theirs", "speedup", "peak ours",
                                   "peak theirs", "others' CPU", "same weights (rel max|d|, rel L2)"], text_last=True)),
            f"  same weights: |ours - theirs| / |ours| (L2) <= {SAME_RESULT_RTOL:g}; rel max|d| is max|ours - theirs| / max|ours|",
            "  semantic differences, read from both sources:", *[f"  {i}. {n}" for i, n in enumerate(fb["notes"], 1)]]


def _report_evaluation(result: dict) -> list[str]:
    ev = result["evaluation"]
    return ["", (f"Evaluation ({ev['images']} images at {ev['image_size']} px, device {ev['device']}, best of {ev['calls']} "
                 "calls of each, alternated)"),
            f"  Evaluator.accuracy(delta):            {ev['evaluator_images_per_s']:8.1f} images/s ({_s(ev['evaluator_s'])})",
            f"  bare visual(x) loop, inference_mode:  {ev['bare_images_per_s']:8.1f} images/s ({_s(ev['bare_s'])})",
            f"  overhead: {ev['overhead_pct']:.1f} %"]


def _report_cache(result: dict) -> list[str]:
    c = result["cache"]
    rows = [[label, _s(c[f"{k}_cold_s"]), _pct(c[f"{k}_cold_resident_fraction"]), _s(c[f"{k}_hot_s"]),
             _pct(c[f"{k}_hot_resident_fraction"])]
            for k, label in (("open", "Cache.open"), ("open_merge", "Cache.open + task arithmetic"),
                             ("checkpoints_merge", f"torch.load of {c['checkpoints']} checkpoints + task arithmetic"))]
    return ["", (f"Opening a cache ({_gb(c['cache_bytes'])}, of which vector files holding tau, tau1 and g0 "
                 f"{_gb(c['vector_file_bytes'])}; the checkpoints {_gb(c['checkpoint_bytes'])})"),
            *_indent(_table(rows, ["", "cold", "resident", "hot", "resident"])),
            ("  cold: the files evicted with posix_fadvise(DONTNEED) first; resident: share of the files' pages in the "
             "page cache (mincore) just before timing"),
            (f"  the first use of each vector file checks its sha256: {_s(c['hash_s'])} for all of them "
             f"(hot, {_pct(c['hash_resident_fraction'])} resident)"),
            (f"  same merged weights from the checkpoints: rel L2 difference {c['checkpoints_rel_l2_diff']:.1e} "
             "(float32 rounding of theta0 + tau)")]


def _report_app(result: dict) -> list[str]:
    a = result["app"]
    if "skipped" in a:
        return ["", f"App: skipped ({a['skipped']})"]
    row = lambda label, s: [label, _s(s["median_s"]), _s(s["min_s"]), _s(s["p90_s"]), _s(s["max_s"])]
    rows = [row("/evaluate round trip (gradio_client)", a["round_trip"]), row("  of which server-side evaluate", a["server"]),
            row("bare Evaluator.evaluate in-process", a["bare"])]
    return ["", f"App: slider release to numbers ({a['cache']}, {a['requests']} requests with new settings, device {a['device']})",
            *_indent(_table(rows, ["", "median", "min", "p90", "max"])),
            f"  the app's cost over the bare call (medians): {a['overhead_median_diff'] * 1000:.1f} ms"]


def format_report(result: dict) -> str:
    lines = _report_header(result)
    lines.append(f"Memory bandwidth: {result['bandwidth']['copy_gbps']:.1f} GB/s")
    for key, part in (("merge", _report_merge), ("fusionbench", _report_fusionbench), ("evaluation", _report_evaluation),
                      ("cache", _report_cache), ("app", _report_app)):
        if key in result:
            lines += part(result)
    lines += ["", "Wall time: " + ", ".join(f"{k} {_s(v)}" for k, v in result["wall_s"].items()),
              ("CPU used by other processes during each part (share of all cores): "
               + ", ".join(f"{k} {_pct(v)}" for k, v in result["others_cpu_share"].items())),
              "", "Targets"]
    for t in result["targets"]:
        mark = {True: "met", False: "NOT MET", None: "unknown"}[t["met"]]
        lines.append(f"  [{mark}] {t['goal']}: {t['measured']}")
    return "\n".join(lines)
