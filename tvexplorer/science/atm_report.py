"""What the ATM tab and `atm --json` show of the saved runs, as plain data: each round's accuracy
against the training it cost (a multiple of fine-tuning's), how orthogonal the round's task updates
were, and which tasks gained or lost against task arithmetic; the references at the budgets they used.
"""
from __future__ import annotations

import math

import pandas as pd

from ..core.additions import AtmRun
from ..core.cache import Cache
from .atm import EXTENSIONS, budget, settings_of


def mean_abs_cosine(matrix: list[list[float]]) -> float:
    """Mean |cos| over the distinct pairs of a task-by-task cosine matrix (the ATM paper's measure of how
    orthogonal a round's task updates are)."""
    n = len(matrix)
    pairs = [abs(matrix[i][j]) for i in range(n) for j in range(i + 1, n)]
    return sum(pairs) / len(pairs) if pairs else math.nan


def describe(run: AtmRun, variant: str) -> str:
    """One line: the rule, weights, budget and optimizer of a run, and whose it is."""
    s = settings_of(run)
    alpha = "alpha by line search on validation" if s.alpha_rule == "line_search" else f"alpha {run.coefficient:.4g}"
    who = "tvexplorer's extension" if is_extension(run, variant) else "the paper's rule"
    lr = f", lr {s.lr:g}" if s.lr is not None else ""
    weights = ", tasks weighted by validation loss" if s.weighting == "loss" else ""
    start = ", from the task-arithmetic merge, trained on validation" if s.start == "task_arithmetic" else ""
    return f"{who}: {alpha}{weights}, {s.budget_epochs:g} epoch(s) a round, {s.optimizer}{lr}{start}"


def is_extension(run: AtmRun, variant: str) -> bool:
    return variant in EXTENSIONS or not settings_of(run).paper_rule


def references(cache: Cache) -> list[dict]:
    """The lines a run is judged against, each at the training budget it used (multiples of fine-tuning's)."""
    m = cache.manifest.metrics
    training = cache.manifest.training
    rows = [("zero-shot", "zero_shot", 0.0), ("fine-tuned (one model per task)", "finetuned", 1.0),
            ("multi-task (joint fine-tuning)", "multitask", 1.0), ("task arithmetic", "task_arithmetic", 1.0),
            ("task arithmetic of 1-epoch models", "task_arithmetic_one_epoch", 1 / training.epochs if training else None)]
    out = []
    for label, key, spent in rows:
        average = m.average(key)
        if average is None or spent is None:
            continue
        per_task = m.merge(key).accuracy if key in m.merges else m.per_task()[key]
        out.append({"name": label, "key": key, "budget": spent, "average": average, "accuracy": per_task})
    return out


def atm_report(cache: Cache) -> dict:
    """Every saved run: per round its budget, alpha, averages, mean |cos| of the task updates and each task's
    change from its task-arithmetic accuracy; the references; the gap closed at rounds 5 and 10."""
    m = cache.manifest.metrics
    ta = m.merge("task_arithmetic").accuracy
    ta_avg, ft_avg, mt_avg = m.average("task_arithmetic"), m.average("finetuned"), m.average("multitask")
    runs = {}
    for variant, run in cache.manifest.atm.items():
        rounds = []
        for r, spent in zip(run.rounds, budget(cache, variant)):
            cosines = [list(row) for row in r.update_cosines]
            rounds.append({"round": r.round, "budget": spent, "alpha": r.details.get("alpha", run.coefficient),
                           "average": r.average, "normalized_average": r.normalized_average, "accuracy": r.accuracy,
                           "gain_vs_task_arithmetic": {t: r.accuracy[t] - ta[t] for t in ta},
                           "mean_abs_cosine": mean_abs_cosine(cosines), "update_cosines": cosines,
                           "update_norms": r.update_norms, "weights": r.details.get("weights"),
                           "line_search": r.details.get("line_search")})
        closed = {k: (rounds[k - 1]["average"] - ta_avg) / (ft_avg - ta_avg)
                  for k in (5, 10) if len(rounds) >= k and ft_avg > ta_avg}
        runs[variant] = {"description": describe(run, variant), "extension": is_extension(run, variant),
                         "settings": run.settings(), "rounds": rounds, "gap_closed": closed,
                         "vs_multitask": {k: rounds[k - 1]["average"] - mt_avg for k in (5, 10) if len(rounds) >= k and mt_avg}}
    return {"tasks": cache.tasks, "references": references(cache), "runs": runs}


def gains_table(report: dict, variant: str) -> pd.DataFrame:
    """Rows: tasks; columns: rounds; values: accuracy change from task arithmetic, in points."""
    rounds = report["runs"][variant]["rounds"]
    return pd.DataFrame({f"round {r['round']}": {t: 100 * g for t, g in r["gain_vs_task_arithmetic"].items()} for r in rounds},
                        index=report["tasks"])
