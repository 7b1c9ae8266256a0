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

import gc
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from .machine import cpu_clock, others_share, code_version, copy_bandwidth, machine
from .merges import bench_fusionbench, bench_merge
from .plan import FULL, MERGES, FUSIONBENCH_PYTHON, Plan, QUICK, ROOT, SECTIONS, log, timed, tiny_vit, vit_b32
from .report import format_report, targets
from .timings import bench_app, bench_cache, bench_evaluation
from .world import mapped_tau, write_world
from tvexplorer.core.device import resolve_device
from tvexplorer.core.manifest import MANIFEST

__all__ = ["SECTIONS", "MERGES", "QUICK", "run", "format_report", "targets", "bench_fusionbench"]


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
    log(name)
    start = cpu_clock()
    seconds, out = timed(fn)
    result.setdefault("wall_s", {})[name] = seconds
    result.setdefault("others_cpu_share", {})[name] = others_share(start)
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
    device = resolve_device(device)
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
            delta = mapped_tau(world.root, [world.tasks[0]])[world.tasks[0]]
            repeats = 1 if quick else 4
            result["evaluation"] = _timed_section(result, "evaluation", lambda: bench_evaluation(world.root, device, delta, repeats))
            demo = Path(app_cache) if app_cache else ROOT / "assets" / "demo"
            if (demo / MANIFEST).is_file():
                result["evaluation_demo"] = _timed_section(result, "evaluation_demo", lambda: bench_evaluation(demo, device, None, repeats))
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
