"""Images per second of the ViT-B/32 image tower on this CPU, as `space` times a cache's encoder to size a CPU
Space's exact evaluation.

    python benchmarks/cpu_encoder.py [--threads 1 2] [--seconds 8]

Builds the tower from open_clip's config with random weights (nothing is downloaded), then times it with
tvexplorer.pipeline.evalplan.measure_encoder at each thread count: images/s of the fastest timed batch (what
`space` plans with) and of the median one, and the load of one set of merged weights. The machine's load
average is printed beside them: on a shared machine the median is low.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # this tree's tvexplorer and the bench suite
from bench.plan import vit_b32  # noqa: E402
from tvexplorer.pipeline.evalplan import measure_encoder  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seconds", type=float, default=8.0)
    args = p.parse_args()
    for threads in args.threads:
        t = measure_encoder(vit_b32(), threads, seconds=args.seconds)
        print(f"ViT-B/32 224 px, {threads} thread(s): {t.images_per_second:.1f} images/s (fastest batch of {t.batch}), "
              f"{t.median_images_per_second:.1f} (median), weights loaded in {t.load_seconds:.2f} s "
              f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)", flush=True)


if __name__ == "__main__":
    main()
