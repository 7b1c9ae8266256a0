"""ATM: Alternating Tuning and Merging (arXiv 2411.03055).

Round k: every task fine-tunes the image encoder from the current merge theta_{k-1} for a small
budget (1 epoch by default) with a fresh optimizer; then
    theta_k = theta0 + coefficient * sum_t (theta_t^k - theta0),    coefficient = 1/T by default.
With a 1-epoch budget, round 1 sees the data order of the cache's first training epoch, so it
equals task arithmetic with coefficient 1/T over the cached 1-epoch task vectors.
The post-hoc variant starts from the task-arithmetic merge of the converged task vectors (at the
scaling that was best on validation) and fine-tunes on each task's validation split.
Every finished round is saved to the cache at once; an interrupted round is simply not saved. A run
holds the cache's writer lock throughout, so two runs on one cache take turns.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..core.cache import Cache
from ..core.checks import finite
from ..core.device import resolve_device
from ..data.sources import load_task
from ..merging import merge_flat
from ..models.clip import build_image_encoder, set_flat
from .alignment import cosine_matrix, norm
from .evaluation import Evaluator
from .training import Objective, TrainConfig, finetune, prepare, steps_per_epoch

VARIANTS = {"standard": "train", "posthoc": "val"}

Progress = Callable[[int, int, str], None]
# Fine-tunes every task of round k from `start` elsewhere (pipeline/distributed.py), calling back as
# each task finishes; returns {task: theta_t^k - start} in the cache's task order.
RoundTuner = Callable[[Cache, TrainConfig, dict, torch.Tensor, int, Callable[[str], None]], dict[str, torch.Tensor]]


def tune_from(encoder, objective: Objective, split, cfg: TrainConfig, index: int, start: torch.Tensor, k: int,
              budget_epochs: int, on_step: Callable[[], None] | None = None) -> torch.Tensor:
    """One task's part of round k: fine-tune from `start` with a fresh optimizer, in the data order of
    epochs (k-1)*budget .. k*budget-1 of the build; returns theta_t^k - start (float32)."""
    set_flat(encoder, start)
    theta_t = finetune(encoder, objective, split, cfg, index, first_epoch=(k - 1) * budget_epochs,
                       epochs=budget_epochs, on_step=on_step)[-1]
    return (theta_t - start.to(theta_t.dtype)).float()


def run_info(cache: Cache, variant: str, coefficient: float | None, budget_epochs: int) -> dict:
    """How a run of `variant` is defined; an existing run keeps the settings it started with."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ATM variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    existing = cache.atm_runs().get(variant)
    if existing:
        return {k: v for k, v in existing.items() if k != "rounds"}
    coefficient = 1.0 / len(cache.tasks) if coefficient is None else float(coefficient)
    finite("ATM coefficient", coefficient)
    start = {"method": "none"}
    if variant == "posthoc":
        start = {"method": "task_arithmetic", "scaling": cache.metrics["task_arithmetic"]["best_scaling"]}
    return {"coefficient": coefficient, "budget_epochs": int(budget_epochs), "train_split": VARIANTS[variant], "start": start}


def run_atm(cache: Cache, rounds: int, variant: str = "standard", coefficient: float | None = None,
            budget_epochs: int = 1, device: str | None = None, evaluator: Evaluator | None = None,
            progress: Progress | None = None, on_round: Callable[[dict], None] | None = None,
            should_stop: Callable[[], bool] | None = None, tune_round: RoundTuner | None = None) -> list[dict]:
    """Run `rounds` more rounds after the last one saved in `cache`; returns the new rounds' records.
    `tune_round`: each round's fine-tunes run by it (map, then barrier) instead of one after another here."""
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
    # One writer from reading the last round to saving the new ones: a run that waited for another
    # process continues the rounds that one saved, instead of both numbering theirs from the same start.
    with cache.writing():
        info = run_info(cache, variant, coefficient, budget_epochs)
        device = resolve_device(device)
        tasks = cache.tasks
        cfg = TrainConfig(**(cache.training or {}))  # an imported cache has no record: ATM's own defaults
        encoder = build_image_encoder(cache.manifest["model"]["encoder"])
        evaluator = evaluator or Evaluator(cache, device=device)
        heads, logit_scale = cache.heads()
        objectives = prepare(encoder, heads, logit_scale, cache.manifest["model"]["encoder"], cfg, device)
        splits = {t: getattr(load_task(cache.task(t)["data"]), info["train_split"]) for t in tasks}
        theta0 = cache.base()
        done = len(cache.atm_runs().get(variant, {}).get("rounds", []))
        if done:
            merged = cache.atm_delta(variant, done).float().clone()
        elif info["start"]["method"] == "task_arithmetic":
            merged = merge_flat("task_arithmetic", cache.vectors("tau"), cache.layout, scaling=info["start"]["scaling"])
        else:
            merged = torch.zeros_like(theta0)

        steps_per_round = sum(steps_per_epoch(len(splits[t]), cfg) for t in tasks) * info["budget_epochs"]
        total, step = steps_per_round * rounds, 0
        records = []

        def advance(n: int, what: str) -> None:
            nonlocal step
            step += n
            if progress:
                progress(step, total, what)

        for k in range(done + 1, done + rounds + 1):
            start = theta0 + merged
            if tune_round:
                if should_stop and should_stop():
                    return records
                updates = tune_round(cache, cfg, info, start, k, lambda t, k=k: advance(
                    steps_per_epoch(len(splits[t]), cfg) * info["budget_epochs"], f"round {k}, {t} done"))
            else:
                updates = {}
                for i, task in enumerate(tasks):
                    if should_stop and should_stop():
                        return records
                    updates[task] = tune_from(encoder, objectives[task], splits[task], cfg, i, start, k, info["budget_epochs"],
                                              on_step=lambda task=task, k=k: advance(1, f"round {k}, {task}"))
            # theta_k - theta0 = coefficient * sum_t (theta_t^k - theta0), with theta_t^k = start + update_t
            merged = info["coefficient"] * sum(merged + u for u in updates.values())
            merged = merged.to(cache.vector_dtype).float()  # evaluate and continue from exactly what is saved
            result = evaluator.result(merged)
            record = {"accuracy": result.accuracy, "average": result.average,
                      "normalized_average": result.normalized_average,
                      "update_norms": {t: norm(u) for t, u in updates.items()},
                      "update_cosines": cosine_matrix(updates).values.tolist()}
            cache.add_atm_round(variant, info, record, merged)
            records.append({"round": k, **record})
            if on_round:
                on_round(records[-1])
        return records
