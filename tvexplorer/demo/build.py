"""`build-demo`: the whole demo world from nothing, following recipe.json.

1. pretrain the tiny CLIP contrastively on the procedural corpus -> OUT/model (local-dir model);
2. build the cache over the demo tasks (heads, g0, fine-tuning, trajectories, metrics);
3. run the recipe's ATM rounds (standard and post-hoc) into the cache.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..atm import run_atm
from ..build import build_cache, log
from ..cache import writer_lock
from ..models import ModelSpec
from ..training import TrainConfig
from .pretrain import pretrain_clip
from .world import TASKS

RECIPE = Path(__file__).with_name("recipe.json")


def recipe(quick: bool = False) -> dict:
    full = json.loads(RECIPE.read_text())
    quick_overrides = full.pop("quick")
    full.pop("_doc")
    return {**full, **quick_overrides} if quick else full


def demo_task_specs(sizes: dict) -> list[dict]:
    names = sizes.get("only", list(TASKS))
    return [{"source": "demo", "task": name, "n_train": sizes["n_train"], "n_test": sizes["n_test"], "seed": sizes["seed"]}
            for name in names]


def build_demo(out: Path, quick: bool = False, device: str | None = None):
    r = recipe(quick)
    out = Path(out)
    with writer_lock(out):  # one build of the world at a time, from the model to the last ATM round
        log(f"pretraining the demo CLIP on {r['pretrain']['corpus_size']} procedural image-caption pairs")
        pretrain_clip(out / "model", r["model_cfg"], r["preprocess_cfg"], **r["pretrain"])
        cache = build_cache(out, ModelSpec("local-dir:model"), demo_task_specs(r["tasks"]), TrainConfig(**r["finetune"]),
                            vector_dtype=r["vector_dtype"], device=device)
        for variant, rounds in r["atm_rounds"].items():
            log(f"ATM ({variant}): {rounds} rounds")
            run_atm(cache, rounds, variant=variant, device=device)
    return cache
