"""The README's estimate of the 20-task ViT-L/14 build on N GPUs against 1 (an estimate: no GPU here).

Counts the FLOPs of one training pass per image through ViT-L/14 and through the demo's tiny ViT
(torch's FlopCounterMode on meta tensors, so nothing is allocated), scales a per-task time measured
on the demo, and schedules the 20 tasks longest first on N GPUs, one task per GPU at a time.

    python benchmarks/ray_estimate.py --demo-task-seconds 6 --gpu-tflops 400 --gpus 8
"""
from __future__ import annotations

import argparse
import json

import open_clip
import torch
from torch.utils.flop_counter import FlopCounterMode

from tvexplorer.core.records import Encoder
from tvexplorer.demo.build import recipe
from tvexplorer.models.clip import build_image_encoder

# Official training-split sizes as published (not read from disk here); the 20-task suite.
TRAIN_SIZES = {"SUN397": 19850, "Cars": 8144, "RESISC45": 18900, "EuroSAT": 21600, "SVHN": 73257, "GTSRB": 26640,
               "MNIST": 60000, "DTD": 1880, "OxfordIIITPet": 3680, "Flowers102": 1020, "PCAM": 262144,
               "FER2013": 28709, "CIFAR100": 50000, "STL10": 5000, "CIFAR10": 50000, "Food101": 75750,
               "FashionMNIST": 60000, "EMNIST": 240000, "KMNIST": 60000, "RenderedSST2": 6920}


def training_pass_flops(tower: torch.nn.Module, size: int) -> int:
    """FLOPs of forward and backward for one image."""
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        tower(torch.randn(1, 3, size, size)).sum().backward()
    return counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo-task-seconds", type=float, required=True, help="measured time of one quick-demo task")
    p.add_argument("--gpu-tflops", type=float, default=400.0, help="assumed sustained TFLOP/s of one GPU")
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args()
    quick = recipe(quick=True)
    vision = quick["model_cfg"]["vision_cfg"]
    demo_cfg = Encoder(quick["model_cfg"]["embed_dim"], vision, quick_gelu=False, image_size=vision["image_size"],
                       mean=tuple(quick["preprocess_cfg"]["mean"]), std=tuple(quick["preprocess_cfg"]["std"]))
    with torch.device("meta"):
        demo, large = build_image_encoder(demo_cfg), open_clip.create_model("ViT-L-14", device="meta").visual
    demo_flops, large_flops = training_pass_flops(demo, demo_cfg.image_size), training_pass_flops(large, 224)
    n_train = quick["tasks"]["n_train"]
    demo_passes = (n_train - round(0.1 * n_train)) * (quick["finetune"]["epochs"] + 1)  # + the g0 pass
    passes = {t: (n - min(round(0.1 * n), 5000)) * (args.epochs + 1) for t, n in TRAIN_SIZES.items()}
    loads = [0] * args.gpus
    for t in sorted(passes, key=passes.get, reverse=True):
        loads[loads.index(min(loads))] += passes[t]
    total, rate = sum(passes.values()), args.gpu_tflops * 1e12
    print(json.dumps({
        "flops_per_pass": {"demo": demo_flops, "ViT-L-14": large_flops, "ratio": large_flops / demo_flops},
        "this_cpu_gflops": demo_passes * demo_flops / args.demo_task_seconds / 1e9,
        "this_cpu_years": args.demo_task_seconds * total / demo_passes * large_flops / demo_flops / 3.15e7,
        "total_flops": total * large_flops,
        "one_gpu_hours": total * large_flops / rate / 3600,
        f"{args.gpus}_gpus_hours": max(loads) * large_flops / rate / 3600,
        "speedup": total / max(loads),
    }, indent=1))


if __name__ == "__main__":
    main()
