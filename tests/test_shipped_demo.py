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
    assert demo.manifest["model"]["name"] == "local-dir:model"
    assert {"standard", "posthoc"} <= set(demo.atm_runs())


def test_recorded_metrics_are_reproduced_exactly(demo):
    evaluator = Evaluator(demo, device="cpu")
    m = demo.metrics
    assert evaluator.accuracy(None) == m["zero_shot"]
    for t in demo.tasks:
        assert evaluator.accuracy(demo.vector(t), [t])[t] == m["finetuned"][t]
    ta = m["task_arithmetic"]
    assert evaluator.accuracy(merge_flat("task_arithmetic", demo.vectors(), demo.layout, scaling=ta["best_scaling"])) == ta["accuracy"]
    last = demo.atm_runs()["standard"]["rounds"][-1]
    assert evaluator.accuracy(demo.atm_delta("standard", last["round"])) == last["accuracy"]


def test_demo_outcomes_make_it_worth_exploring(demo):
    """The issue's bar for the demo world: zero-shot well above chance but at least 20 points under
    the fine-tuned average, fine-tuned at least 90 %, task arithmetic in between."""
    m = demo.metrics
    chance = sum(1 / len(demo.task(t)["classnames"]) for t in demo.tasks) / len(demo.tasks)
    assert m["zero_shot_average"] >= chance + 0.10
    assert m["zero_shot_average"] <= m["finetuned_average"] - 0.20
    assert m["finetuned_average"] >= 0.90
    assert m["zero_shot_average"] < m["task_arithmetic_average"] < m["finetuned_average"]


def test_shipped_evaluation_subsets_are_what_the_world_generates(demo):
    """The committed world code still generates exactly the committed demo's data."""
    from tvexplorer.data.sources import load_task
    for t in demo.tasks:
        data = load_task(demo.task(t)["data"])
        for split in ("test", "val"):
            stored = demo.eval_split(t, split)
            fresh = getattr(data, split)
            assert torch.equal(stored.images, fresh.images) and torch.equal(stored.labels, fresh.labels), (t, split)
