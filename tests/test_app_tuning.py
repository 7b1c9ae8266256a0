"""The Merge panel's advanced part without a browser: per-layer coefficients through the explorer, the
tuning / AdaMerging background job (progress, busy, cancel, recorded result) and applying a result."""
import json
import time

import pytest

import apphelpers  # noqa: F401  (first: it turns gradio analytics off before gradio is imported)
import gradio as gr  # noqa: E402  (after apphelpers turned analytics off)
from tvexplorer.app import runs, tuning, ui
from tvexplorer.app.explorer import Explorer
from tvexplorer.app.tabs import tuning as panel
from tvexplorer.merging import merge_flat


@pytest.fixture
def ex(demo_copy):
    return Explorer(demo_copy, device="cpu", read_only=False)


def test_layer_coefficients_reach_the_exact_evaluation(ex):
    t = ex.tasks[0]
    got = ex.evaluate("task_arithmetic", scaling=0.5, layer_coefficients=json.dumps({t: {"resblocks.0": -1.0}}))
    delta = merge_flat("task_arithmetic", ex.source.vectors(), ex.source.layout, scaling=0.5,
                       layer_coefficients={t: {"resblocks.0": -1.0}})
    assert got["accuracy"] == ex.evaluator.accuracy(delta)
    assert got["layer_coefficients"] == {t: {"resblocks.0": -1.0}}


@pytest.mark.parametrize("bad,message", [
    ("{not json", "must be JSON"),
    ('{"nope": {"final": 1}}', "unknown task 'nope'"),
    ('{"%s": {"resblocks.99": 1}}', "unknown layer 'resblocks.99'"),
    ('{"%s": {"final": 9}}', "layer coefficient"),
    ('[1, 2]', "must map tasks"),
])
def test_bad_layer_coefficients_are_refused_in_one_line(ex, bad, message):
    text = bad % ex.tasks[0] if "%s" in bad else bad
    with pytest.raises(ValueError, match=message) as e:
        ex.evaluate("task_arithmetic", layer_coefficients=text)
    assert "\n" not in str(e.value)


def wait(job, seconds=600):
    assert job.finished.wait(seconds), "the run did not end"


def test_tuning_job_runs_records_and_applies(ex, demo_copy):
    job = tuning.start(ex, "accuracy", per_layer=False, steps=20)
    with pytest.raises(runs.Busy, match="busy: a tuning or AdaMerging run is in progress"):
        tuning.start(ex, "entropy")
    wait(job)
    assert job.state == "finished", job.error
    assert job.ended is not None and job.seconds == round(job.ended - job.started, 2)  # its time stops at its end
    assert job.progress()["done"] == job.progress()["total"]
    recorded = json.loads((demo_copy / "manifest.json").read_text())["tuning"]["task_arithmetic:per_task"]
    assert recorded["coefficients"] == job.result["coefficients"]
    table = panel.table(ex)
    assert list(table["merge"]) == ["grid task arithmetic", "task_arithmetic:per_task"]
    assert table["validation %"].iloc[1] == pytest.approx(100 * job.result["val_average"], abs=0.01)
    fitted = tuning.fit_to_ranges(recorded, ex.tasks)
    assert max(abs(c) for c in fitted["coefficients"].values()) <= 2.0
    again = ex.evaluate(fitted["method"], coefficients=fitted["coefficients"], scaling=fitted["scaling"])
    assert again["average"] == pytest.approx(job.result["average"], abs=1e-9)
    applied = panel.apply(ui.App(ex), "task_arithmetic:per_task")  # the Merge controls, by name
    assert {t: u["value"] for t, u in applied["coefficients"].items()} == fitted["coefficients"]
    assert applied["scaling"]["value"] == fitted["scaling"] and applied["layers"] == ""
    with pytest.raises(ValueError, match="choose a recorded result first"):
        panel.apply(ui.App(ex), None)


def test_adamerging_job_can_be_cancelled(ex, demo_copy):
    job = tuning.start(ex, "entropy", per_layer=True, steps=5000)
    deadline = time.time() + 300
    while job.progress()["done"] < 2 and not job.finished.is_set() and time.time() < deadline:
        time.sleep(0.1)
    assert tuning.cancel() is True
    wait(job)
    assert job.state == "cancelled"
    assert job.progress()["done"] < 5000
    assert "tuning" not in json.loads((demo_copy / "manifest.json").read_text())
    assert tuning.cancel() is False


@pytest.mark.parametrize("objective,steps,message", [("nope", 5, "unknown objective"), ("entropy", 0, "steps is 0"),
                                                     ("accuracy", 2.5, "whole number")])
def test_bad_tuning_requests(ex, objective, steps, message):
    with pytest.raises(ValueError, match=message):
        tuning.start(ex, objective, False, steps)


def test_tune_endpoint_refuses_bad_input_in_one_line(ex):
    api = ui.App(ex).api
    with pytest.raises(gr.Error, match="unknown objective 'nope'") as e:
        api.api_tune("nope")
    assert "\n" not in str(e.value)
    assert api.api_tune_cancel()["cancel_requested"] is False
