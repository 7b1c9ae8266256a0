"""FusionBench's own merges on the benchmark's inputs: the worker `benchmarks/bench` runs with the
interpreter of benchmarks/.venv (made by benchmarks/setup.sh).

    benchmarks/.venv/bin/python benchmarks/fusionbench_ref.py SPEC.json

Each job converts the memory-mapped task vectors into what the FusionBench function takes (models
for task arithmetic, a [T, P] stack for TIES, state dicts for TSV-M and Iso-C) before the timed call,
and its result back to a flat vector after it; bench.workers.run_jobs times the call and records
its peak memory.
"""
from __future__ import annotations

import sys
from importlib.metadata import version

import torch
from fusion_bench.method.isotropic_merging.iso_utils import iso_c
from fusion_bench.method.task_arithmetic.task_arithmetic import TaskArithmeticAlgorithm
from fusion_bench.method.task_singular_vector.utils.TSVM_utils import (
    compute_and_sum_svd_mem_reduction,
)
from fusion_bench.method.ties_merging.ties_merging_utils import ties_merging
from torch import nn

from bench.workers import run_jobs  # benchmarks/bench/, beside this script
from tvexplorer.core.layout import Layout

ACCELERATOR = "cpu"  # ours merges on the CPU too (the app's task vectors are memory-mapped files)


def in_memory(vectors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Copies in ordinary memory, as FusionBench holds the checkpoints it has loaded."""
    return [torch.empty_like(v).copy_(v) for v in vectors.values()]


def module_of(layout: Layout, flat: torch.Tensor) -> nn.Module:
    """A module whose parameters are `flat`'s named views, so that FusionBench's model API sees our layout."""
    root = nn.Module()
    for name, view in layout.unflatten(flat).items():
        *path, leaf = name.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, nn.Parameter(view, requires_grad=False))
    return root


def task_arithmetic(layout: Layout, flats: list[torch.Tensor]):
    # An all-zero pretrained model makes the fine-tuned models the task vectors themselves. The
    # algorithm class, not the module-level task_arithmetic_merge(), which in 0.2.33 raises a
    # TypeError on any nn.Module (state_dict(keep_vars=True) Parameters meet plain Tensors in
    # state_dict_add). It loads the merge into the pretrained model's parameters, i.e. into `base`.
    base = torch.zeros(layout.numel)
    pool = {"_pretrained_": module_of(layout, base), **{f"task{i}": module_of(layout, f) for i, f in enumerate(flats)}}
    algorithm = TaskArithmeticAlgorithm(scaling_factor=1.0)
    return (lambda: algorithm.run(pool)), (lambda _: base)


def ties(layout: Layout, flats: list[torch.Tensor], k: float):
    stacked = torch.stack(flats)
    flats.clear()
    # merge_func "mean": the disjoint mean of the entries that agree with the elected sign, as ours
    return (lambda: ties_merging(stacked, reset_thresh=k, merge_func="mean")), (lambda merged: merged)


def per_layer(function):
    def prepare(layout: Layout, flats: list[torch.Tensor]):
        task_vectors = [layout.unflatten(f) for f in flats]
        return (lambda: function(task_vectors, accelerator=ACCELERATOR)), layout.flatten
    return prepare


PREPARE = {"task_arithmetic": task_arithmetic, "ties": ties, "tsv": per_layer(compute_and_sum_svd_mem_reduction),
           "iso_c": per_layer(iso_c)}


def prepare(job: dict, layout: Layout, vectors: dict[str, torch.Tensor]):
    return PREPARE[job["method"]](layout, in_memory(vectors), **job["params"])


if __name__ == "__main__":
    run_jobs(sys.argv[1], prepare, extra={"fusion_bench_version": version("fusion-bench")})
