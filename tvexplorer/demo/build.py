"""`build-demo`: the whole demo world from nothing, following a recipe (recipe.json by default).

1. pretrain the tiny CLIP contrastively on the procedural corpus -> OUT/model (local-dir model);
2. build the cache over the demo tasks (heads, g0, fine-tuning, trajectories, the multi-task
   baseline, the SGD theory record, metrics);
3. run the recipe's ATM rounds (standard and post-hoc) into the cache;
4. its finishing steps (`complete.py`): RegMean's Grams, the results table, tuned coefficients.

`diagnostics` condenses a built world into the one row that the world search compares: whether
merging and ATM behave as on real CLIP (see the README's demo section).
"""
from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path

from ..core.cache import Cache
from ..core.files import writer_lock
from ..core.records import TUNED_METHODS
from ..data.world import IMAGE_SIZE, TASKS
from ..models.clip import ModelSpec
from ..pipeline.build import build_cache, log
from ..science.atm import run_atm
from ..science.training import TrainConfig
from .complete import check_steps, complete
from .pretrain import pretrain_clip

RECIPE = Path(__file__).with_name("recipe.json")


def recipe(quick: bool = False, path: Path | None = None) -> dict:
    """The recipe in `path` (default: the shipped one); with `quick`, its 'quick' overrides applied."""
    path = Path(path) if path else RECIPE
    try:
        full = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read recipe {path}: {e}") from None
    full.pop("_doc", None)
    quick_overrides = full.pop("quick", None)
    if quick and quick_overrides is None:
        raise ValueError(f"recipe {path} has no 'quick' section; drop --quick or add one")
    return {**full, **quick_overrides} if quick else full


def demo_task_specs(sizes: dict) -> list[dict]:
    """Data specs of the demo tasks in `sizes["only"]` (default: all); an "image_size" other than the
    world's 24 pixels is kept in the specs, and the images are resized to it when loaded."""
    names = sizes.get("only", list(TASKS))
    resize = {"image_size": sizes["image_size"]} if sizes.get("image_size", IMAGE_SIZE) != IMAGE_SIZE else {}
    return [{"source": "demo", "task": name, "n_train": sizes["n_train"], "n_test": sizes["n_test"], "seed": sizes["seed"],
             **resize} for name in names]


def build_demo(out: Path, quick: bool = False, device: str | None = None, recipe_path: Path | None = None,
               ray: str | None = None) -> Cache:
    """`ray` ('auto' or an address): the build's tasks and each ATM round's fine-tunes as Ray tasks."""
    r = recipe(quick, recipe_path)
    check_steps(r.get("complete", {}))  # before hours of building, not after
    out = Path(out)
    with writer_lock(out), contextlib.ExitStack() as stack:  # one build of the world at a time, model to last ATM round
        tune_round = None
        if ray:
            from ..pipeline import distributed
            stack.enter_context(distributed.cluster(ray))
            tune_round = functools.partial(distributed.atm_round, device=device)
        log(f"pretraining the demo CLIP on {r['pretrain']['corpus_size']} procedural image-caption pairs")
        pretrain_clip(out / "model", r["model_cfg"], r["preprocess_cfg"], **r["pretrain"])
        cache = build_cache(out, ModelSpec("local-dir:model"), demo_task_specs(r["tasks"]), TrainConfig(**r["finetune"]),
                            vector_dtype=r["vector_dtype"], device=device, multitask=r.get("multitask", False),
                            theory=r.get("theory"), ray=ray)
        for variant, rounds in r["atm_rounds"].items():
            log(f"ATM ({variant}): {rounds} rounds")
            run_atm(cache, rounds, variant=variant, device=device, tune_round=tune_round)
        complete(cache, r.get("complete", {}), device)
    return cache


def diagnostics(cache: Cache) -> dict:
    """One row of the world search: averages in percent, and the ratios that the targets name."""
    m = cache.manifest.metrics
    zs, ft, ta = m.average("zero_shot"), m.average("finetuned"), m.average("task_arithmetic")
    atm = {r.round: r.average for r in cache.manifest.atm_rounds("standard")}
    probe = m.linear_probe or {}
    best = m.merge("task_arithmetic").best_scaling
    checks = cache.manifest.preview.checks if cache.manifest.preview else ()
    at_best = [c for c in checks if c.kind == "tau" and c.scaling == best and not c.coefficients]

    def pct(x):
        return None if x is None else round(100 * x, 1)

    def climb(k):  # the share of the gap from task arithmetic to fine-tuned that k rounds of ATM close
        return round((atm[k] - ta) / (ft - ta), 2) if k in atm and ft > ta else None

    return {
        "probe/FT": round(m.average("linear_probe") / ft, 2) if probe else None,
        "min probe/FT": round(min(probe[t] / m.finetuned[t] for t in probe), 2) if probe else None,
        "ZS": pct(zs), "FT": pct(ft), "TA": pct(ta),
        "TA gain": round((ta - zs) / (ft - zs), 2) if ft > zs else None,
        "best λ": best,
        "1-epoch TA": pct(m.average("task_arithmetic_one_epoch")),
        "multi-task": pct(m.average("multitask")),
        **{f"ATM@{k}": pct(atm.get(k)) for k in (3, 5, 10)},
        "climb@5": climb(5), "climb@10": climb(10),
        "preview err": pct(abs(at_best[0].preview_average - at_best[0].exact_average)) if at_best else None,
        **{f"{k} − TA": round(100 * (m.average(k) - ta), 1) if m.average(k) is not None else None for k in TUNED_METHODS},
        **_first_epoch(cache),
    }


def _first_epoch(cache: Cache) -> dict:
    """Paper B's "the first epoch dominates", as the two numbers the targets name."""
    if not cache.has_gradient_record:
        return {}
    traj = cache.trajectory()
    whole = traj[traj["layer"] == "all"]
    largest = whole.loc[whole.groupby("task")["norm_share"].idxmax()]
    return {"epoch 1 largest": f"{int((largest['epoch'] == 1).sum())}/{whole['task'].nunique()}",
            "min cos(τ1,τ)": round(float(whole[whole["epoch"] == 1]["cos_tau_e_tau"].min()), 2)}
