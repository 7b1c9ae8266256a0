"""What the benchmark measures: the sections, the merges, the full and quick plans, and the timer."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tvexplorer.core.records import Encoder

ROOT = Path(__file__).resolve().parents[2]  # the repo root
SECTIONS = ("merge", "fusionbench", "evaluation", "cache", "app")
MERGES = {"task_arithmetic": {}, "ties": {"k": 20}, "tsv": {}, "iso_c": {}}
FUSIONBENCH_PYTHON = ROOT / "benchmarks" / ".venv" / "bin" / "python"
FUSIONBENCH_SCRIPT = ROOT / "benchmarks" / "fusionbench_ref.py"
FUSIONBENCH_INSTALL = "bash benchmarks/setup.sh   # makes benchmarks/.venv with fusion-bench, reusing the installed torch"
SAME_RESULT_RTOL = 1e-4  # |ours - theirs| / |ours| (L2) below which two merges count as the same weights
GB = 1e9

# FusionBench and ours differ here by definition; none of it matters for these inputs (see the report).
SEMANTIC_NOTES = (
    ("TIES: FusionBench keeps int(P*k)+1 entries per task (kthvalue of the (P-int(P*k))-th smallest), "
     "ours ceil(P*k): the same count unless P*k is an integer, where FusionBench keeps one more."),
    ("TIES: where a parameter's trimmed values sum to exactly 0, FusionBench gives it the majority elected "
     "sign over all parameters and averages that side; ours merges it to 0."),
    ("TIES: ours with fusionbench=1 follows FusionBench in both (and sums, its default merge_func); this "
     "benchmark compares the default against FusionBench's merge_func='mean'."),
    ("TIES: ours multiplies each task by its coefficient before trimming; FusionBench's ties_merging has "
     "no per-task coefficients (all 1 here, so equal)."),
    ("TSV-M: FusionBench keeps int(r*(1/T)) singular triplets per task and zero-pads the concatenation "
     "to r columns, ours r//T without padding: the same merged matrix for these shapes."),
    ("Task arithmetic: FusionBench's TaskArithmeticAlgorithm takes models and subtracts the pretrained one "
     "from each; it is given an all-zero pretrained model, so its fine-tuned models are the task vectors. "
     "(Its module-level task_arithmetic_merge() raises a TypeError on any nn.Module in 0.2.33.)"),
)


def vit_b32() -> Encoder:
    """The ViT-B/32 image encoder as a cache manifest describes it (the same tower that
    open_clip.create_model("ViT-B-32").visual builds); its weights here are random."""
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    cfg = open_clip.get_model_config("ViT-B-32")
    return Encoder(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu=False, image_size=cfg["vision_cfg"]["image_size"],
                   mean=tuple(OPENAI_DATASET_MEAN), std=tuple(OPENAI_DATASET_STD))


def tiny_vit() -> Encoder:
    """About 1M parameters, for the quick mode; P*k is not an integer, so TIES keeps the same count as FusionBench."""
    vision = {"image_size": 32, "patch_size": 8, "width": 128, "layers": 5, "head_width": 64}
    return Encoder(64, vision, quick_gelu=False, image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@dataclass(frozen=True)
class Plan:
    name: str
    encoder: Encoder | None  # the image encoder as a manifest describes it (filled in by run: it needs open_clip)
    tasks: int
    images_per_task: int
    copy_bytes: int        # size of each buffer in the bandwidth test
    calls: dict            # calls of each of our merges, the best counts (FusionBench's: one each)
    requests: int          # /evaluate requests on the app
    fresh_process: bool    # one subprocess per merge (else one per side, to save start-up time)
    timeout_s: int         # per merge worker


FULL = Plan("full", encoder=None, tasks=8, images_per_task=16, copy_bytes=1 << 30, requests=15, fresh_process=True,
            calls={"task_arithmetic": 5, "ties": 3, "tsv": 2, "iso_c": 2}, timeout_s=3600)
QUICK = Plan("quick", encoder=None, tasks=3, images_per_task=2, copy_bytes=64 << 20, requests=3, fresh_process=False,
             calls=dict.fromkeys(MERGES, 2), timeout_s=600)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out
