"""ATM's update rule for any coefficient, its settings, the adaptive line search and the budget axis."""
import pytest
import torch

from tvexplorer.core.cache import Cache
from tvexplorer.science import atm
from tvexplorer.science.atm import Settings, budget, line_search, new_settings, run_atm, settings_of
from tvexplorer.science.training import batch_stream, finetune, prepare, steps_per_epoch, tune_steps


def fixed_updates(cache, scale):
    """A RoundTuner that returns known updates: task i's update is scale * (i + 1) * e_i (+ a shared part)."""
    n = cache.layout.numel

    def tune_round(cache_, cfg, settings, start, k, on_task_done):
        out = {}
        for i, t in enumerate(cache.tasks):
            u = torch.zeros(n)
            u[i] = scale * (i + 1) * k
            u[-1] = 0.5 * k
            out[t] = u
            on_task_done(t)
        return out
    return tune_round


def test_update_rule_for_a_coefficient_other_than_one_over_t(demo_copy):
    """theta_k = theta_{k-1} + alpha * sum_t u_t, by hand, with alpha = 1 on a new run (the old rule,
    alpha * sum_t (merged + u_t), gave T * merged + sum_t u_t)."""
    cache = Cache.open(demo_copy)
    tasks = cache.tasks
    rounds = run_atm(cache, 3, variant="adaptive", settings=new_settings("adaptive", alpha=1.0, alpha_rule="fixed",
                     weighting="uniform"), device="cpu", tune_round=fixed_updates(cache, 0.25))
    assert [r["round"] for r in rounds] == [1, 2, 3] and all(r["alpha"] == 1.0 for r in rounds)
    expected = torch.zeros(cache.layout.numel)
    for k in (1, 2, 3):
        for i, _ in enumerate(tasks):
            expected[i] += 0.25 * (i + 1) * k
        expected[-1] += 0.5 * k * len(tasks)
        got = Cache.open(demo_copy).atm_delta("adaptive", k).float()
        assert torch.allclose(got, expected, atol=1e-6), k


def test_paper_rule_is_the_mean_of_fine_tuned_models(demo_copy):
    """alpha = 1/T: theta_k - theta0 = (1/T) sum_t (theta_t^k - theta0), the paper's form."""
    cache = Cache.open(demo_copy)
    before = cache.atm_delta("standard", 1).float()
    tuner = fixed_updates(cache, 1.0)
    updates = tuner(cache, None, None, None, 2, lambda t: None)
    run_atm(cache, 1, variant="standard", device="cpu", tune_round=tuner)
    expected = sum(before + u for u in updates.values()) / len(cache.tasks)
    assert torch.allclose(Cache.open(demo_copy).atm_delta("standard", 2).float(), expected, atol=1e-6)


def fake_validation(delta):
    """A validation score that peaks where the merge's first entry is 3.0."""
    return 1.0 - abs(float(delta[0]) - 3.0)


def test_line_search_picks_the_validation_best_alpha():
    merged, direction = torch.zeros(4), torch.tensor([1.0, 0.0, 0.0, 0.0])
    alpha, scores = line_search(fake_validation, merged, direction, 1.0, (0.5, 1, 2, 3, 4), torch.float32)
    assert alpha == 3.0
    assert max(scores.values()) == scores["3"] and set(scores) == {"0.5", "1", "2", "3", "4"}
    # ties go to the smaller step
    alpha, _ = line_search(fake_validation, torch.full((4,), 3.0), direction, 1.0, (1, 2), torch.float32)
    assert alpha == 1.0


def test_adaptive_run_records_its_choice_and_weights(demo_copy):
    cache = Cache.open(demo_copy)
    [record] = run_atm(cache, 1, variant="adaptive", settings=new_settings("adaptive", alpha_grid=(1.0, 3.0)), device="cpu")
    run = Cache.open(demo_copy).manifest.atm["adaptive"]
    assert run.details["extension"] and settings_of(run).alpha_rule == "line_search" and settings_of(run).weighting == "loss"
    scores = record["line_search"]
    best = max(scores, key=lambda a: (scores[a], -float(a)))
    assert f"{record['alpha']:.6g}" == best
    assert sum(record["weights"].values()) == pytest.approx(len(cache.tasks))
    assert len(set(round(w, 6) for w in record["weights"].values())) > 1  # the losses differ between tasks
    assert settings_of(run).alpha_grid == (1.0, 3.0)


def test_budget_axis_counts_steps_against_fine_tuning(demo_copy):
    cache = Cache.open(demo_copy)
    cfg = cache.manifest.training
    # the quick demo's standard run: one round of one epoch against fine-tuning's cfg.epochs
    assert budget(cache, "standard") == pytest.approx([1 / cfg.epochs])
    run_atm(cache, 2, variant="adaptive", settings=new_settings("adaptive", budget_epochs=0.5, alpha_grid=(1.0,)),
            device="cpu")
    sizes = {t: cache.manifest.task(t).sizes.train for t in cache.tasks}
    per_round = sum(max(1, round(0.5 * steps_per_epoch(n, cfg))) for n in sizes.values())
    total = sum(cfg.epochs * steps_per_epoch(n, cfg) for n in sizes.values())
    assert budget(Cache.open(demo_copy), "adaptive") == pytest.approx([per_round / total, 2 * per_round / total])
    assert budget(cache, "posthoc")[0] > 1.0  # post-hoc starts from the fine-tuned models


def test_old_runs_read_as_the_paper_rule():
    s = settings_of({"coefficient": 0.25, "budget_epochs": 1, "train_split": "train", "start": {"method": "none"}, "rounds": []})
    assert s.paper_rule and s.alpha == 0.25 and s.optimizer == "adamw" and s.lr is None


@pytest.mark.parametrize("bad, message", [
    (dict(alpha_rule="greedy"), "alpha rule"), (dict(weighting="norm"), "weighting"), (dict(alpha=-1.0), "alpha"),
    (dict(budget_epochs=0), "budget_epochs"), (dict(optimizer="lion"), "optimizer"), (dict(lr=float("nan")), "lr")])
def test_bad_settings_are_one_line(bad, message):
    with pytest.raises(ValueError, match=message) as e:
        Settings(**bad)
    assert "\n" not in str(e.value)


def test_fractional_budget_continues_the_data_order(quick_demo):
    """Two half-epoch streams make up exactly fine-tuning's epoch order, and one epoch of tune_steps is
    finetune's epoch."""
    from tvexplorer.data.sources import load_task
    cache = Cache.open(quick_demo)
    cfg = cache.manifest.training
    split = load_task(cache.manifest.task("signs").data).train
    per_epoch = steps_per_epoch(len(split), cfg)
    whole = [labels for _, (_, labels) in zip(range(per_epoch + 2), batch_stream(split, cfg, 1, 0))]
    later = [labels for _, (_, labels) in zip(range(3), batch_stream(split, cfg, 1, per_epoch - 1))]
    for a, b in zip(whole[per_epoch - 1:], later):
        assert torch.equal(a, b)
    from tvexplorer.models.clip import build_image_encoder, get_flat, set_flat
    heads, scale = cache.heads()
    encoder = build_image_encoder(cache.manifest.model.encoder)
    objectives = prepare(encoder, heads, scale, cache.manifest.model.encoder, cfg, "cpu")
    start = get_flat(encoder)
    a = finetune(encoder, objectives["signs"], split, cfg, 1, first_epoch=1, epochs=1)[-1]
    set_flat(encoder, start)
    b = tune_steps(encoder, objectives["signs"], split, cfg, 1, first_step=per_epoch, steps=per_epoch)
    assert torch.equal(a, b)


def test_variants_are_data():
    assert set(atm.VARIANTS) >= {"standard", "posthoc", "adaptive"}
    assert atm.VARIANTS["standard"].paper_rule and atm.VARIANTS["posthoc"].paper_rule
    assert not atm.VARIANTS["adaptive"].paper_rule and "adaptive" in atm.EXTENSIONS


def test_mean_abs_cosine_by_hand():
    from tvexplorer.science.atm_report import mean_abs_cosine
    assert mean_abs_cosine([[1, -0.2, 0.4], [-0.2, 1, 0.0], [0.4, 0.0, 1]]) == pytest.approx((0.2 + 0.4 + 0.0) / 3)


def test_report_places_references_and_rounds_on_the_budget_axis(quick_demo):
    from tvexplorer.app.atm_figures import budget_figure, gains_figure, orthogonality_figure
    from tvexplorer.science.atm_report import atm_report, gains_table
    cache = Cache.open(quick_demo)
    report = atm_report(cache)
    refs = {r["key"]: r["budget"] for r in report["references"]}
    epochs = cache.manifest.training.epochs
    assert refs == {"zero_shot": 0.0, "finetuned": 1.0, "multitask": 1.0, "task_arithmetic": 1.0,
                    "task_arithmetic_one_epoch": pytest.approx(1 / epochs)}
    std = report["runs"]["standard"]
    assert [r["budget"] for r in std["rounds"]] == pytest.approx([1 / epochs])
    assert "paper" in std["description"] and not std["extension"]
    ta = cache.manifest.metrics.merge("task_arithmetic").accuracy
    table = gains_table(report, "standard")
    for t in cache.tasks:
        assert table.loc[t, "round 1"] == pytest.approx(100 * (std["rounds"][0]["accuracy"][t] - ta[t]))
    fig = budget_figure(report)
    names = [trace.name for trace in fig.data]
    assert any(n.startswith("ATM standard") for n in names) and any(n.startswith("fine-tuned") for n in names)
    assert len(orthogonality_figure(report).data) == len(report["runs"])
    assert gains_figure(report, "standard").data[0].z.shape == (len(cache.tasks), 1)
