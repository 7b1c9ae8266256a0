"""The "Add a task" panel without a browser: what an upload holds, images collected per class, the limits
it states, and a run through the one background-run mechanism that adds the task to the work copy of a
protected cache, after which the explorer (and so every tab) has it; cancelling adds nothing."""
import zipfile

import pytest

import apphelpers  # noqa: F401  (analytics off before gradio loads)
from imagesets import make_image_set, zip_folder
from tvexplorer.app import addtask, runs, ui
from tvexplorer.app.addtask import ADD_TASK
from tvexplorer.app.explorer import Explorer
from tvexplorer.app.tabs import addtask as tab
from tvexplorer.app.tabs import merge
from tvexplorer.core.cache import Cache
from tvexplorer.data.imagesource import BadSource

pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting")


@pytest.fixture
def explorer(demo_copy, tmp_path):
    """An explorer that treats its cache as read-only: what it adds goes to a work copy."""
    return Explorer(demo_copy, device="cpu", read_only=True, workdir=tmp_path / "work", precision="float32")


def test_the_panel_states_its_limits():
    text = addtask.limits_text()
    assert "50 MB" in text and "2,000 files" in text and "at least 5 training" in text and "60 s" not in text
    assert "two GPU calls of at most 60 s" in addtask.limits_text(zero_gpu=True)


def test_an_upload_shows_its_classes_and_counts(tmp_path):
    source = zip_folder(make_image_set(tmp_path / "discs", n_train=6, n_test=2), tmp_path / "d.zip", wrap="d")
    shown = tab.found({"zip": str(source), "staged": None})
    assert "4 classes" in shown["found"]
    assert shown["table"].set_index("class").loc["ruby disc"].tolist() == ["ruby_disc", 6, 2]
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("../evil.png", b"x")
    with pytest.raises(BadSource, match="outside the folder"):
        tab.found({"zip": str(bad), "staged": None})
    with pytest.raises(BadSource, match="upload a zip"):
        tab.found({"zip": None, "staged": None})


def test_images_collected_class_by_class_become_a_source(tmp_path):
    images = make_image_set(tmp_path / "plain", n_train=5, n_test=1, split=False,
                            classes={"cat": (200, 0, 0), "dog": (0, 0, 200)})
    shown = tab.stage({"staged": None, "classname": "big cat", "images": [str(p) for p in (images / "cat").iterdir()]})
    assert "Collected so far" in shown["found"] and "at least 2 classes" in shown["found"]
    shown = tab.stage({"staged": shown["staged"], "classname": "dog",
                       "images": [str(p) for p in (images / "dog").iterdir()]})
    assert "2 classes (big cat, dog)" in shown["found"] and shown["table"]["train"].sum() + shown["table"]["test"].sum() == 12
    with pytest.raises(BadSource, match="class name"):
        tab.stage({"staged": shown["staged"], "classname": "..", "images": [str(images / "dog" / "000.png")]})
    with pytest.raises(BadSource, match="not an image"):
        tab.stage({"staged": shown["staged"], "classname": "cow", "images": [__file__]})


def test_adding_from_the_panel_puts_the_task_in_every_tab_and_leaves_the_cache_alone(explorer, demo_copy, tmp_path):
    before = {p: p.read_bytes() for p in sorted(demo_copy.rglob("*")) if p.is_file() and p.name != ".tvexplorer.lock"}
    app = ui.App(explorer)
    app.coefficient_slots = [*explorer.tasks, "added-1", "added-2"]  # as the Merge tab builds them
    source = zip_folder(make_image_set(tmp_path / "discs", n_train=20, n_test=5), tmp_path / "d.zip")
    updates = list(tab.start(app, {"name": "discs", "zip": str(source), "staged": None, "templates": ["a photo of a {}."]}))
    assert updates[0]["status"].startswith("… **Running:** adding discs")
    last = updates[-1]
    assert "✓ **Added** discs" in last["status"] and "finetuned" in last["status"]
    assert explorer.tasks == ["digits", "signs", "textures", "discs"] and "4 tasks" in last["header"]
    sliders = last["coefficients"]
    assert sliders["added-1"]["label"] == "discs" and sliders["added-1"]["visible"] and not sliders["added-2"]["visible"]
    assert ("discs", "discs") in last["align_task"]["choices"]
    assert merge.by_task(app, {"digits": 1.0, "added-1": 0.5, "added-2": 0.7}) == {"digits": 1.0, "discs": 0.5}
    *_, result = merge.evaluate(app, {"method": "task_arithmetic", "scaling": 0.3, "coefficients": {"added-1": 0.0}})
    assert result["raw"]["coefficients"]["discs"] == 0.0 and "discs" in result["raw"]["accuracy"]
    assert explorer.preview()["accuracy"].keys() == set(explorer.tasks)
    assert {p: p.read_bytes() for p in before} == before and Cache.open(demo_copy).tasks == ["digits", "signs", "textures"]
    assert Cache.open(explorer.atm_root).tasks[-1] == "discs"
    again = Explorer(demo_copy, device="cpu", read_only=True, workdir=tmp_path / "work", precision="float32")
    assert again.tasks[-1] == "discs"  # a restarted app finds the task in its work copy
    with pytest.raises(BadSource, match="already has a task"):
        addtask.start(explorer, "discs", source)


def test_a_cancelled_add_adds_nothing(explorer, tmp_path):
    source = make_image_set(tmp_path / "discs", n_train=20, n_test=5)
    run = addtask.start(explorer, "discs", source)
    with pytest.raises(runs.Busy):
        addtask.start(explorer, "other", source)
    runs.cancel(ADD_TASK)
    run.wait()
    assert run.state == "cancelled" and "discs" not in explorer.tasks
    assert "Cancelled" in tab.status_text(explorer)
