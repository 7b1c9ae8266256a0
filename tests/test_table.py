"""The results table (tvexplorer/pipeline/table.py): the `table` command and the app's Results tab."""
import json
import shutil
import subprocess
import sys

import pytest

from tvexplorer.cli import main
from tvexplorer.core.cache import Cache
from tvexplorer.merging import METHODS
from tvexplorer.pipeline.table import table_rows


def test_table_command_records_and_prints_every_method(demo_copy, capsys):
    before = Cache.open(demo_copy).manifest.metrics.to_json()
    assert main(["table", str(demo_copy), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # the build recorded task arithmetic, TIES, TSV-M and Iso-C: only the others were computed
    assert set(out["computed"]) == set(METHODS) - {"task_arithmetic", "ties", "tsv", "iso_c"}
    rows = {r["key"]: r for r in out["rows"]}
    assert list(rows) == ["zero_shot", "finetuned", "multitask", *METHODS]
    for method in METHODS:
        r = rows[method]
        assert r["accuracy"] is not None and set(r["accuracy"]) == {"digits", "signs", "textures"}
        assert r["average"] == pytest.approx(sum(r["accuracy"].values()) / 3)
        assert 0 <= r["best_scaling"] <= 1.5
    assert rows["ties"]["accuracy"] == before["ties"]["accuracy"]  # reused, not recomputed
    assert rows["regmean"]["params"] == {"alpha": 0.6} and rows["dare"]["params"] == {"p": 0.5, "seed": 0}
    assert rows["finetuned"]["normalized_average"] == pytest.approx(1.0)
    # recorded through the manifest: a new process reads the same rows and computes nothing
    recorded = Cache.open(demo_copy)
    assert recorded.manifest.metrics.merge("regmean").accuracy == rows["regmean"]["accuracy"]
    assert table_rows(recorded) == out["rows"]
    assert main(["table", str(demo_copy), "--methods", "regmean,average"]) == 0
    text = capsys.readouterr().out
    assert "all recorded in" in text and "RegMean" in text and "Weight averaging" in text and "TIES" not in text
    assert "zero-shot" in text and "multi-task" in text
    # the exact evaluation at the recorded scaling gives the recorded numbers
    from tvexplorer.science.evaluation import Evaluator
    again = Evaluator(recorded, device="cpu").evaluate("regmean", scaling=rows["regmean"]["best_scaling"])
    assert again.accuracy == rows["regmean"]["accuracy"]


@pytest.mark.parametrize("args, message", [
    (["table", "{cache}", "--methods", "ties,soup"], "unknown merge method(s) soup; choose among: task_arithmetic"),
    (["table", "{missing}"], "no such cache folder"),
])
def test_table_bad_input_is_one_line(quick_demo, tmp_path, args, message):
    args = [a.format(cache=quick_demo, missing=tmp_path / "missing") for a in args]
    r = subprocess.run([sys.executable, "-m", "tvexplorer", *args], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_results_tab_fills_a_read_only_cache_through_its_work_folder(quick_demo, tmp_path):
    from tvexplorer.app import ui
    from tvexplorer.app.tabs import results
    src = tmp_path / "src"
    shutil.copytree(quick_demo, src)
    before = (src / "manifest.json").read_bytes()
    app = ui.load(src, device="cpu", read_only=True, workdir=tmp_path / "work")
    view = results.view(app.ex)
    assert "Not computed yet" in view["status"] and "RegMean" in view["status"]
    assert view["table"]["average %"].isna().sum() == len(METHODS) - 4  # only the build's four are recorded
    shown = list(results.fill(app.ex))  # one call per missing row, the table shown as each is recorded
    status, frame = shown[-1]["status"], shown[-1]["table"]
    assert status.startswith("✓") and not frame["average %"].isna().any()
    again = list(results.fill(app.ex))  # nothing missing: no run, the table as it is
    assert len(again) == 1 and again[0]["status"] == status
    assert list(frame["method"])[:3] == ["zero-shot", "fine-tuned (one model per task)", "multi-task (joint fine-tuning)"]
    assert (src / "manifest.json").read_bytes() == before  # the source cache is untouched
    api = app.api.api_results()
    assert [r["key"] for r in api["rows"]][3:] == list(METHODS) and api["rows"][-1]["accuracy"] is not None
