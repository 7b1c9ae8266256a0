"""The demo's finishing steps (tvexplorer/demo/complete.py): `build-demo` ends with them and
`complete-demo` runs them on a demo built before them, so the app's Results tab opens complete, RegMean
has its Grams and a tuned-coefficients record is there; and the commands that record results (`table`,
`preview`, `tune`) write into a work copy, never into the shipped demo or a read-only cache."""
import hashlib
import json
import shutil

import pytest

import tvexplorer.demo.build as demo_build
from tvexplorer.cli import main
from tvexplorer.core import workcopy
from tvexplorer.core.cache import Cache
from tvexplorer.demo.build import recipe
from tvexplorer.merging import METHODS
from tvexplorer.pipeline.table import table_rows
from tvexplorer.science.grams import missing_grams

STEPS = recipe()["complete"]


def is_complete(cache: Cache) -> bool:
    rows = {r["key"]: r for r in table_rows(cache)}
    return (all(rows[m]["accuracy"] is not None for m in METHODS) and not missing_grams(cache)
            and "task_arithmetic:per_task" in cache.manifest.tuning)


def test_the_shipped_recipe_finishes_with_grams_the_whole_table_and_a_tuned_record():
    assert STEPS == {"grams": True, "table": True, "tuning": [{"method": "task_arithmetic", "per_layer": False}]}


def test_build_demo_ends_with_the_recipes_finishing_steps(quick_demo, tmp_path, monkeypatch):
    # The quick world's own build (the session's quick_demo) stands in for the stages before the last one.
    built = tmp_path / "world"

    def build_cache(out, *args, **kwargs):
        shutil.copytree(quick_demo, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
        return Cache.open(out)
    monkeypatch.setattr(demo_build, "pretrain_clip", lambda *args, **kwargs: None)
    monkeypatch.setattr(demo_build, "build_cache", build_cache)
    monkeypatch.setattr(demo_build, "run_atm", lambda *args, **kwargs: [])
    full = json.loads(demo_build.RECIPE.read_text())
    full["quick"]["complete"] = STEPS
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(full))
    assert not is_complete(Cache.open(quick_demo))
    cache = demo_build.build_demo(built, quick=True, device="cpu", recipe_path=path)
    assert is_complete(Cache.open(built)) and cache.root == built


def test_complete_demo_fills_a_demo_in_place_once(demo_copy, capsys):
    assert main(["complete-demo", str(demo_copy), "--json", "--device", "cpu"]) == 0
    done = json.loads(capsys.readouterr().out)["steps"]
    assert set(done["table"]["added"]) == set(METHODS) - {"task_arithmetic", "ties", "tsv", "iso_c"}
    assert done["tuning task_arithmetic:per_task"]["added"] == ["task_arithmetic:per_task"]
    assert is_complete(Cache.open(demo_copy))
    before = (demo_copy / "manifest.json").read_bytes()
    assert main(["complete-demo", str(demo_copy), "--device", "cpu"]) == 0  # complete: nothing to do
    assert "nothing (already recorded)" in capsys.readouterr().out
    assert (demo_copy / "manifest.json").read_bytes() == before
    # a method whose definition changed is computed again on request, and only that one
    assert main(["complete-demo", str(demo_copy), "--redo", "magmax", "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"]["table"]["added"] == ["magmax"]
    assert main(["complete-demo", str(demo_copy), "--redo", "soup"]) == 2
    assert "unknown merge method(s) soup" in capsys.readouterr().err


def test_a_recipe_with_an_unknown_finishing_step_is_refused_in_one_line(demo_copy, tmp_path, capsys):
    full = json.loads(demo_build.RECIPE.read_text())
    full["complete"] = {"table": True, "tables": True}
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(full))
    assert main(["complete-demo", str(demo_copy), "--recipe", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown step(s) tables" in err[0], err


def digest(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")}


@pytest.mark.parametrize("command", [
    ["table", "--methods", "average"],
    ["preview"],
    ["tune", "--steps", "2"],
])
def test_recording_commands_write_a_read_only_cache_into_its_work_copy(demo_copy, tmp_path, monkeypatch, capsys, command):
    monkeypatch.setenv("TVEXPLORER_READ_ONLY", "1")
    monkeypatch.setenv("TVEXPLORER_WORKDIR", str(tmp_path / "work"))
    before = digest(demo_copy)
    assert main([command[0], str(demo_copy), *command[1:], "--json", "--device", "cpu"]) == 0
    assert digest(demo_copy) == before  # the source is untouched
    assert "recording into its work copy" in capsys.readouterr().err
    work = Cache.open(workcopy.work_folder(Cache.open(demo_copy), tmp_path / "work"))
    if command[0] == "table":
        assert work.manifest.metrics.merge("average").accuracy and "average" not in Cache.open(demo_copy).manifest.metrics.merges
    elif command[0] == "tune":
        assert "task_arithmetic:per_task" in work.manifest.tuning
    else:
        assert work.manifest.preview.checks


def test_the_shipped_demo_is_protected_and_table_leaves_it_untouched(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TVEXPLORER_WORKDIR", str(tmp_path / "work"))
    assert workcopy.protected(workcopy.SHIPPED_DEMO) == "the shipped demo"
    before = digest(workcopy.SHIPPED_DEMO)
    # task arithmetic is recorded by the build: nothing is computed, but the row is read from the work copy
    assert main(["table", str(workcopy.SHIPPED_DEMO), "--methods", "task_arithmetic", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["computed"] == [] and out["cache"].startswith(str(tmp_path / "work"))
    assert digest(workcopy.SHIPPED_DEMO) == before
