"""A short check of the GPU path, each step timed: the device, a quick demo cache built on it, ATM rounds,
the slider's exact evaluation, the app's CPU evaluator moved to the device (ZeroGPU's exact evaluation),
the ViT-B/32 image tower and merges at ViT-B/32 size (the CPU beside the GPU where that is cheap, in the
same run).

    python benchmarks/gpu_check.py [--device cuda] [--quick] [--cache DIR] [--json FILE]

With --device cuda (the default) and no CUDA GPU visible to torch it stops at once with one line and exit
status 3. --quick: one ATM round, 3 evaluations, a small tower batch and small merges (the test suite runs
`--device cpu --quick`). --cache DIR: start from a copy of that cache instead of building the quick demo.
benchmarks/gpu_check.sh runs it on cuda; on an H100 the whole run is meant to take a few minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # this tree's tvexplorer and the bench suite
from bench.plan import tiny_vit, vit_b32  # noqa: E402
from tvexplorer.core.cache import Cache  # noqa: E402
from tvexplorer.core.layout import Layout  # noqa: E402
from tvexplorer.core.records import Encoder  # noqa: E402
from tvexplorer.demo.build import build_demo  # noqa: E402
from tvexplorer.merging import merge_flat  # noqa: E402
from tvexplorer.models.clip import build_image_encoder, run_blocks_in_bfloat16  # noqa: E402
from tvexplorer.science.atm import run_atm  # noqa: E402
from tvexplorer.science.evaluation import Evaluator  # noqa: E402

NO_GPU_EXIT = 3
MERGES = ("task_arithmetic", "ties", "tsv")   # elementwise, top-k and sort, per-layer SVDs
CPU_MERGES = ("task_arithmetic", "ties")      # beside the GPU: the SVDs would take minutes on a CPU


def check_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU here (torch {torch.__version__}: torch.cuda.is_available() is False); "
              "run it on a machine with an NVIDIA GPU", file=sys.stderr)
        raise SystemExit(NO_GPU_EXIT)
    return device


def machine(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return info


def timed(device: torch.device, fn):
    """(fn(), seconds), the device's queued work included."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - started


def demo_cache(device: torch.device, work: Path, source: str | None) -> tuple[Cache, dict]:
    if source:
        shutil.copytree(source, work / "cache")
        return Cache.open(work / "cache"), {"copied_from": source}
    cache, seconds = timed(device, lambda: build_demo(work / "cache", quick=True, device=str(device)))
    return cache, {"seconds": round(seconds, 2)}


def atm_rounds(cache: Cache, device: torch.device, rounds: int) -> dict:
    marks = [time.perf_counter()]
    _, seconds = timed(device, lambda: run_atm(cache, rounds, device=str(device), on_round=lambda r: marks.append(time.perf_counter())))
    return {"rounds": rounds, "seconds": round(seconds, 2), "per_round": [round(b - a, 2) for a, b in zip(marks, marks[1:])]}


def slider(cache: Cache, device: torch.device, releases: int) -> dict:
    """Exact evaluations of task arithmetic at `releases` different settings (each a memo miss), as slider releases make."""
    evaluator, build_seconds = timed(device, lambda: Evaluator(cache, device=device))
    task = cache.tasks[0]
    seconds = [timed(device, lambda i=i: evaluator.evaluate("task_arithmetic", coefficients={task: 1.0 + 0.01 * i}))[1]
               for i in range(releases)]
    images = sum(len(s) for s in evaluator.sets.values())
    return {"evaluator_seconds": round(build_seconds, 3), "first": round(seconds[0], 3),
            "median": round(statistics.median(seconds[1:] or seconds), 3), "images": images}


def moved(cache: Cache, device: torch.device) -> dict:
    """The ZeroGPU path of an exact evaluation (app/work.py exact_accuracy): the app's evaluator, built on the
    CPU, moved to `device` for one call; its numbers beside the CPU's (bfloat16 on a GPU may move a few images)."""
    on_cpu = Evaluator(cache, device="cpu", precision="auto")
    there, move_seconds = timed(device, lambda: on_cpu.on(device))
    settings = dict(scaling=0.4)
    accuracy, seconds = timed(device, lambda: dict(there.evaluate_tasks("task_arithmetic", **settings)))
    reference = dict(on_cpu.evaluate_tasks("task_arithmetic", **settings))
    return {"device": str(there.device), "precision": there.precision, "move_seconds": round(move_seconds, 3),
            "evaluate_seconds": round(seconds, 3),
            "largest_difference_to_cpu": round(max(abs(accuracy[t] - reference[t]) for t in reference), 4)}


def tower(device: torch.device, batch: int, encoder_info: Encoder) -> dict:
    """Images/s of an image tower's forward pass in float32 and, on a GPU, with bfloat16 blocks (the Evaluator's precisions)."""
    encoder = build_image_encoder(encoder_info).to(device)
    size = encoder_info.image_size
    images = torch.randn(batch, 3, size, size, device=device)
    out = {"batch": batch, "image_size": size}
    precisions = ("float32", "bfloat16") if device.type == "cuda" else ("float32",)
    with torch.inference_mode():
        for precision in precisions:
            if precision == "bfloat16":
                run_blocks_in_bfloat16(encoder)
            timed(device, lambda: encoder(images))  # warm-up
            _, seconds = timed(device, lambda: [encoder(images) for _ in range(3)])
            out[f"{precision}_images_per_second"] = round(3 * batch / seconds, 1)
    return out


def merges(device: torch.device, layout: Layout, tasks: int, methods) -> dict:
    g = torch.Generator().manual_seed(0)
    vectors = {f"task{i}": torch.empty(layout.numel, dtype=torch.float16).normal_(0, 1e-3, generator=g).to(device)
               for i in range(tasks)}
    out = {"parameters": layout.numel, "tasks": tasks}
    for method in methods:
        _, out[f"{method}_seconds"] = timed(device, lambda method=method: merge_flat(method, vectors, layout))
        out[f"{method}_seconds"] = round(out[f"{method}_seconds"], 3)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="small sizes: one ATM round, 3 evaluations, small tower and merges")
    p.add_argument("--cache", default=None, help="start from a copy of this cache instead of building the quick demo")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    device = check_device(args.device)
    cpu = torch.device("cpu")
    report = {"machine": machine(device)}

    def step(name, fn):
        started = time.perf_counter()
        report[name] = fn()
        print(f"{name}: {json.dumps(report[name])} ({time.perf_counter() - started:.1f} s)", flush=True)

    print(f"machine: {json.dumps(report['machine'])}", flush=True)
    with tempfile.TemporaryDirectory(prefix="tvexplorer-gpu-check-") as work:
        cache = None

        def build():
            nonlocal cache
            cache, out = demo_cache(device, Path(work), args.cache)
            return out
        step("demo_cache", build)
        step("atm", lambda: atm_rounds(cache, device, 1 if args.quick else 2))
        releases = 3 if args.quick else 20
        step("slider", lambda: slider(cache, device, releases))
        if device.type == "cuda":
            step("slider_cpu", lambda: slider(cache, cpu, 3))
        step("moved_evaluator", lambda: moved(cache, device))
        encoder, batch = (tiny_vit(), 8) if args.quick else (vit_b32(), 250)
        step("tower", lambda: tower(device, batch, encoder))
        layout = Layout.of(dict(build_image_encoder(encoder).named_parameters()))
        tasks = 3 if args.quick else 8
        step("merges", lambda: merges(device, layout, tasks, MERGES))
        if device.type == "cuda":
            step("merges_cpu", lambda: merges(cpu, layout, tasks, CPU_MERGES))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
