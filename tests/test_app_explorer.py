"""The app's glue without a browser: explorer (validation, evaluation, alignment, ATM), work copies,
the background runs, figures and the tabs' handlers."""
import json
import math
import shutil
import time
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

import apphelpers  # first: it turns gradio analytics off before gradio is imported
from tvexplorer.app import figures, presenters, runs, ui
from tvexplorer.app.tabs import alignment, atm, merge
from tvexplorer.app.tabs.about import about_text
from tvexplorer.app.explorer import Explorer, clean
from tvexplorer.app.tabs.common import api_errors, gr
from tvexplorer.core import workcopy
from tvexplorer.core.cache import Cache
from tvexplorer.core.errors import CacheError
from tvexplorer.merging import METHODS
from tvexplorer.science.alignment import cosine, cosine_matrix
from tvexplorer.science.evaluation import Evaluator


@pytest.fixture(scope="module")
def cache_dir(quick_demo, tmp_path_factory):
    dst = tmp_path_factory.mktemp("explorer") / "cache"
    shutil.copytree(quick_demo, dst)
    return dst


@pytest.fixture(scope="module")
def ex(cache_dir):
    return Explorer(cache_dir, device="cpu", read_only=False, precision="float32")  # exact: compared with recorded numbers


@pytest.fixture(scope="module")
def reference(quick_demo):
    return Evaluator(Cache.open(quick_demo), device="cpu")


def strict_json(obj):
    return json.loads(json.dumps(obj, allow_nan=False))


# ---------------------------------------------------------------- evaluation

def test_evaluate_returns_plain_data_equal_to_the_evaluator(ex, reference):
    tasks = ex.tasks
    got = ex.evaluate("task_arithmetic", coefficients={tasks[0]: 0.5}, scaling=0.4)
    want = reference.evaluate("task_arithmetic", coefficients={tasks[0]: 0.5}, scaling=0.4)
    assert strict_json(got) == got
    assert got["accuracy"] == want.accuracy and got["average"] == pytest.approx(want.average)
    assert got["coefficients"] == {tasks[0]: 0.5, **{t: 1.0 for t in tasks[1:]}}
    assert got["zero_shot"] == ex.metrics.zero_shot and got["finetuned"] == ex.metrics.finetuned
    # defaults: the method's own scaling and parameters
    ties = ex.evaluate("ties")
    assert ties["scaling"] == 1.0 and ties["params"] == {"k": 20.0, "fusionbench": 0}
    assert ties["accuracy"] == reference.evaluate("ties").accuracy
    # numeric strings and a JSON object in a string, as API clients may send
    assert ex.evaluate("task_arithmetic", coefficients=json.dumps({tasks[0]: "0.5"}), scaling="0.4")["accuracy"] == got["accuracy"]


def test_every_method_and_vector_kind_evaluates(ex):
    for method in ("task_arithmetic", "average", "ties", "dare", "tsv", "iso_c"):
        r = ex.evaluate(method, vectors="tau1")
        assert set(r["accuracy"]) == set(ex.tasks) and 0 <= r["average"] <= 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(scaling=float("nan")), "finite"),
    (dict(scaling=float("inf")), "finite"),
    (dict(scaling="NaN"), "finite"),
    (dict(scaling=2.5), "between -1 and 2"),
    (dict(scaling=True), "must be a number"),
    (dict(scaling="abc"), "must be a number"),
    (dict(coefficients={"digits": float("-inf")}), "finite"),
    (dict(coefficients={"digits": "nan"}), "finite"),
    (dict(coefficients={"digits": 2.01}), "between -1 and 2"),
    (dict(coefficients={"digits": None}), "must be a number"),
    (dict(coefficients={"nope": 1.0}), "unknown task 'nope'"),
    (dict(coefficients="{not json"), "JSON object"),
    (dict(coefficients=[1, 2]), "object mapping"),
    (dict(method="nope"), "unknown method 'nope'"),
    (dict(method=None), "method must be"),
    (dict(method="atm:standard:99"), "no round"),
    (dict(method="ties", params={"k": 0}), "out of range"),
    (dict(method="ties", params={"k": float("nan")}), "finite"),
    (dict(method="ties", params={"q": 1}), "no parameter 'q'"),
    (dict(method="dare", params={"p": 1.0}), "out of range"),
    (dict(method="dare", params={"seed": 1.5}), "integer"),
    (dict(vectors="g0"), "vectors must be one of"),
])
def test_bad_input_is_a_one_line_value_error(ex, kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        ex.evaluate(**kwargs)
    assert "\n" not in str(info.value)


def test_saved_atm_rounds_are_methods(ex):
    keys = [k for _, k in ex.method_choices()]
    assert keys[:6] == ["task_arithmetic", "average", "ties", "dare", "tsv", "iso_c"]
    assert "atm:standard:1" in keys and "atm:posthoc:1" in keys
    record = ex.atm_cache.manifest.atm_rounds("standard")[0]
    r = ex.evaluate("atm:standard:1")
    assert r["accuracy"] == record.accuracy and r["label"] == "ATM standard, round 1" and r["scaling"] == 1.0
    assert ex.evaluate("ATM standard, round 1")["accuracy"] == record.accuracy  # the label works too
    # scaling 1 reproduces the saved evaluation exactly
    assert ex.evaluator.result(ex.atm_cache.atm_delta("standard", 1).float()).accuracy == record.accuracy
    half = ex.evaluate("atm:standard:1", scaling=0.5)
    assert half["accuracy"] == ex.evaluator.result(0.5 * ex.atm_cache.atm_delta("standard", 1).float()).accuracy
    with pytest.raises(ValueError, match="do not apply"):
        ex.evaluate("atm:standard:1", coefficients={ex.tasks[0]: 0.5})


def test_presets(ex):
    T = len(ex.tasks)
    assert ex.preset("equal", "ties") == {"method": "ties", "scaling": 1.0, "coefficients": dict.fromkeys(ex.tasks, 1.0)}
    assert ex.preset("inverse_t")["scaling"] == round(1 / T, 4)
    best = ex.preset("best_val", "ties")
    assert best["method"] == "task_arithmetic" and best["scaling"] == ex.metrics.merge("task_arithmetic").best_scaling
    assert ex.preset("best_val", vectors="tau1")["scaling"] == ex.metrics.merge("task_arithmetic_one_epoch").best_scaling
    zero = ex.preset("zero")
    assert zero["scaling"] is None and set(zero["coefficients"].values()) == {0.0}
    # zero everything is the zero-shot model
    assert ex.evaluate("task_arithmetic", coefficients=zero["coefficients"])["accuracy"] == ex.metrics.zero_shot
    with pytest.raises(ValueError, match="unknown preset"):
        ex.preset("nope")


def test_result_table(ex):
    r = ex.evaluate("task_arithmetic", scaling=0.3)
    table = presenters.result_table(ex, r)
    assert list(table["task"]) == [*ex.tasks, "average"]
    assert list(table.columns) == ["task", "zero-shot %", "merged %", "fine-tuned %", "normalized %"]
    assert table["merged %"].iloc[-1] == pytest.approx(100 * r["average"], abs=0.01)
    assert table.loc[0, "merged %"] == pytest.approx(100 * r["accuracy"][ex.tasks[0]], abs=0.01)


def test_clean_makes_strict_json():
    assert clean({"a": float("nan"), "b": (1, float("inf")), "c": torch.tensor(0.5).item(), 3: True}) == \
        {"a": None, "b": [1, None], "c": 0.5, "3": True}


# ---------------------------------------------------------------- alignment

def test_alignment_plain_data(ex):
    a = ex.alignment()
    assert strict_json(a)
    assert set(a["tasks"]) == set(ex.tasks) and set(a["layers"]) == set(ex.tasks)
    assert a["optimizer"] == ex.source.manifest.training.optimizer and a["full_batch_exact"] is (a["optimizer"] == "gd")
    one = a["tasks"][ex.tasks[0]]
    assert -1 <= one["cos_tau_neg_g0"] <= 1 and one["full_batch_rel_err"] >= 0
    assert [e["epoch"] for e in one["epochs"]] == list(range(1, ex.source.manifest.training.epochs + 1))
    assert sum(e["norm_share"] for e in one["epochs"]) == pytest.approx(1.0)
    assert len(a["layers"][ex.tasks[0]]) == len(ex.source.layout.names)
    assert {"tau", "tau1", "g0", "atm:standard:1", "atm:posthoc:1"} <= set(a["cosine_matrices"])
    m = a["cosine_matrices"]["atm:standard:1"]
    assert m["matrix"] == [list(row) for row in ex.atm_cache.manifest.atm_rounds("standard")[0].update_cosines]
    single = ex.alignment(ex.tasks[1], matrices=["tau"])
    assert list(single["tasks"]) == [ex.tasks[1]] and list(single["cosine_matrices"]) == ["tau"]
    with pytest.raises(ValueError, match="unknown task"):
        ex.alignment("nope")
    with pytest.raises(ValueError, match="unknown matrix"):
        ex.cosine_matrix("nope")
    # under AdamW the text shows cosines and points to the SGD record, never |tau1 + lr g0| as a check
    text = presenters.full_batch_text(ex, ex.tasks)
    assert ex.source.manifest.training.optimizer == "adamw"
    assert f"{one['cos_tau1_neg_g0']:.3f}" in text and "Theory section" in text and "no test of the theorem" in text
    assert f"{one['full_batch_rel_err']:.3g}" not in text
    assert "|tau1 + lr g0| / |lr g0|" not in presenters.alignment_summary(ex, ex.tasks).columns


def test_theory_record_and_references(ex):
    theory = ex.theory()
    assert {r["task"] for r in theory["rows"]} == set(ex.source.theory()["task"])
    assert all(r["slope"] > 0 for r in theory["slopes"])
    refs = ex.references()
    m = ex.metrics.to_json()
    assert refs["multi-task (joint fine-tuning)"] == m["multitask_average"]
    assert refs["linear probe of theta0"] == m["linear_probe_average"]
    result = ex.evaluate("task_arithmetic", scaling=0.3)
    assert result["multitask"] == m["multitask"] and result["linear_probe"] == m["linear_probe"]
    fig = figures.theory_figure(theory)
    assert fig.layout.xaxis.type == fig.layout.xaxis2.type == "log"
    assert fig.layout.yaxis.type == fig.layout.yaxis2.type == "log"
    guides = [tr for tr in fig.data if tr.name == "slope 1 (theorem)"]
    assert guides and all(tr.y[1] / tr.y[0] == pytest.approx(tr.x[1] / tr.x[0]) for tr in guides)
    merge = go.Figure(figures.merge_figure(result, ex.tasks))  # plotly validates the JSON
    assert {"multi-task (joint fine-tuning)", "linear probe of theta0"} <= {tr.name for tr in merge.data}


def test_cosine_matrix_matches_pairwise_cosines(ex):
    vectors = ex.source.vectors("tau")
    fast = cosine_matrix(vectors, chunk=1000)  # several chunks
    for a in ex.tasks:
        for b in ex.tasks:
            assert fast.loc[a, b] == pytest.approx(cosine(vectors[a], vectors[b]), abs=1e-10)


# ---------------------------------------------------------------- figures

def test_figures_have_titles_and_the_numbers(ex):
    r = ex.evaluate("task_arithmetic", scaling=0.3)
    plain = figures.merge_figure(r, ex.tasks)
    json.dumps(plain)  # what the app sends as is
    assert isinstance(plain["layout"]["template"], dict), "plotly.js knows no template names: it must be expanded"
    fig = go.Figure(plain)  # plotly validates the JSON
    assert fig.layout.yaxis.title.text == "test accuracy (%)" and fig.layout.xaxis.title.text == "task"
    merged = fig.data[1]
    assert list(merged.x) == [*ex.tasks, "average"]
    assert list(merged.y[:-1]) == pytest.approx([100 * r["accuracy"][t] for t in ex.tasks])
    assert "%" in merged.hovertemplate
    al = {t: ex.task_alignment(t) for t in ex.tasks}
    ep = figures.epochs_figure(al)
    assert ep.layout.xaxis2.title.text == "epoch" and "cosine" in ep.layout.yaxis.title.text
    for tables in ({ex.tasks[0]: ex.layer_table(ex.tasks[0])}, {t: ex.layer_table(t) for t in ex.tasks}):
        lf = figures.layers_figure(tables)
        assert any(d.type == "heatmap" for d in lf.data)
    mf = figures.matrix_figure(ex.cosine_matrix("tau"), "tau")
    assert mf.data[0].zmin == -1 and mf.layout.xaxis.title.text == "task"
    from tvexplorer.app.atm_figures import budget_figure
    report = ex.atm_summary()
    af = budget_figure(report)
    names = [d.name for d in af.data]
    assert any(n.startswith("task arithmetic:") for n in names) and "ATM standard (paper)" in names
    atm = next(d for d in af.data if d.name == "ATM standard (paper)")
    rounds = report["runs"]["standard"]["rounds"]
    assert list(atm.x) == pytest.approx([0.0] + [r["budget"] for r in rounds])  # from theta0, then each round's budget
    assert list(atm.y)[1:] == pytest.approx([100 * r["average"] for r in rounds])
    assert "fine-tuning" in af.layout.xaxis.title.text


# ---------------------------------------------------------------- ATM, work copies, jobs

def test_read_only_cache_gets_a_copy_on_write_work_folder(quick_demo, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(quick_demo, src)
    before = (src / "manifest.json").read_bytes()
    ex = Explorer(src, device="cpu", read_only=True, workdir=tmp_path / "work")
    assert ex.atm_root == src and ex.work_folder.parent == tmp_path / "work"
    assert "read-only" in ex.where_saved() and str(ex.work_folder) in ex.where_saved()
    apphelpers.wait_idle()
    job = ex.start_atm(1, "standard").wait()
    assert job.state == "finished" and sum(job.outputs) == 1 and job.error is None and job.ended >= job.started
    assert (src / "manifest.json").read_bytes() == before and not (src / "atm/standard/round_0002.safetensors").exists()
    work = ex.work_folder
    assert ex.atm_root == work and (work / "atm/standard/round_0002.safetensors").is_file()
    big = work / "vectors" / f"{ex.tasks[0]}.safetensors"
    assert big.is_symlink() or big.stat().st_nlink > 1  # linked, not copied
    assert not (work / "manifest.json").is_symlink() and (work / "manifest.json").stat().st_nlink == 1
    assert [k for _, k in ex.method_choices()].count("atm:standard:2") == 1
    # a restarted app on the same source finds the saved round
    again = Explorer(src, device="cpu", read_only=True, workdir=tmp_path / "work")
    assert again.atm_root == work and len(again.atm_cache.manifest.atm_rounds("standard")) == 2
    Cache.open(work).verify()


def test_work_copy_refuses_a_foreign_folder(quick_demo, tmp_path):
    cache = Cache.open(quick_demo)
    folder = tmp_path / "not-ours"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    with pytest.raises(CacheError, match="not a tvexplorer work folder"):
        workcopy.make_work_copy(cache, folder)
    assert (folder / "keep.txt").exists()


def test_is_writable(tmp_path, quick_demo):
    assert workcopy.is_writable(tmp_path)
    assert not workcopy.is_writable(tmp_path / "missing")
    linked = tmp_path / "snapshot"
    linked.mkdir()
    (linked / "manifest.json").symlink_to(quick_demo / "manifest.json")
    assert not workcopy.is_writable(linked)  # a hub snapshot's files belong to the hub cache


def test_one_run_at_a_time_and_cancel_keeps_finished_rounds(ex):
    apphelpers.wait_idle()
    start = len(ex.atm_cache.manifest.atm_rounds("standard"))
    job = ex.start_atm(3, "standard")
    with pytest.raises(runs.Busy, match="busy"):
        ex.start_atm(1, "posthoc")
    assert ex.atm_status()["busy"] is True
    # cancel once the first round is saved
    while job.running and len(ex.atm_cache.manifest.atm_rounds("standard")) == start:
        job.finished.wait(0.05)
    assert runs.cancel("atm") is True
    job.finished.wait(120)
    saved = len(Cache.open(ex.atm_root).manifest.atm_rounds("standard"))
    assert job.state == "cancelled" and 1 <= sum(job.outputs) < 3 and saved == start + sum(job.outputs)
    ended = job.seconds
    time.sleep(0.2)
    assert job.seconds == ended  # a finished run's time stops at its end
    status = ex.atm_status()
    assert status["state"] == "cancelled" and status["busy"] is False and strict_json(status)
    assert runs.cancel("atm") is False  # nothing runs now


def test_atm_request_validation(ex):
    for rounds in (0, 11, 1.5, "x", float("nan"), None):
        with pytest.raises(ValueError):
            ex.start_atm(rounds, "standard")
    with pytest.raises(ValueError, match="unknown ATM variant"):
        ex.start_atm(1, "other")


# ---------------------------------------------------------------- gradio handlers

@pytest.fixture(scope="module")
def handlers(ex):
    return ui.App(ex)


def settings(method="task_arithmetic", scaling=0.3, **kw):
    return {"method": method, "vectors": "tau", "scaling": scaling, "params": {}, "coefficients": {}, "layers": "", **kw}


def last(updates):
    *_, final = updates
    return final


def test_ui_evaluate_handler(handlers, ex):
    updates = list(merge.evaluate(handlers, settings(scaling=0.35)))
    # the status line after each task but the last, with that task's exact number; then everything
    assert len(updates) == len(ex.tasks)
    exact = ex.evaluate("task_arithmetic", scaling=0.35)["accuracy"]
    for k, update in enumerate(updates[:-1], start=1):
        assert set(update) == {"status"} and update["status"].startswith(f"◑ **Exact {k}/{len(ex.tasks)}**")
        assert f"{ex.tasks[k - 1]} {100 * exact[ex.tasks[k - 1]]:.1f} %" in update["status"]
    out = last(merge.evaluate(handlers, settings()))
    assert out["status"].startswith("✓ **Up to date**")
    assert out["raw"]["accuracy"] == ex.evaluate("task_arithmetic", scaling=0.3)["accuracy"]
    assert list(pd.read_csv(out["csv"])["task"]) == [*ex.tasks, "average"] and list(out["table"]["task"])[-1] == "average"
    # parameters of the chosen method are taken from their controls, named method.parameter
    out = last(merge.evaluate(handlers, settings("ties", 1.0, params={"ties.k": 50, "dare.p": 0.1})))
    assert out["raw"]["params"] == {"k": 50.0, "fusionbench": 0}
    with pytest.raises(ValueError, match="between -1 and 2"):  # wire() turns it into a warning and not_updated
        next(merge.evaluate(handlers, settings(coefficients={ex.tasks[0]: 5.0})))
    assert merge.not_updated("x")["status"].startswith("⚠ **Not updated:** x")
    # one control per method parameter (ties k, dare p, ...), in the groups the method chooser shows
    assert merge.PARAM_METHODS == [m.name for m in METHODS.values() if m.params]


def test_the_merges_the_cache_records_are_answered_from_the_record(quick_demo, tmp_path):
    """The page opens on task arithmetic at its validation-best scaling, which the build measured: no
    evaluation (on ZeroGPU, no GPU call) for it. A plan that evaluates on subsets makes the records (over
    every stored image) another measurement: there they are not used."""
    from tvexplorer.pipeline.evalplan import EvaluationPlan
    ta = Cache.open(quick_demo).manifest.metrics.merge("task_arithmetic")
    recorded = Explorer(quick_demo, device="cpu", workdir=tmp_path / "a")
    recorded.evaluator.task_accuracy = lambda *a, **k: pytest.fail("evaluated although the cache records it")
    assert recorded.evaluate("task_arithmetic", scaling=ta.best_scaling)["accuracy"] == ta.accuracy
    stored = {t: len(s) for t, s in recorded.evaluator.sets.items()}
    plan = EvaluationPlan("cpu-basic", "cpu", {t: 10 for t in stored}, stored, 100.0, 0.1, 1.0, "given")
    planned = Explorer(quick_demo, device="cpu", workdir=tmp_path / "b", plan=plan)
    evaluated = []
    real = planned.evaluator.task_accuracy
    planned.evaluator.task_accuracy = lambda delta, task, token=None: evaluated.append(task) or real(delta, task, token)
    planned.evaluate("task_arithmetic", scaling=ta.best_scaling)
    assert evaluated == planned.tasks


def test_an_evaluation_stops_once_its_browser_session_asks_for_newer_settings(handlers, ex):
    """A superseded evaluation shows nothing more (its numbers would overwrite the newer preview): it stops at
    the next task, or before its first where it was still queued when the newer request came; other
    sessions' evaluations go on, and settings asked for again are current again."""
    older, newer = settings(scaling=0.45), settings(scaling=0.55)
    merge.preview(handlers, older, "tab-a")
    running = merge.evaluate(handlers, older, "tab-a")
    assert next(running)["status"].startswith("◑ **Exact 1/")
    merge.preview(handlers, older, "tab-b")
    assert last(merge.evaluate(handlers, older, "tab-b"))["status"].startswith("✓")  # another tab: not affected
    merge.preview(handlers, newer, "tab-a")
    assert list(running) == []
    queued = merge.evaluate(handlers, older, "tab-a")  # started after the newer preview: nothing at all
    assert list(queued) == []
    assert last(merge.evaluate(handlers, newer, "tab-a"))["raw"]["accuracy"] == \
        ex.evaluate("task_arithmetic", scaling=0.55)["accuracy"]
    merge.preview(handlers, older, "tab-a")  # back to the older settings: their evaluation is current again
    assert last(merge.evaluate(handlers, older, "tab-a"))["status"].startswith("✓")


def test_preview_is_labelled_and_matches_the_stored_linearisation(ex, handlers):
    from tvexplorer.science.preview import Preview
    preview = Preview.open(Cache.open(ex.source.root))
    coefficients = {ex.tasks[0]: 0.5}
    got = ex.preview("task_arithmetic", coefficients=coefficients, scaling=0.4)
    assert got["preview"] is True and "preview" in got["label"] and "differed by up to" in got["error_note"]
    assert got["accuracy"] == preview.accuracy({**dict.fromkeys(ex.tasks, 1.0), **coefficients}, 0.4)
    # averaging is task arithmetic at scaling / T; at scaling 0 the preview is the exact zero-shot model
    assert ex.preview("average", scaling=0.9)["accuracy"] == preview.accuracy(None, 0.9 / len(ex.tasks))
    assert ex.preview("task_arithmetic", scaling=0.0)["accuracy"] == ex.evaluate("task_arithmetic", scaling=0.0)["accuracy"]
    assert ex.preview("ties", scaling=1.0) is None and ex.preview("atm:standard:1") is None
    with pytest.raises(ValueError, match="between -1 and 2"):
        ex.preview("task_arithmetic", coefficients={ex.tasks[0]: 5.0})
    out = merge.preview(handlers, settings(vectors="tau1"))
    assert out["status"].startswith("◔ **Preview** (first-order, not exact)") and "exact numbers on their way" in out["status"]
    assert "csv" not in out and "raw" not in out  # the download and raw JSON wait for the exact numbers
    expected = preview.accuracy(None, 0.3, kind="tau1")
    assert list(out["table"]["merged %"])[:-1] == [round(100 * expected[t], 2) for t in ex.tasks]
    assert merge.preview(handlers, settings("tsv", 1.0)) == {}
    assert handlers.api.api_preview("ties") == {}


def test_ui_method_and_presets(handlers, ex):
    updates = merge.settings_updates(handlers, "atm:standard:1")
    assert updates["scaling"]["value"] == 1.0 and "vectors" not in updates
    assert all(u["interactive"] is False for u in updates["coefficients"].values())
    assert "fixed merged model" in updates["hint"]
    ties = merge.settings_updates(handlers, "ties")
    assert {m: g["visible"] for m, g in ties["groups"].items()} == {m: m == "ties" for m in merge.PARAM_METHODS}
    best = merge.apply_preset(handlers, "best_val", settings("ties", 1.0))
    assert best["method"]["value"] == "task_arithmetic" and best["scaling"]["value"] == ex.metrics.merge("task_arithmetic").best_scaling
    zero = merge.apply_preset(handlers, "zero", settings("ties", 0.7))
    assert zero["scaling"]["value"] == 0.7 and [u["value"] for u in zero["coefficients"].values()] == [0.0] * len(ex.tasks)


def test_ui_task_conditioned_method_says_it_has_no_preview(handlers, ex):
    assert [k for _, k in ex.method_choices()][:len(METHODS)] == list(METHODS)  # the chooser reads the registry
    hint = merge.settings_updates(handlers, "emr")["hint"]
    assert "Task-conditioned" in hint and "No instant preview for this method" in hint
    assert "No instant preview" not in merge.settings_updates(handlers, "task_arithmetic")["hint"]
    assert ex.preview("emr") is None
    result = ex.evaluate("emr")
    assert result["label"] == METHODS["emr"].label and set(result["accuracy"]) == set(ex.tasks)


def test_ui_alignment_and_atm_view(handlers, ex):
    out = alignment.alignment(ex, {"task": "all", "matrix_kind": "tau"})
    assert "no test of the theorem" in out["note"] and list(out["table"]["task"]) == ex.tasks
    assert "Measured slopes after one epoch" in out["theory_note"] and out["theory_plot"].layout.xaxis.type == "log"
    out = alignment.alignment(ex, {"task": ex.tasks[0], "matrix_kind": "atm:standard:1"})
    assert list(out["table"]["task"]) == [ex.tasks[0]]
    with pytest.raises(ValueError, match="unknown task"):
        alignment.alignment(ex, {"task": "nope", "matrix_kind": "tau"})
    view = atm.view(ex)
    assert "ATM" in view["chart"].layout.title.text and list(view["table"].columns)[:2] == ["variant", "round"]
    assert ("ATM standard, round 1", "atm:standard:1") in view["method"]["choices"]
    about = about_text(ex)
    assert "arXiv:2508.16082" in about and "arXiv:2411.03055" in about and f"{ex.source.layout.numel:,}" in about


def test_api_functions_raise_one_line_gradio_errors(handlers):
    with pytest.raises(gr.Error, match="finite"):
        handlers.api.api_evaluate(scaling=float("nan"))
    with pytest.raises(gr.Error, match="unknown task"):
        handlers.api.api_alignment("nope")

    def boom():
        raise RuntimeError("kaput\nsecond line")
    with pytest.raises(gr.Error) as info:
        api_errors(boom)()
    assert str(info.value.message) == "internal error (RuntimeError): kaput"


def test_missing_or_corrupt_cache_gives_an_unavailable_app(tmp_path, quick_demo):
    h = ui.load(tmp_path / "missing")
    assert isinstance(h, ui.Unavailable) and "no such cache folder" in h.message
    bad = tmp_path / "bad"
    shutil.copytree(quick_demo, bad)
    (bad / "manifest.json").write_text("{ not json")
    h = ui.load(bad)
    assert isinstance(h, ui.Unavailable) and "not valid JSON" in h.message and "\n" not in h.message
    with pytest.raises(gr.Error, match="no cache loaded"):
        h.api.api_evaluate()
    apphelpers.load_app_module().build(h)  # the page still builds


def test_corrupt_tensor_file_is_reported_not_crashed(quick_demo, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(quick_demo, bad)
    ex = Explorer(bad, device="cpu", read_only=False)
    path = bad / "vectors" / f"{ex.tasks[0]}.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, different content: found by the sha256 check on first use
    path.write_bytes(bytes(data))
    h = ui.App(ex)
    with pytest.raises(CacheError, match="sha256"):
        next(merge.evaluate(h, settings()))
    with pytest.raises(gr.Error, match="sha256"):
        h.api.api_evaluate()
    assert math.isfinite(h.api.api_evaluate("atm:standard:1")["average"])  # the rest keeps working


def test_cache_locations_and_read_only_defaults(quick_demo, tmp_path, monkeypatch):
    from tvexplorer.app import environment as explorer
    from tvexplorer.app.explorer import open_explorer
    monkeypatch.delenv("TVEXPLORER_CACHE", raising=False)
    assert explorer.default_cache_path() == apphelpers.ROOT / "assets" / "demo"
    monkeypatch.setenv("TVEXPLORER_CACHE", str(quick_demo))
    assert explorer.resolve_location(explorer.default_cache_path()) == quick_demo
    calls = []
    shutil.copytree(quick_demo, tmp_path / "snapshot" / "vit-b-32")
    shutil.copytree(quick_demo, tmp_path / "snapshot", dirs_exist_ok=True)

    def fake_download(repo_id, repo_type, revision, allow_patterns):
        calls.append((repo_id, repo_type, revision, allow_patterns))
        return str(tmp_path / "snapshot")
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert explorer.resolve_location("hf://datasets/org/caches/vit-b-32@v1") == tmp_path / "snapshot" / "vit-b-32"
    assert explorer.resolve_location("hf://org/model") == tmp_path / "snapshot"
    assert calls == [("org/caches", "dataset", "v1", ["vit-b-32/**"]), ("org/model", "model", None, None)]
    with pytest.raises(ValueError, match="expected hf://"):
        explorer.resolve_location("hf://datasets/only-org")
    # on a Space (and on ZeroGPU) the cache is read-only and evaluation stays on the CPU
    copy = tmp_path / "c"
    shutil.copytree(quick_demo, copy)
    monkeypatch.setenv("SPACE_ID", "someone/explorer")
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setenv("TVEXPLORER_WORKDIR", str(tmp_path / "work"))
    ex = open_explorer(copy)
    assert ex.read_only and ex.evaluator.device.type == "cpu" and ex.work_folder.parent == tmp_path / "work"


def test_hub_caches_are_verified_once_and_used_offline(quick_demo, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    from tvexplorer.core.errors import CacheError
    from tvexplorer.core.hub import resolve_location
    snapshot = tmp_path / "hub" / "snapshot"
    shutil.copytree(quick_demo, snapshot)
    online, hashed = [True], []

    def fake_download(repo_id, repo_type=None, revision=None, allow_patterns=None, local_files_only=False):
        if not online[0] and not local_files_only:
            raise ConnectionError("Max retries exceeded with url: https://huggingface.co/api/datasets/org/c")
        return str(snapshot)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    import tvexplorer.core.stamps as stamps_module
    real = stamps_module.sha256_file
    monkeypatch.setattr(stamps_module, "sha256_file", lambda p: hashed.append(p.name) or real(p))

    assert resolve_location("hf://datasets/org/c") == snapshot
    assert {Path(rel).name for rel in Cache.open(snapshot).manifest.files} <= set(hashed)  # every file checked
    hashed.clear()
    assert resolve_location("hf://datasets/org/c") == snapshot
    assert hashed == ["manifest.json"]  # the same download is not hashed again

    online[0] = False
    assert resolve_location("hf://datasets/org/c") == snapshot
    err = capsys.readouterr().err
    assert "offline" in err and str(snapshot) in err and "ConnectionError" in err

    # a download whose files do not match its manifest is refused, naming the file
    damaged = Path(snapshot / "heads.safetensors")
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 1
    damaged.write_bytes(bytes(data))
    online[0] = True
    (snapshot / "manifest.json").write_text((snapshot / "manifest.json").read_text() + " ")  # a new manifest: checked again
    with pytest.raises(CacheError, match="heads.safetensors: sha256"):
        resolve_location("hf://datasets/org/c")

    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *a, **k: (_ for _ in ()).throw(ConnectionError("no route to host")))
    with pytest.raises(CacheError, match="no copy was downloaded before"):
        resolve_location("hf://datasets/org/other")
