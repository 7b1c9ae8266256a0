"""Open a cache and read every task vector in a fresh process: before (no record of verified files,
so every file is hashed, as on its first use) and after (the record that an earlier run left).

    python benchmarks/verified_stamps.py [--tasks 8] [--params 87849216] [--repeats 3] [--dir DIR]

Writes a synthetic cache of the given size (default: 8 task vectors of ViT-B/32's image encoder,
float32, tau only, as `import` makes them) into a temporary folder under DIR, dated an hour back as
a cache written earlier would be. The two cases alternate, each in a new process with its own
XDG_CACHE_HOME, after one untimed read that brings the files into the page cache, so the difference
is the hashing alone. Prints JSON: the medians in seconds (open + read, inside the process) and
their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tvexplorer.core.files import write_tensors
from tvexplorer.core.layout import Layout
from tvexplorer.core.manifest import Manifest, write_manifest
from tvexplorer.core.records import Encoder, ModelRecord, SplitSizes, TaskRecord

CHILD = """
import sys, time
from tvexplorer.core.cache import Cache
start = time.perf_counter()
cache = Cache.open(sys.argv[1])
total = sum(float(v.sum()) for v in cache.vectors("tau").values())
print(time.perf_counter() - start)
"""


def write_cache(root: Path, tasks: int, params: int) -> None:
    layout = Layout(("w",), ((params,),))
    files = {"base.safetensors": write_tensors(root, "base.safetensors", {"w": torch.zeros(params)})}
    names = [f"task{i}" for i in range(tasks)]
    for i, name in enumerate(names):
        tau = torch.empty(params).normal_(0.0, 1e-3, generator=torch.Generator().manual_seed(i))
        files[f"vectors/{name}.safetensors"] = write_tensors(root, f"vectors/{name}.safetensors", {"tau": tau})
    # The encoder description is nominal: this benchmark opens the cache and reads vectors, never builds a model.
    encoder = Encoder(1, {}, quick_gelu=False, image_size=1, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    write_manifest(root, Manifest(created_by="benchmarks/verified_stamps.py (synthetic)",
                                  model=ModelRecord("synthetic", None, encoder), layout=layout, vector_dtype="float32",
                                  vector_kinds=("tau",), tasks=tuple(TaskRecord(n, (), (), {}, SplitSizes(0, 0, 0)) for n in names),
                                  training=None, files=files))
    hour_ago = time.time() - 3600
    for path in root.rglob("*.safetensors"):
        os.utime(path, (hour_ago, hour_ago))


def open_and_read(root: Path, record_home: Path) -> float:
    env = {**os.environ, "XDG_CACHE_HOME": str(record_home)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(root)], env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.split()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--params", type=int, default=87_849_216)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dir", default=None, help="where the temporary cache goes (default: the temp folder)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tvexplorer-stamps-", dir=args.dir))
    try:
        write_cache(work / "cache", args.tasks, args.params)
        stamped = work / "stamped"
        open_and_read(work / "cache", stamped)  # untimed: the page cache, and the record for "after"
        before, after = [], []
        for i in range(args.repeats):
            before.append(open_and_read(work / "cache", work / f"empty-{i}"))
            after.append(open_and_read(work / "cache", stamped))
        vector_bytes = sum(p.stat().st_size for p in (work / "cache" / "vectors").iterdir())
        print(json.dumps({"tasks": args.tasks, "params": args.params, "vector_bytes": vector_bytes,
                          "before_s": statistics.median(before), "after_s": statistics.median(after),
                          "ratio": statistics.median(before) / statistics.median(after),
                          "before_all_s": before, "after_all_s": after}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
