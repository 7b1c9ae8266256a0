"""Small synthetic image-folder tasks for a ViT-B/32-size cache (random weights) on a machine with no data.

    python benchmarks/vit_folders.py --out DIR [--tasks 4] [--classes 4] [--train 8] [--test 16]
    OMP_NUM_THREADS=1 python -m tvexplorer build --model ViT-B-32 --epochs 2 --batch-size 16 \
        --folder $(ls DIR | sed "s|.*|&=DIR/&|") --out CACHE

Writes DIR/<task>/{train,test}/<class>/<i>.png: 256 x 240 RGB images, each task's classes told apart
by a colour pattern of their own (a mean colour per class plus noise), so fine-tuning has something
to learn and the build's resize and centre crop to 224 px run on every image.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def write_task(root: Path, classes: int, n_train: int, n_test: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    means = rng.integers(30, 200, (classes, 3))
    for split, n in (("train", n_train), ("test", n_test)):
        for c in range(classes):
            (root / split / f"class{c}").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(means[c] + rng.normal(0, 40, (240, 256, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / f"class{c}" / f"{i}.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--train", type=int, default=8, help="training images per class")
    p.add_argument("--test", type=int, default=16, help="test images per class")
    args = p.parse_args()
    for t in range(args.tasks):
        write_task(Path(args.out) / f"task{t}", args.classes, args.train, args.test, seed=t)
    print(" ".join(f"task{t}={Path(args.out) / f'task{t}'}" for t in range(args.tasks)))


if __name__ == "__main__":
    main()
