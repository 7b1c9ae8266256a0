"""RegMean's merge at ViT-B/32 size: 8 random task vectors (memory-mapped float32 files) and 8 tasks of
synthetic input Gram matrices (one safetensors file per task, read as the cache's are), against task
arithmetic on the same vectors; time and peak resident memory above the baseline, as a multiple of the
task vectors' size.

    OMP_NUM_THREADS=1 python benchmarks/regmean_merge.py [--tasks 8] [--dir /tmp/regmean-bench] [--repeats 1]

No weights are needed: the layout comes from open_clip's ViT-B-32 config. Writing the inputs takes a
few GB of disk (about 4.3 GB of Grams and 2.8 GB of vectors at 8 tasks); they are reused if present.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # this tree's tvexplorer and the bench suite

from tvexplorer.core.layout import Layout  # noqa: E402
from tvexplorer.merging import merge_flat  # noqa: E402
from tvexplorer.science.grams import StoredGrams  # noqa: E402


def vit_b32_layout_and_axes() -> tuple[Layout, dict[str, int]]:
    from bench.plan import vit_b32
    from tvexplorer.models.clip import build_image_encoder
    encoder = build_image_encoder(vit_b32())
    layout = Layout.of(dict(encoder.named_parameters()))
    axes = {n: 1 for n in layout.names if n.endswith(("in_proj_weight", "out_proj.weight", "c_fc.weight", "c_proj.weight"))}
    return layout, {**axes, "proj": 0}


def make_inputs(folder: Path, tasks: int) -> None:
    layout, axes = vit_b32_layout_and_axes()
    shapes = dict(zip(layout.names, layout.shapes))
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for t in range(tasks):
        vector = folder / f"tau{t}.f32"
        if not vector.exists():
            (torch.randn(layout.numel, generator=g) * 1e-3).numpy().tofile(vector)
        grams = folder / f"grams{t}.safetensors"
        if not grams.exists():
            out = {}
            for name, axis in axes.items():
                n = shapes[name][axis]
                low_rank = torch.randn(n, 64, generator=g)
                out[name] = low_rank @ low_rank.T / 64 + 0.1 * torch.eye(n)
            save_file(out, str(grams))
    (folder / "layout.json").write_text(json.dumps({"layout": layout.to_json(), "axes": axes}))


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def worker(folder: Path, tasks: int, method: str) -> dict:
    spec = json.loads((folder / "layout.json").read_text())
    layout, axes = Layout.from_json(spec["layout"]), spec["axes"]
    shapes = dict(zip(layout.names, layout.shapes))
    vectors = {f"t{t}": torch.from_numpy(np.memmap(folder / f"tau{t}.f32", dtype=np.float32, mode="c"))
               for t in range(tasks)}
    grams = {f"t{t}": StoredGrams(folder / f"grams{t}.safetensors", axes,
                                  {n: (shapes[n][a],) * 2 for n, a in axes.items()}) for t in range(tasks)}
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS, so the peak below is the merge's own
    baseline = _status("VmRSS")
    start = time.perf_counter()
    kwargs = {"task_inputs": grams} if method == "regmean" else {}
    merge_flat(method, vectors, layout, **kwargs)
    seconds = time.perf_counter() - start
    vector_bytes = 4 * layout.numel * tasks
    return {"method": method, "tasks": tasks, "parameters": layout.numel, "seconds": round(seconds, 2),
            "peak_bytes": _status("VmHWM") - baseline, "peak_multiple": round((_status("VmHWM") - baseline) / vector_bytes, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--dir", type=Path, default=Path("/tmp/regmean-bench"))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.dir, args.tasks, args.worker)))
        return
    make_inputs(args.dir, args.tasks)
    for _ in range(args.repeats):
        for method in ("task_arithmetic", "regmean"):  # each in a fresh process, so its peak is its own
            out = subprocess.run([sys.executable, __file__, "--dir", str(args.dir), "--tasks", str(args.tasks),
                                  "--worker", method], capture_output=True, text=True, check=True)
            print(out.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
