"""Images per second of a CLIP image tower on this CPU, as `space` times it to size a CPU Space's evaluation.

    python benchmarks/cpu_encoder.py [--model ViT-B-32] [--threads 1 2] [--seconds 8]

Builds the tower with open_clip's config and random weights (nothing is downloaded), then times it with
tvexplorer.pipeline.evalplan.measure_encoder at each thread count: images/s of the fastest timed batch (what
`space` plans with) and of the median one, and the load of one set of merged weights. The machine's load
average is printed beside them: on a shared machine the median is low.
"""
from __future__ import annotations

import argparse
import os

import open_clip

from tvexplorer.pipeline.evalplan import measure_encoder


def encoder_info(model: str) -> dict:
    """The manifest's `model.encoder` description of an open_clip model config (see models/clip.py)."""
    cfg = open_clip.get_model_config(model)
    vision = cfg["vision_cfg"]
    return {"embed_dim": cfg["embed_dim"], "vision_cfg": vision, "quick_gelu": cfg.get("quick_gelu", False),
            "image_size": vision["image_size"], "mean": [0.5] * 3, "std": [0.25] * 3}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seconds", type=float, default=8.0)
    args = p.parse_args()
    info = encoder_info(args.model)
    for threads in args.threads:
        t = measure_encoder(info, threads, seconds=args.seconds)
        print(f"{args.model} {info['image_size']} px, {threads} thread(s): {t.images_per_second:.1f} images/s (fastest batch of {t.batch}), "
              f"{t.median_images_per_second:.1f} (median), weights loaded in {t.load_seconds:.2f} s "
              f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)", flush=True)


if __name__ == "__main__":
    main()
