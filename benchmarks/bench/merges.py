"""Sections 1 and 2: our merges against the memory bandwidth, and against FusionBench's implementations."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from .plan import FUSIONBENCH_INSTALL, FUSIONBENCH_SCRIPT, GB, MERGES, Plan, SAME_RESULT_RTOL, SEMANTIC_NOTES
from .workers import memory_reserve, run_workers
from .world import World
from tvexplorer.core.files import mmap_tensors


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
               "import sys; sys.path.insert(1, 'benchmarks'); from bench.workers import merge_worker; merge_worker(sys.argv[1])"]


def bench_merge(world: World, plan: Plan, copy_gbps: float, out_dir: Path, tasks: list[str] | None = None,
                methods: list[str] | None = None, tag: str = "ours") -> tuple[dict, dict[str, str]]:
    """Our merges in subprocesses; returns the rows and the files holding the merged vectors."""
    tasks = list(tasks or world.tasks)
    records, _ = run_workers(OURS_WORKER, world, tasks, list(methods or MERGES), plan, out_dir, tag)
    vector_bytes = 4 * world.layout.numel * len(tasks)
    return ({r["method"]: _merge_row(r, vector_bytes, copy_gbps) for r in records},
            {r["method"]: r["output"] for r in records if r.get("output")})


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
    theirs, extra = run_workers(command, world, list(world.tasks), list(MERGES), plan, out_dir, "fusionbench")
    result = {"available": True, "python": str(python), "version": extra.get("fusion_bench_version"),
              "accelerator": "cpu", "reserve_bytes": memory_reserve(), "notes": list(SEMANTIC_NOTES),
              "methods": _comparison_rows(ours, ours_out, theirs, len(world.tasks), world.vector_bytes)}
    half = list(world.tasks[: len(world.tasks) // 2])
    for m, row in result["methods"].items():
        if row["out_of_memory"] and len(half) >= 2:
            fallback = replace(plan, fresh_process=True)
            sub = out_dir / f"half-{m}"
            sub.mkdir()
            ours_half, ours_half_out = bench_merge(world, fallback, copy_gbps, sub, half, [m], "ours-half")
            theirs_half, _ = run_workers(command, world, half, [m], fallback, sub, "fusionbench-half")
            row["fallback"] = _comparison_rows(ours_half, ours_half_out, theirs_half, len(half),
                                               4 * world.layout.numel * len(half))[m]
    return result
