"""ATM: Alternating Tuning and Merging (arXiv 2411.03055), and this project's adaptive extension.

Round k: every task t fine-tunes the image encoder from the current merge theta_{k-1} for a small
budget with a fresh optimizer, giving its update u_t = theta_t^k - theta_{k-1}; then
    theta_k = theta_{k-1} + alpha * sum_t w_t u_t.
The paper's rule is alpha = 1/T and w_t = 1, which is theta0 + (1/T) sum_t (theta_t^k - theta0):
"standard" runs it with a budget of one epoch and AdamW at the fine-tuning settings; "posthoc" starts
from the task-arithmetic merge (at its validation-best scaling) and tunes on the validation splits.
With a 1-epoch budget, round 1 of "standard" sees the data order of the build's first epoch, so it
equals task arithmetic with coefficient 1/T over the cached 1-epoch task vectors.

"adaptive" is this project's extension, not the paper's, and is named so wherever it is shown:
- alpha is chosen each round by a line search along the round's combined update, on exact validation
  accuracy (multiples of 1/T). Accuracy follows the distance travelled, and 1/T is a slow, fixed step.
- w_t is task t's validation loss at theta_{k-1} over the mean of all tasks' (so the w_t average 1):
  AdamW's update has about the same norm whatever a task's loss, so under 1/T a task that conflicts
  with the rest (the demo's counting) has too small a say and falls round after round.

Every finished round is saved to the cache at once; an interrupted round is simply not saved. A run
holds the cache's writer lock throughout, so two runs on one cache take turns.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Callable

import torch

from ..core.additions import AtmRun
from ..core.cache import Cache
from ..core.checks import finite
from ..core.device import resolve_device
from ..data.sources import load_task, task_spec
from ..merging import merge_flat
from ..models.clip import build_image_encoder, set_flat
from .alignment import cosine_matrix, norm
from .evaluation import Evaluator
from .training import Objective, TrainConfig, mean_loss, prepare, steps_per_epoch, tune_steps

ALPHA_RULES = ("fixed", "line_search")
LINE_SEARCH_SCORES = ("accuracy", "loss")   # mean validation accuracy, or minus the mean validation cross-entropy
WEIGHTINGS = ("uniform", "loss")
ROUND_OPTIMIZERS = ("adamw", "sgd")
LINE_SEARCH_BATCH = 500


@dataclass(frozen=True)
class Settings:
    """How one ATM run is defined, recorded with it and fixed for its life.
    alpha: the fixed rule's coefficient, and the line search's unit (None: 1/T); budget_epochs: each
    task's training per round, in epochs of its training split (fractions allowed); lr: None is the
    cache's fine-tuning learning rate."""
    train_split: str = "train"
    start: str = "none"                      # or "task_arithmetic": the validation-best TA merge
    alpha: float | None = None
    alpha_rule: str = "fixed"
    alpha_grid: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)   # multiples of alpha the line search tries
    line_search_on: str = "accuracy"
    weighting: str = "uniform"
    budget_epochs: float = 1.0
    optimizer: str = "adamw"
    lr: float | None = None

    def __post_init__(self):
        for name, value, allowed in (("alpha rule", self.alpha_rule, ALPHA_RULES),
                                     ("line search score", self.line_search_on, LINE_SEARCH_SCORES),
                                     ("weighting", self.weighting, WEIGHTINGS),
                                     ("round optimizer", self.optimizer, ROUND_OPTIMIZERS),
                                     ("train split", self.train_split, ("train", "val")),
                                     ("start", self.start, ("none", "task_arithmetic"))):
            if value not in allowed:
                raise ValueError(f"unknown ATM {name} {value!r}; choose one of {', '.join(allowed)}")
        for name in ("alpha", "lr"):
            value = getattr(self, name)
            if value is not None and not (finite(f"ATM {name}", value) > 0):
                raise ValueError(f"ATM {name} must be positive, got {value}")
        if not (finite("ATM budget_epochs", self.budget_epochs) > 0):
            raise ValueError(f"ATM budget_epochs must be positive, got {self.budget_epochs}")
        if self.alpha_rule == "line_search" and not self.alpha_grid:
            raise ValueError("the ATM line search needs at least one multiple of alpha to try")

    @property
    def paper_rule(self) -> bool:
        return self.alpha_rule == "fixed" and self.weighting == "uniform"


# The named runs. Their settings are data: a new variant is one more entry.
VARIANTS = {
    "standard": Settings(),
    "posthoc": Settings(train_split="val", start="task_arithmetic"),
    # chosen on the demo (benchmarks/atm_search.py; README): half-epoch rounds merged by a validation line
    # search beat 1-epoch rounds at every round count, and loss weights keep every task above task arithmetic
    "adaptive": Settings(alpha_rule="line_search", weighting="loss", budget_epochs=0.5),
}
EXTENSIONS = {"adaptive"}  # this project's, not the paper's

Progress = Callable[[int, int, str], None]
# Fine-tunes every task of round k from `start` elsewhere (pipeline/distributed.py), calling back as
# each task finishes; returns {task: theta_t^k - start} in the cache's task order.
RoundTuner = Callable[[Cache, TrainConfig, "Settings", torch.Tensor, int, Callable[[str], None]], dict[str, torch.Tensor]]


def round_steps(n_train: int, cfg: TrainConfig, settings: Settings) -> int:
    """One task's optimizer steps per round: its budget in epochs of its training split, at least one."""
    return max(1, round(settings.budget_epochs * steps_per_epoch(n_train, cfg)))


def tune_from(encoder, objective: Objective, split, cfg: TrainConfig, index: int, start: torch.Tensor, k: int,
              settings: Settings, on_step: Callable[[], None] | None = None) -> torch.Tensor:
    """One task's part of round k: fine-tune from `start` with a fresh optimizer, continuing the build's
    data order where round k-1 stopped; returns theta_t^k - start (float32)."""
    set_flat(encoder, start)
    steps = round_steps(len(split), cfg, settings)
    theta_t = tune_steps(encoder, objective, split, cfg, index, first_step=(k - 1) * steps, steps=steps,
                         optimizer=settings.optimizer, lr=settings.lr, on_step=on_step)
    return (theta_t - start.to(theta_t.dtype)).float()


def settings_of(run: AtmRun | dict) -> Settings:
    """The Settings recorded with a run (a run saved before settings were recorded has the paper's)."""
    run = run.settings() if isinstance(run, AtmRun) else run
    known = {f.name for f in fields(Settings)}
    values = {k: v for k, v in run.items() if k in known and k != "start"}
    values["alpha"] = run.get("coefficient")
    values["start"] = run.get("start", {}).get("method", "none")
    if "alpha_grid" in values:
        values["alpha_grid"] = tuple(values["alpha_grid"])
    return Settings(**values)


def run_info(cache: Cache, variant: str, settings: Settings | None = None) -> dict:
    """How a run of `variant` is recorded: its settings, the coefficient resolved; an existing run keeps
    the settings it started with."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ATM variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if variant in cache.manifest.atm:
        return cache.manifest.atm[variant].settings()
    settings = settings or VARIANTS[variant]
    info = asdict(settings)
    info["coefficient"] = 1.0 / len(cache.tasks) if settings.alpha is None else settings.alpha
    del info["alpha"]
    info["alpha_grid"] = list(settings.alpha_grid)
    info["extension"] = variant in EXTENSIONS or not settings.paper_rule
    info["start"] = {"method": "none"}
    if settings.start == "task_arithmetic":
        info["start"] = {"method": "task_arithmetic", "scaling": cache.manifest.metrics.merge("task_arithmetic").best_scaling}
    return info


def new_settings(variant: str, **overrides) -> Settings:
    """The variant's settings with `overrides` (None values ignored), for a run that does not exist yet."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ATM variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return replace(VARIANTS[variant], **{k: v for k, v in overrides.items() if v is not None})


def fine_tuning_steps(cache: Cache) -> int:
    """All tasks' optimizer steps in fine-tuning: the unit of ATM's budget axis. The multi-task baseline
    takes as many, and task arithmetic needs the fine-tuned models, so all three sit at 1."""
    cfg = cache.manifest.training or TrainConfig()
    return sum(cfg.epochs * steps_per_epoch(t.sizes.train, cfg) for t in cache.manifest.tasks)


def budget(cache: Cache, variant: str) -> list[float]:
    """Training spent by the end of each saved round of `variant`, as a multiple of fine-tuning's (all
    tasks' optimizer steps); post-hoc ATM starts from the fine-tuned models, so from 1."""
    run = cache.manifest.atm.get(variant)
    if not run:
        return []
    settings = settings_of(run)
    cfg = cache.manifest.training or TrainConfig()
    per_round = sum(round_steps(getattr(t.sizes, settings.train_split), cfg, settings) for t in cache.manifest.tasks)
    start = 1.0 if settings.start == "task_arithmetic" else 0.0
    unit = fine_tuning_steps(cache)
    return [start + k * per_round / unit for k in range(1, len(run.rounds) + 1)]


def run_atm(cache: Cache, rounds: int, variant: str = "standard", settings: Settings | None = None,
            device: str | None = None, evaluator: Evaluator | None = None,
            progress: Progress | None = None, on_round: Callable[[dict], None] | None = None,
            should_stop: Callable[[], bool] | None = None, tune_round: RoundTuner | None = None) -> list[dict]:
    """Run `rounds` more rounds after the last one saved in `cache`; returns the new rounds' records.
    `settings` define a new run (default: the variant's); an existing run keeps its own.
    `tune_round`: each round's fine-tunes run by it (map, then barrier) instead of one after another here."""
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
    # One writer from reading the last round to saving the new ones: a run that waited for another
    # process continues the rounds that one saved, instead of both numbering theirs from the same start.
    with cache.writing():
        info = run_info(cache, variant, settings)
        settings = settings_of(info)
        device = resolve_device(device)
        tasks = cache.tasks
        cfg = cache.manifest.training or TrainConfig()  # an imported cache has no record: ATM's own defaults
        encoder = build_image_encoder(cache.manifest.model.encoder)
        evaluator = evaluator or Evaluator(cache, device=device)
        heads, logit_scale = cache.heads()
        objectives = prepare(encoder, heads, logit_scale, cache.manifest.model.encoder, cfg, device)
        data = {t: load_task(task_spec(cache, t)) for t in tasks}
        splits = {t: getattr(data[t], settings.train_split) for t in tasks}
        done, merged = last_merge(cache, variant, info)
        theta0 = cache.base()
        steps = {t: round_steps(len(splits[t]), cfg, settings) for t in tasks}
        total, step = sum(steps.values()) * rounds, 0
        score = None
        if settings.alpha_rule == "line_search" and settings.line_search_on == "accuracy":
            val = Evaluator(cache, device=device, split="val")
            score = lambda delta: sum(val.accuracy(delta).values()) / len(tasks)  # noqa: E731
        elif settings.alpha_rule == "line_search":
            def score(delta):
                set_flat(encoder, theta0 + delta)
                return -sum(mean_loss(encoder, objectives[t], data[t].val, LINE_SEARCH_BATCH) for t in tasks) / len(tasks)
        records = []

        def advance(n: int, what: str) -> None:
            nonlocal step
            step += n
            if progress:
                progress(step, total, what)

        for k in range(done + 1, done + rounds + 1):
            if should_stop and should_stop():
                return records
            start = theta0 + merged
            weights = {t: 1.0 for t in tasks}
            if settings.weighting == "loss":
                set_flat(encoder, start)
                losses = {t: mean_loss(encoder, objectives[t], data[t].val, LINE_SEARCH_BATCH) for t in tasks}
                weights = {t: len(tasks) * losses[t] / sum(losses.values()) for t in tasks}
            if tune_round:
                updates = tune_round(cache, cfg, settings, start, k, lambda t, k=k: advance(steps[t], f"round {k}, {t} done"))
            else:
                updates = {}
                for i, task in enumerate(tasks):
                    if should_stop and should_stop():
                        return records
                    updates[task] = tune_from(encoder, objectives[task], splits[task], cfg, i, start, k, settings,
                                              on_step=lambda task=task, k=k: advance(1, f"round {k}, {task}"))
            direction = sum(weights[t] * updates[t] for t in tasks)
            alpha, searched = info["coefficient"], None
            if score is not None:
                alpha, searched = line_search(score, merged, direction, info["coefficient"], settings.alpha_grid,
                                              cache.vector_dtype)
            merged = (merged + alpha * direction).to(cache.vector_dtype).float()  # continue from exactly what is saved
            result = evaluator.result(merged)
            record = {"accuracy": result.accuracy, "average": result.average,
                      "normalized_average": result.normalized_average, "alpha": alpha,
                      "update_norms": {t: norm(u) for t, u in updates.items()},
                      "update_cosines": cosine_matrix(updates).values.tolist()}
            if settings.weighting != "uniform":
                record["weights"] = weights
            if searched is not None:
                record["line_search"] = searched
            cache.add_atm_round(variant, info, record, merged)
            records.append({"round": k, **record})
            if on_round:
                on_round(records[-1])
        return records


def last_merge(cache: Cache, variant: str, info: dict) -> tuple[int, torch.Tensor]:
    """(rounds saved, the merged delta the next round starts from): the last saved round's; for a run that
    has none, task arithmetic's where the run starts there (info: run_info), else zero."""
    done = len(cache.manifest.atm[variant].rounds) if variant in cache.manifest.atm else 0
    if done:
        return done, cache.atm_delta(variant, done).float().clone()
    if info["start"]["method"] == "task_arithmetic":
        merged = merge_flat("task_arithmetic", cache.vectors("tau"), cache.layout, scaling=info["start"]["scaling"])
        return 0, merged.to(cache.vector_dtype).float()
    return 0, torch.zeros(cache.layout.numel)


def task_round_steps(cache: Cache, variant: str, task: str, settings: Settings | None = None) -> int:
    """One task's optimizer steps in a round of `variant` on `cache` (`settings`: a new run's)."""
    run_settings = settings_of(run_info(cache, variant, settings))
    cfg = cache.manifest.training or TrainConfig()
    return round_steps(getattr(cache.manifest.task(task).sizes, run_settings.train_split), cfg, run_settings)


def task_update(cache: Cache, variant: str, task: str, settings: Settings | None = None, device: str | None = None,
                on_step: Callable[[], None] | None = None) -> tuple[int, torch.Tensor]:
    """One task's part of the next round of `variant`, alone (a ZeroGPU call of its own, app/work.py): (the
    round's number k, theta_t^k - start), exactly as run_atm computes it; run_atm's `tune_round` takes
    the updates of every task back."""
    info = run_info(cache, variant, settings)
    settings = settings_of(info)
    done, merged = last_merge(cache, variant, info)
    cfg = cache.manifest.training or TrainConfig()
    encoder = build_image_encoder(cache.manifest.model.encoder)
    heads, logit_scale = cache.heads()
    objectives = prepare(encoder, {task: heads[task]}, logit_scale, cache.manifest.model.encoder, cfg, resolve_device(device))
    split = getattr(load_task(task_spec(cache, task)), settings.train_split)
    return done + 1, tune_from(encoder, objectives[task], split, cfg, cache.tasks.index(task), cache.base() + merged,
                               done + 1, settings, on_step=on_step)


def line_search(score: Callable[[torch.Tensor], float], merged: torch.Tensor, direction: torch.Tensor, unit: float,
                multiples: tuple[float, ...], dtype: torch.dtype) -> tuple[float, dict[str, float]]:
    """The alpha among unit * multiples whose merge (rounded to the cache's dtype, as it would be saved)
    scores best on validation; a tie goes to the smaller step. Returns (alpha, {alpha: score})."""
    scores = {unit * m: score((merged + unit * m * direction).to(dtype).float()) for m in sorted(multiples)}
    best = max(scores, key=lambda a: (scores[a], -a))
    return best, {f"{a:.6g}": s for a, s in scores.items()}
