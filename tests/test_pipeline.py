"""The whole engine on the quick demo world: build, exact evaluation, alignment, ATM and the CLI."""
import json
import subprocess
import sys

import pytest
import torch

from tvexplorer.cli import main
from tvexplorer.core.cache import Cache
from tvexplorer.demo.build import demo_task_specs
from tvexplorer.merging import merge_flat
from tvexplorer.models.clip import ModelSpec
from tvexplorer.pipeline.build import build_cache
from tvexplorer.science.alignment import task_alignment
from tvexplorer.science.atm import run_atm
from tvexplorer.science.evaluation import Evaluator
from tvexplorer.science.training import TrainConfig


def test_stored_metrics_are_what_exact_evaluation_measures(quick_demo):
    cache = Cache.open(quick_demo)
    evaluator = Evaluator(cache, device="cpu")
    assert evaluator.accuracy(None) == cache.manifest.metrics.zero_shot
    for t in cache.tasks:
        assert evaluator.accuracy(cache.vector(t), [t])[t] == cache.manifest.metrics.finetuned[t]
    ta = cache.manifest.metrics.merge("task_arithmetic")
    result = evaluator.evaluate("task_arithmetic", scaling=ta.best_scaling)
    assert result.accuracy == ta.accuracy
    assert result.average == pytest.approx(cache.manifest.metrics.average("task_arithmetic"))


def test_evaluation_is_memoised_by_equivalent_settings(quick_demo):
    cache = Cache.open(quick_demo)
    evaluator = Evaluator(cache, device="cpu")
    merges = []
    real = evaluator.merged
    evaluator.merged = lambda *a, **k: merges.append(a) or real(*a, **k)
    a = evaluator.evaluate("ties", scaling=1.0)
    b = evaluator.evaluate("ties", scaling=1.0, k=20, coefficients={t: 1.0 for t in cache.tasks})
    assert a == b and len(merges) == 1  # the same merge: answered from the memo
    c = evaluator.evaluate("ties", scaling=1.0, coefficients={cache.tasks[0]: 0.0})
    assert c != a and len(merges) == 2
    # a fresh evaluator (no memo) gives the same numbers: evaluation is deterministic
    assert Evaluator(cache, device="cpu").evaluate("ties", scaling=1.0) == a
    finetuned = cache.manifest.metrics.finetuned
    for t in cache.tasks:
        assert a.normalized[t] == pytest.approx(a.accuracy[t] / finetuned[t]) or finetuned[t] == 0


def test_evaluation_streams_task_by_task_and_keeps_what_it_finished(quick_demo):
    cache = Cache.open(quick_demo)
    evaluator = Evaluator(cache, device="cpu")
    whole = Evaluator(cache, device="cpu").evaluate("task_arithmetic", scaling=0.7)
    stream = evaluator.evaluate_tasks("task_arithmetic", scaling=0.7)
    first = next(stream)
    assert first == (cache.tasks[0], whole.accuracy[cache.tasks[0]])
    other = evaluator.evaluate("average", scaling=1.0)  # another evaluation in between: its own weights
    assert other == Evaluator(cache, device="cpu").evaluate("average", scaling=1.0)
    assert dict([first, *stream]) == whole.accuracy  # the interrupted one reloads its own weights
    stopped = evaluator.evaluate_tasks("task_arithmetic", scaling=0.3)
    next(stopped)
    stopped.close()  # left after one task
    loads = []
    real = evaluator.task_accuracy
    evaluator.task_accuracy = lambda delta, task, token=None: loads.append(task) or real(delta, task, token)
    assert evaluator.evaluate("task_arithmetic", scaling=0.3).accuracy == \
        Evaluator(cache, device="cpu").evaluate("task_arithmetic", scaling=0.3).accuracy
    assert loads == cache.tasks[1:]  # the finished task came from the memo


def test_an_evaluation_done_elsewhere_is_memoised_here(quick_demo):
    """What a ZeroGPU call computes (`elsewhere`, by the evaluator moved to its device) is asked for once, at the
    first task not memoised, and answers later evaluations of the same merge from this evaluator's memo."""
    cache = Cache.open(quick_demo)
    evaluator = Evaluator(cache, device="cpu")
    assert evaluator.on("cpu") is evaluator  # on its own device already: itself
    moved = evaluator.on("cpu:0")  # another device (as a ZeroGPU call's cuda): a copy with its own encoder and memo
    assert moved is not evaluator and moved.encoder is not evaluator.encoder and moved.sets is evaluator.sets
    assert dict(moved.evaluate_tasks("ties", scaling=0.6)) == dict(Evaluator(cache, device="cpu").evaluate_tasks("ties", scaling=0.6))
    assert evaluator._recall(evaluator._key("ties", None, 0.6, "tau", {}), cache.tasks[0]) is None  # not in this memo
    local = Evaluator(cache, device="cpu").evaluate("ties", scaling=0.9).accuracy
    asked = []

    def elsewhere():
        asked.append(1)
        return dict(Evaluator(cache, device="cpu").evaluate_tasks("ties", scaling=0.9))
    next(evaluator.evaluate_tasks("ties", scaling=0.9))  # the first task here; the rest elsewhere, in one piece
    assert dict(evaluator.evaluate_tasks("ties", scaling=0.9, elsewhere=elsewhere)) == local and asked == [1]
    evaluator.task_accuracy = lambda *a, **k: pytest.fail("evaluated here although memoised")
    assert evaluator.evaluate("ties", scaling=0.9, coefficients={t: 1.0 for t in cache.tasks}).accuracy == local
    assert dict(evaluator.evaluate_tasks("ties", scaling=0.9, elsewhere=elsewhere)) == local and asked == [1]


def test_one_atm_round_equals_task_arithmetic_over_one_epoch_vectors(quick_demo):
    cache = Cache.open(quick_demo)
    run = cache.manifest.atm["standard"]
    assert run.coefficient == pytest.approx(1 / len(cache.tasks)) and run.budget_epochs == 1
    expected = merge_flat("task_arithmetic", cache.vectors("tau1"), cache.layout, scaling=1 / len(cache.tasks))
    got = cache.atm_delta("standard", 1)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-8)
    assert got.abs().max() > 0


def test_atm_continues_from_the_last_saved_round(demo_copy):
    cache = Cache.open(demo_copy)
    seen = []
    records = run_atm(cache, 1, variant="standard", device="cpu", on_round=seen.append)
    assert [r["round"] for r in records] == [2] and seen == records
    reopened = Cache.open(demo_copy)
    rounds = reopened.manifest.atm_rounds("standard")
    assert [r.round for r in rounds] == [1, 2]
    delta2 = reopened.atm_delta("standard", 2)
    assert not torch.equal(delta2, reopened.atm_delta("standard", 1))
    # the saved accuracy is the exact accuracy of the saved delta
    assert Evaluator(reopened, device="cpu").accuracy(delta2) == rounds[1].accuracy
    cos = torch.tensor(rounds[1].update_cosines)
    assert cos.shape == (3, 3) and torch.allclose(cos.diagonal(), torch.ones(3))


def test_atm_stops_between_tasks_without_saving_a_partial_round(demo_copy):
    cache = Cache.open(demo_copy)
    calls = []
    records = run_atm(cache, 2, device="cpu", should_stop=lambda: calls.append(1) or len(calls) > 2)
    assert records == []
    assert len(Cache.open(demo_copy).manifest.atm_rounds("standard")) == 1


def test_alignment_summary(quick_demo):
    cache = Cache.open(quick_demo)
    a = task_alignment(cache, "signs")
    assert len(a["epochs"]) == cache.manifest.training.epochs
    assert sum(e["norm_share"] for e in a["epochs"]) == pytest.approx(1.0)
    assert a["epochs"][-1]["cos_tau_e_tau"] == pytest.approx(1.0)
    assert -1 <= a["cos_tau_neg_g0"] <= 1 and a["norm_tau"] > 0
    assert a["epochs"][0]["cos_tau_e_tau"] == pytest.approx(a["cos_tau1_tau"], abs=1e-6)


def test_full_batch_gd_build_records_tau1_equal_to_minus_lr_g0(quick_demo, tmp_path):
    spec = demo_task_specs({"n_train": 60, "n_test": 20, "seed": 0, "only": ["digits", "textures"]})
    cfg = TrainConfig(optimizer="gd", lr=0.05, epochs=2, batch_size=16)
    cache = build_cache(tmp_path, ModelSpec(f"local-dir:{quick_demo / 'model'}"), spec, cfg, device="cpu")
    for t in cache.tasks:
        a = task_alignment(cache, t)
        assert a["cos_tau1_neg_g0"] >= 0.9999
        assert a["full_batch_rel_err"] <= 1e-4
        assert a["epochs"][0]["cos_update_neg_g0"] >= 0.9999


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tvexplorer", *map(str, args)], capture_output=True, text=True)


def test_cli_json_outputs(quick_demo):
    info = json.loads(run_cli("info", quick_demo, "--json", "--verify").stdout)
    assert set(info["tasks"]) == {"digits", "signs", "textures"}
    assert info["averages"]["zero_shot"] == pytest.approx(Cache.open(quick_demo).manifest.metrics.average("zero_shot"))
    r = run_cli("eval", quick_demo, "--method", "task_arithmetic", "--scaling", "0.5", "--coef", "signs=0", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["coefficients"] == {"signs": 0.0}
    assert out["average"] == pytest.approx(sum(out["accuracy"].values()) / 3)
    align = json.loads(run_cli("align", quick_demo, "--task", "digits", "--json").stdout)
    assert list(align["tasks"]) == ["digits"]
    # an AdamW cache's summary shows the cosines, never |tau1 + lr g0| as if it were a check
    summary = run_cli("align", quick_demo, "--task", "digits").stdout
    assert "cos(tau1,-g0)" in summary and "|tau1+lr g0|" not in summary and "no test here" in summary


def test_cli_summary_in_process(quick_demo, capsys):
    assert main(["eval", str(quick_demo), "--method", "tsv"]) == 0
    out = capsys.readouterr().out
    assert "normalized" in out and "average" in out


@pytest.mark.parametrize("args, message", [
    (["eval", "{cache}", "--method", "nope"], "unknown merge method 'nope'"),
    (["eval", "{cache}", "--method", "ties", "--coef", "mnist=0.3"], "mnist"),
    (["eval", "{cache}", "--method", "ties", "--coef", "signs=nan"], "not a finite number"),
    (["eval", "{cache}", "--method", "ties", "--scaling", "inf"], "not a finite number"),
    (["eval", "{cache}", "--method", "ties", "--param", "k=500"], "out of range"),
    (["eval", "{missing}", "--method", "ties"], "no such cache folder"),
    (["align", "{cache}", "--task", "mnist"], "unknown task 'mnist'"),
    (["atm", "{cache}", "--rounds", "0"], "at least 1"),
    (["eval", "{cache}"], "--method"),
    (["build-demo", "--out", "{missing}", "--recipe", "{missing}.json"], "cannot read recipe"),
])
def test_cli_bad_input_is_one_line(quick_demo, tmp_path, args, message):
    args = [a.format(cache=quick_demo, missing=tmp_path / "missing") for a in args]
    r = run_cli(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_cli_info_shows_every_reference_and_the_theory_slopes(quick_demo):
    info = json.loads(run_cli("info", quick_demo, "--json").stdout)
    cache = Cache.open(quick_demo)
    m = cache.manifest.metrics.to_json()
    for key in ("linear_probe", "multitask", "ties", "tsv", "iso_c"):
        assert info["averages"][key] == pytest.approx(m[f"{key}_average"])
    assert info["tasks"]["signs"]["linear_probe"] == m["linear_probe"]["signs"]
    assert info["best_scalings"]["tsv"] == m["tsv"]["best_scaling"]
    assert {r["task"] for r in info["theory_slopes"]} == set(cache.theory()["task"])
    summary = run_cli("info", quick_demo).stdout
    assert "linear probe %" in summary and "multi-task %" in summary and "SGD theory record" in summary


def test_diagnostics_row_is_what_the_cache_records(quick_demo):
    from tvexplorer.demo.build import diagnostics
    cache = Cache.open(quick_demo)
    m = cache.manifest.metrics.to_json()
    row = diagnostics(cache)
    zs, ft, ta = m["zero_shot_average"], m["finetuned_average"], m["task_arithmetic_average"]
    assert row["ZS"] == round(100 * zs, 1) and row["FT"] == round(100 * ft, 1)
    assert row["TA gain"] == round((ta - zs) / (ft - zs), 2)
    assert row["best λ"] == m["task_arithmetic"]["best_scaling"]
    assert row["probe/FT"] == round(m["linear_probe_average"] / ft, 2)
    assert row["ATM@3"] is None and row["preview err"] is not None  # the quick world runs one ATM round
    traj = cache.trajectory()
    first = traj[(traj["layer"] == "all") & (traj["epoch"] == 1)]
    assert row["min cos(τ1,τ)"] == round(float(first["cos_tau_e_tau"].min()), 2)
