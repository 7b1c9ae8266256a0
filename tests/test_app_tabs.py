"""The tabs' shared wiring without a browser: named bundles, the one path from a bad input to a warning,
the controls' defaults (every button works with what the page shows), the generated API docs, sizes."""
from pathlib import Path

import pytest

import apphelpers
import gradio as gr  # noqa: E402  (after apphelpers turned analytics off)
from tvexplorer.app import tuning, ui
from tvexplorer.app.api import Api
from tvexplorer.app.tabs.common import Bundle, adapt
from tvexplorer.merging import METHODS


@pytest.fixture
def bundles():
    with gr.Blocks():
        a, b = gr.Number(), gr.Number()
        sliders = {"x": gr.Slider(), "y": gr.Slider()}
        status = gr.Markdown()
    return Bundle(a=a, b=b, sliders=sliders), Bundle(status=status, sliders=sliders)


def test_bundles_read_and_write_by_name(bundles):
    inputs, outputs = bundles
    values = {inputs.a: 1, inputs.b: 2, inputs.sliders["x"]: 0.5, inputs.sliders["y"]: 0.7}
    assert inputs.read(values) == {"a": 1, "b": 2, "sliders": {"x": 0.5, "y": 0.7}}
    written = outputs.write({"status": "ok", "sliders": {"y": 0.1}})
    assert written == {outputs.status: "ok", outputs.sliders["y"]: 0.1}  # what is not named stays as it is
    assert len(inputs.components()) == 4 and inputs.components("a") == [inputs.a]


def test_a_bad_input_becomes_a_warning_and_the_handlers_own_line(bundles):
    inputs, outputs = bundles
    values = {inputs.a: 1, inputs.b: 0, inputs.sliders["x"]: 0.0, inputs.sliders["y"]: 0.0}

    def divide(v):
        if v["b"] == 0:
            raise ValueError("b is 0; it must be a number other than 0")
        return {"status": str(v["a"] / v["b"])}
    run = adapt(divide, inputs, outputs, on_error=lambda line: {"status": f"⚠ {line}"})
    with pytest.warns(UserWarning, match="b is 0"):  # gr.Warning outside a request
        assert run(values) == {outputs.status: "⚠ b is 0; it must be a number other than 0"}
    assert run({**values, inputs.b: 4}) == {outputs.status: "0.25"}

    def count(v):
        yield {"status": "1"}
        raise KeyError("gone")
    with pytest.warns(UserWarning, match="gone"):
        # nothing to show: every output is skipped (gradio would read an empty dict as one value, and fail)
        skipped = {c: gr.skip() for c in outputs.components()}
        assert list(adapt(count, inputs, outputs, stream=True)(values)) == [{outputs.status: "1"}, skipped]
    assert adapt(lambda v: {}, inputs, outputs)(values) == skipped  # as the preview answers per-layer settings
    with pytest.raises(RuntimeError):  # not a user error: gradio reports it (the server log has the traceback)
        adapt(lambda v: (_ for _ in ()).throw(RuntimeError("bug")), inputs, outputs)(values)


def components(demo):
    return {getattr(b, "elem_id", None): b for b in demo.blocks.values()}


def test_tuning_buttons_work_with_the_steps_the_page_shows(quick_demo, tmp_path):
    """'Tune on validation' pressed as the panel opens failed with 'steps is 0' (the box showed 0)."""
    app = ui.load(quick_demo, device="cpu", read_only=True, workdir=tmp_path)
    demo = apphelpers.load_app_module().build(app)
    shown = components(demo)
    for elem_id, objective in (("tune-steps", "accuracy"), ("adamerging-steps", "entropy")):
        value = shown[elem_id].value
        assert tuning.check_request(objective, False, value) == (objective, False, value)


def test_every_endpoint_of_the_page_and_the_generated_evaluate_doc(quick_demo, tmp_path):
    doc = Api.api_evaluate.__doc__
    for m in METHODS.values():
        assert f"{m.name}:" in doc and all(f"{p.name} (default" in doc for p in m.params), m.name
    app = ui.load(quick_demo, device="cpu", read_only=True, workdir=tmp_path)
    names = {d.api_name for d in apphelpers.load_app_module().build(app).fns.values() if d.api_visibility != "private"}
    assert {"info", "methods", "evaluate", "preview", "preset", "alignment", "atm", "atm_status", "atm_cancel",
            "tune", "tune_status", "tune_cancel", "results"} <= names


def test_the_app_is_laid_out_in_small_modules():
    assert len((apphelpers.ROOT / "app.py").read_text().splitlines()) <= 120
    package = apphelpers.ROOT / "tvexplorer" / "app"
    sizes = {str(p.relative_to(package)): len(p.read_text().splitlines()) for p in package.rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > 400} == {}
    tabs = {Path(p).stem for p in sizes if p.startswith("tabs/")}
    assert {"merge", "tuning", "alignment", "atm", "results", "about", "common"} <= tabs


def test_tuning_and_the_results_table_on_the_shipped_demo_write_only_to_a_work_copy(tmp_path):
    """The shipped demo opens read-only; what the app computes goes to its work copy (the session fixture
    shipped_demo_untouched checks every file of assets/demo after the whole suite)."""
    from tvexplorer.app import results
    app = ui.load(None, device="cpu", workdir=tmp_path)
    ex = app.ex
    assert ex.read_only and ex.atm_root == apphelpers.ROOT / "assets" / "demo"
    run = tuning.start(ex, "accuracy", False, 1).wait()
    assert run.state == "finished", run.error
    assert ex.atm_root == ex.work_folder and "task_arithmetic:per_task" in ex.atm_cache.manifest.tuning
    # the shipped demo's results table is complete (issue 20): nothing to fill, so nothing is started
    from tvexplorer.app.work import missing_rows
    assert missing_rows(ex.atm_cache) == [] and results.start_fill(ex) is None
