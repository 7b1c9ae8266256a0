"""Merge workers: each merge runs in a subprocess under a memory guard, so that its peak resident
memory is its own and running out of memory is a row of the report, not the end of the run."""
from __future__ import annotations

import gc
import json
import resource
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import torch

from .machine import cpu_clock, meminfo_bytes, others_share, proc_field
from .plan import MERGES, Plan, ROOT, log, timed
from .world import World, mapped_tau
from tvexplorer.core.errors import described, first_line
from tvexplorer.core.layout import Layout
from tvexplorer.core.manifest import read_manifest
from tvexplorer.merging import merge_flat


def _status_bytes(field: str) -> int:
    value = proc_field("/proc/self/status", field)
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
            seconds, merged = timed(merge)
            record["seconds"].append(seconds)
    except Exception as e:  # noqa: BLE001 - a failing merge is a row of the report, not the end of the run
        message = first_line(e).lower()
        record["out_of_memory"] = isinstance(e, MemoryError) or (
            isinstance(e, RuntimeError) and ("alloc" in message or "memory" in message))
        record["error"] = described(e)[:300]
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
    layout = read_manifest(root).layout
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
    with open(log_path, "w") as log_file:
        try:
            proc = subprocess.run([*command, str(spec_path)], stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return f"timed out after {timeout_s} s"
    return None if proc.returncode == 0 else _exit_reason(proc.returncode)


def run_workers(command: list[str], world: World, tasks: list[str], methods: list[str], plan: Plan,
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
                "allowance_bytes": max(0, meminfo_bytes("MemAvailable") - memory_reserve())}
        log(f"{tag}: {', '.join(group)} on {len(tasks)} tasks")
        start = cpu_clock()
        failure = _worker(command, spec, out_dir / f"{name}.spec.json", out_dir / f"{name}.log", plan.timeout_s)
        others = others_share(start)
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


def memory_reserve() -> int:
    """Memory left to everyone else (other users of the machine, the page cache) while a worker runs."""
    return max(4 << 30, meminfo_bytes("MemTotal") // 4)


def _exit_reason(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        return f"killed by {name}" + (" (the kernel's OOM killer?)" if name == "SIGKILL" else "")
    return f"exited with status {code}"
