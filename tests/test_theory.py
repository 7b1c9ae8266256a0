"""Plain SGD, paper B's SGD record and the multi-task baseline, on a tiny random ViT and the quick world."""
import pytest
import torch

from test_training import tiny_problem
from tvexplorer.core.cache import Cache
from tvexplorer.models.clip import get_flat, set_flat
from tvexplorer.science.alignment import cosine, norm
from tvexplorer.science.theory import PREDICTIONS, error_slopes, theory_record
from tvexplorer.science.training import Objective, TrainConfig, finetune, finetune_jointly, full_batch_gradient


def float64_problem(n=40):
    encoder, objective, split = tiny_problem(n=n)
    encoder.double()
    return encoder, Objective(objective.head.double(), objective.logit_scale, objective.mean, objective.std), split


def test_sgd_takes_plain_steps_on_full_batches_in_a_fixed_order():
    encoder, objective, split = float64_problem(n=40)
    theta0 = get_flat(encoder)
    cfg = TrainConfig(optimizer="sgd", lr=0.01, batch_size=16, epochs=2)  # 40 = 2 full batches + 8 left over
    seen = []
    thetas = finetune(encoder, objective, split, cfg, task_index=0, on_step=lambda: seen.append(1))
    assert len(seen) == 4 and thetas[0].dtype == torch.float64  # the remainder of 8 is never a step
    # replay by hand: the same two batches each epoch, theta -= lr * mean batch gradient
    set_flat(encoder, theta0)
    from tvexplorer.science.training import shuffle_seed
    order = list(split.batches(16, shuffle_seed=shuffle_seed(0, 0, 0)))[:2]
    for _ in range(2):
        for images, labels in order:
            grads = torch.autograd.grad(objective.loss(encoder, images, labels), list(encoder.parameters()))
            with torch.no_grad():
                for p, g in zip(encoder.parameters(), grads):
                    p.sub_(0.01 * g)
    assert torch.allclose(get_flat(encoder), thetas[1], rtol=0, atol=1e-12)


def test_sgd_refuses_bf16_and_splits_smaller_than_a_batch():
    with pytest.raises(ValueError, match="float64"):
        TrainConfig(optimizer="sgd", precision="bf16")
    encoder, objective, split = float64_problem(n=10)
    with pytest.raises(ValueError, match="at least one full batch"):
        finetune(encoder, objective, split, TrainConfig(optimizer="sgd", batch_size=16, epochs=1), task_index=0)


def test_theory_record_error_is_second_order_in_lr():
    encoder, objective, split = float64_problem(n=48)
    theta0 = get_flat(encoder)
    lrs = [1e-5, 1e-4, 1e-3]
    table = theory_record(encoder, theta0, objective, split, "tiny", 0, lrs, epochs=2, batch_size=16)
    assert len(table) == len(lrs) * 2 * len(PREDICTIONS)
    first = table[table["epoch"] == 1]
    # at epoch 1 both predictions are -lr K g0
    assert (first.groupby("lr")["rel_error"].nunique() == 1).all()
    slopes = error_slopes(table)
    assert slopes["slope"].between(0.8, 1.2).all(), slopes
    # the sum of per-epoch gradients predicts epoch 2 better than g0 alone
    second = table[table["epoch"] == 2].pivot(index="lr", columns="prediction", values="rel_error")
    assert (second["sum_of_epoch_gradients"] < second["epochs_times_g0"]).all()
    # and the record is a direct measurement: recompute one row by hand
    set_flat(encoder, theta0)
    g0 = full_batch_gradient(encoder, objective, split, 16)
    tau1 = finetune(encoder, objective, split, TrainConfig(optimizer="sgd", lr=1e-3, batch_size=16, epochs=1), 0)[0] - theta0
    row = table[(table["lr"] == 1e-3) & (table["epoch"] == 1)].iloc[0]
    predicted = -1e-3 * 3 * g0
    assert row["rel_error"] == pytest.approx(norm(tau1 - predicted) / norm(predicted), rel=1e-9)
    assert row["cosine"] == pytest.approx(cosine(tau1, predicted), rel=1e-9)


def test_joint_finetuning_runs_the_summed_steps_with_each_tasks_head():
    encoder, objective, split = tiny_problem(n=40)
    other = Objective(-objective.head, objective.logit_scale, objective.mean, objective.std)
    cfg = TrainConfig(lr=3e-3, weight_decay=0.0, batch_size=8, epochs=2, grad_clip=1.0)
    steps = []
    splits = {"a": split, "b": split.take(24)}
    objectives = {"a": objective, "b": other}
    theta0 = get_flat(encoder)
    before = {t: objectives[t].loss(encoder, s.images, s.labels).item() for t, s in splits.items()}
    theta = finetune_jointly(encoder, objectives, splits, cfg, on_step=lambda: steps.append(1))
    assert len(steps) == 2 * (5 + 3)  # the individual fine-tunes' steps together
    after = {t: objectives[t].loss(encoder, s.images, s.labels).item() for t, s in splits.items()}
    assert all(after[t] < before[t] for t in splits), (before, after)
    # deterministic, and not the same as training task a alone
    set_flat(encoder, theta0)
    assert torch.equal(finetune_jointly(encoder, objectives, splits, cfg), theta)
    set_flat(encoder, theta0)
    alone = finetune(encoder, objective, split, cfg, task_index=0)[-1]
    assert not torch.allclose(alone, theta)
    with pytest.raises(ValueError, match="AdamW"):
        finetune_jointly(encoder, objectives, splits, TrainConfig(optimizer="sgd"))


def test_quick_world_records_theory_probe_and_multitask(quick_demo):
    """The issue's check on the quick world: the SGD error falls linearly with lr (slope 0.8 to 1.2)."""
    cache = Cache.open(quick_demo)
    table = cache.theory()
    assert table is not None and table["task"].nunique() >= 3 and table["lr"].nunique() >= 4
    assert table["lr"].max() / table["lr"].min() >= 100
    slopes = error_slopes(table[table["epoch"] == 1])
    assert slopes["slope"].between(0.8, 1.2).all(), slopes
    m = cache.manifest.metrics.to_json()
    assert set(m["linear_probe"]) == set(m["multitask"]) == set(cache.tasks)
    assert all(0 <= v <= 1 for v in [*m["linear_probe"].values(), *m["multitask"].values()])
    for method in ("ties", "tsv", "iso_c", "task_arithmetic"):
        scalings = [float(s) for s in m[method]["val_average_by_scaling"]]
        assert min(scalings) == 0.0 and max(scalings) == 1.5 and len(scalings) == 31
