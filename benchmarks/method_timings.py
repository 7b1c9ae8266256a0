"""Merge time of every registry method at ViT-B/32 size, each beside task arithmetic in the same run.

8 synthetic float16 task vectors in the real ViT-B/32 image-encoder layout (random weights, the
layout that benchmarks/bench builds); each method runs between two task-arithmetic merges, and the
report gives its time over their mean, a ratio that a shared CPU disturbs less than seconds. A
task-conditioned method's time is its merge plus one task's delta (what evaluating one task costs).
WUDI is timed at a few steps and at 0 steps, and its default (300 steps) extrapolated from the two.

    OMP_NUM_THREADS=1 python benchmarks/method_timings.py [--methods iso_cts emr ...] [--tasks 8] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # this tree's tvexplorer and the bench suite
from bench.plan import vit_b32  # noqa: E402
from tvexplorer.core.layout import Layout  # noqa: E402
from tvexplorer.merging import METHODS, TaskDeltas, merge_flat  # noqa: E402
from tvexplorer.models.clip import build_image_encoder  # noqa: E402

WUDI_STEPS = 3


def vit_b32_layout() -> Layout:
    return Layout.of(dict(build_image_encoder(vit_b32()).named_parameters()))


def timed(method: str, vectors: dict, layout: Layout, **params) -> float:
    start = time.perf_counter()
    out = merge_flat(method, vectors, layout, **params)
    if isinstance(out, TaskDeltas):
        out[next(iter(out))]
    return time.perf_counter() - start


def beside_task_arithmetic(method: str, vectors: dict, layout: Layout, **params) -> dict:
    before = timed("task_arithmetic", vectors, layout)
    seconds = timed(method, vectors, layout, **params)
    after = timed("task_arithmetic", vectors, layout)
    ta = (before + after) / 2
    return {"seconds": round(seconds, 3), "task_arithmetic_seconds": round(ta, 3), "ratio": round(seconds / ta, 2)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=[m for m in METHODS if m != "task_arithmetic"])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    layout = vit_b32_layout()
    g = torch.Generator().manual_seed(0)
    vectors = {f"task{i}": torch.empty(layout.numel, dtype=torch.float16).normal_(0, 1e-3, generator=g)
               for i in range(args.tasks)}
    report = {"parameters": layout.numel, "tasks": args.tasks, "dtype": "float16",
              "threads": torch.get_num_threads(), "methods": {}}
    timed("task_arithmetic", vectors, layout)  # first touch of the inputs, outside every measurement
    for method in args.methods:
        if method == "wudi":
            row = beside_task_arithmetic(method, vectors, layout, steps=WUDI_STEPS)
            setup = beside_task_arithmetic(method, vectors, layout, steps=0)
            per_step = (row["seconds"] - setup["seconds"]) / WUDI_STEPS
            default = METHODS["wudi"].params[0].default
            row |= {"steps": WUDI_STEPS, "seconds_at_0_steps": setup["seconds"], "seconds_per_step": round(per_step, 3),
                    f"extrapolated_seconds_at_{default}_steps": round(setup["seconds"] + default * per_step, 1)}
        else:
            row = beside_task_arithmetic(method, vectors, layout)
        report["methods"][method] = row
        print(method, json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
