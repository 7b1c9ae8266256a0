"""The demo world committed under assets/demo: intact, small, and its recorded numbers are exact."""
from pathlib import Path

import pytest
import torch

from tvexplorer.core.cache import Cache
from tvexplorer.data.world import TASKS
from tvexplorer.merging import merge_flat
from tvexplorer.science.evaluation import Evaluator

DEMO = Path(__file__).resolve().parent.parent / "assets" / "demo"


@pytest.fixture(scope="module")
def demo():
    cache = Cache.open(DEMO)
    cache.verify()  # every file's sha256
    return cache


def test_demo_is_small_and_complete(demo):
    size = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert size <= 60 * 2**20
    assert len(demo.tasks) >= 8 and set(demo.tasks) <= set(TASKS)
    assert demo.manifest.model.name == "local-dir:model"
    assert {"standard", "posthoc"} <= set(demo.manifest.atm)


def test_recorded_metrics_are_reproduced_exactly(demo):
    evaluator = Evaluator(demo, device="cpu")
    m = demo.manifest.metrics.to_json()
    assert evaluator.accuracy(None) == m["zero_shot"]
    for t in demo.tasks:
        assert evaluator.accuracy(demo.vector(t), [t])[t] == m["finetuned"][t]
    ta = m["task_arithmetic"]
    assert evaluator.accuracy(merge_flat("task_arithmetic", demo.vectors(), demo.layout, scaling=ta["best_scaling"])) == ta["accuracy"]
    last = demo.manifest.atm_rounds("standard")[-1]
    assert evaluator.accuracy(demo.atm_delta("standard", last.round)) == last.accuracy


def test_bfloat16_evaluation_agrees_with_float32_on_99_5_percent_of_images(demo):
    """The app's fast precision: its predictions, image by image, against float32's, on the shipped demo
    at its best task-arithmetic scaling."""
    delta = merge_flat("task_arithmetic", demo.vectors(), demo.layout, scaling=demo.manifest.metrics.merge("task_arithmetic").best_scaling)
    exact, fast = Evaluator(demo, device="cpu"), Evaluator(demo, device="cpu", precision="bfloat16")
    assert fast.precision == "bfloat16" and exact.precision == "float32"
    blocks = fast.encoder.transformer.resblocks
    assert blocks[0].mlp.c_fc.weight.dtype == torch.bfloat16 and fast.encoder.conv1.weight.dtype == torch.float32
    a, b = exact.predictions(delta), fast.predictions(delta)
    agree, total = sum(int((a[t] == b[t]).sum()) for t in a), sum(len(a[t]) for t in a)
    assert agree / total >= 0.995, f"bfloat16 agrees with float32 on {agree}/{total} images"
    assert agree < total, "bfloat16 changed no prediction at all: is it really running in bfloat16?"
    with pytest.raises(ValueError, match="precision must be"):
        Evaluator(demo, device="cpu", precision="float16")


def test_demo_outcomes_make_it_worth_exploring(demo):
    """The issue's bar for the demo world: zero-shot well above chance but at least 20 points under
    the fine-tuned average, fine-tuned at least 90 %, task arithmetic in between."""
    m = demo.manifest.metrics.to_json()
    chance = sum(1 / len(demo.manifest.task(t).classnames) for t in demo.tasks) / len(demo.tasks)
    assert m["zero_shot_average"] >= chance + 0.10
    assert m["zero_shot_average"] <= m["finetuned_average"] - 0.20
    assert m["finetuned_average"] >= 0.90
    assert m["zero_shot_average"] < m["task_arithmetic_average"] < m["finetuned_average"]


def test_shipped_evaluation_subsets_are_what_the_world_generates(demo):
    """The committed world code still generates exactly the committed demo's data."""
    from tvexplorer.data.sources import load_task
    for t in demo.tasks:
        data = load_task(demo.manifest.task(t).data)
        for split in ("test", "val"):
            stored = demo.eval_split(t, split)
            fresh = getattr(data, split)
            assert torch.equal(stored.images, fresh.images) and torch.equal(stored.labels, fresh.labels), (t, split)


def test_demo_shows_the_papers_phenomena(demo):
    """Issue 9's targets that the committed world meets: the pretrained features already hold every
    task, merging lands between zero-shot and fine-tuned with its best scaling inside the grid, ATM
    climbs past task arithmetic, merging 1-epoch vectors is about as good as merging converged ones,
    and the first epoch dominates.

    Missed, and reported in the README rather than asserted: the task-arithmetic gain ratio (0.37,
    target 0.45), the paper-rule ATM's climb (0.25 after 5 rounds, 0.31 after 10), the adaptive run's
    climb after 10 rounds (0.51, target 0.6) and TIES (0.1 under task arithmetic)."""
    m = demo.manifest.metrics.to_json()
    zs, ft, ta = m["zero_shot_average"], m["finetuned_average"], m["task_arithmetic_average"]
    assert ft >= 0.90 and 0.40 <= zs <= 0.65 and zs <= ft - 0.20
    assert m["linear_probe_average"] >= 0.9 * ft
    assert all(m["linear_probe"][t] >= 0.8 * m["finetuned"][t] for t in demo.tasks)
    assert zs < ta < ft
    grid = [float(s) for s in m["task_arithmetic"]["val_average_by_scaling"]]
    assert min(grid) == 0.0 and max(grid) == 1.5 and max(b - a for a, b in zip(grid, grid[1:])) <= 0.05 + 1e-9
    assert 0.0 < m["task_arithmetic"]["best_scaling"] < 1.5
    assert abs(m["task_arithmetic_one_epoch_average"] - ta) <= 0.02
    assert m["tsv_average"] >= ta and m["iso_c_average"] >= ta
    rounds = [r.average for r in demo.manifest.atm_rounds("standard")]
    assert len(rounds) == 10 and rounds[4] > ta and rounds[9] > rounds[4]
    assert demo.manifest.atm_rounds("posthoc")[-1].average > ta
    assert set(m["multitask"]) == set(demo.tasks) and ta < m["multitask_average"] <= 1.0
    traj = demo.trajectory()
    whole = traj[traj["layer"] == "all"]
    largest = whole.loc[whole.groupby("task")["norm_share"].idxmax()]
    assert (largest["epoch"] == 1).all()
    assert whole[whole["epoch"] == 1]["cos_tau_e_tau"].min() >= 0.5


def test_demo_theory_record_shows_a_second_order_error(demo):
    from tvexplorer.science.theory import error_slopes
    table = demo.theory()
    assert table["task"].nunique() >= 3 and table["lr"].nunique() >= 4
    assert table["lr"].max() / table["lr"].min() >= 100
    slopes = error_slopes(table[table["epoch"] == 1])
    assert slopes["slope"].between(0.8, 1.2).all(), slopes


def test_preview_is_within_two_points_of_exact_at_the_best_scaling(demo):
    best = demo.manifest.metrics.merge("task_arithmetic").best_scaling
    checks = [c for c in demo.manifest.preview.checks if c.kind == "tau" and c.scaling == best and not c.coefficients]
    assert checks and abs(checks[0].preview_average - checks[0].exact_average) <= 0.02


def test_default_atm_run_climbs_and_leaves_no_task_behind(demo):
    """Issue 19: the demo's default ATM run (the adaptive extension) closes at least 0.4 of the gap from
    task arithmetic to fine-tuned by round 5, and after 10 rounds no task is more than 2 points under its
    own task-arithmetic accuracy; the paper's rule stays recorded beside it."""
    from tvexplorer.science.atm_report import atm_report
    report = atm_report(demo)
    adaptive = report["runs"]["adaptive"]
    assert adaptive["extension"] and len(adaptive["rounds"]) == 10
    assert adaptive["gap_closed"][5] >= 0.4
    assert min(adaptive["rounds"][9]["gain_vs_task_arithmetic"].values()) >= -0.02
    assert not report["runs"]["standard"]["extension"]
    evaluator = Evaluator(demo, device="cpu")
    assert evaluator.accuracy(demo.atm_delta("adaptive", 10)) == adaptive["rounds"][9]["accuracy"]
