"""The "Add a task" panel end to end in headless Chromium (as tests/test_app_browser.py, whose app fixture
it uses: `python app.py` over its own copy of the quick demo): upload a small zip, see its classes, add it,
and find the new task's slider in the Merge tab, without a restart."""
from imagesets import make_image_set, zip_folder
from test_app_browser import page, pytestmark, app_server  # noqa: F401  (the fixtures, and the skips without a browser)
from tvexplorer.core.cache import Cache


def test_uploading_a_zip_adds_a_task_with_its_own_slider(page, app_server, tmp_path):  # noqa: F811
    source = zip_folder(make_image_set(tmp_path / "discs", n_train=10, n_test=2), tmp_path / "discs.zip", wrap="discs")
    page.get_by_role("tab", name="Add a task").click()
    page.wait_for_selector("#add-limits:has-text('Limits')")
    page.locator("#add-zip input[type=file]").set_input_files(str(source))
    page.wait_for_selector("#add-found:has-text('4 classes')")
    assert page.locator("#add-table").inner_text().count("disc") >= 4
    page.locator("#add-name textarea, #add-name input").first.fill("discs")
    page.click("#add-start")
    page.wait_for_selector("#add-status:has-text('✓ Added discs')", timeout=240_000)
    assert Cache.open(app_server[1]).tasks[-1] == "discs"
    page.get_by_role("tab", name="Merge").click()
    slider = page.locator("#coef-added-1")
    slider.wait_for(state="visible")
    assert "discs" in slider.inner_text()
    assert page.locator("text=Traceback").count() == 0
