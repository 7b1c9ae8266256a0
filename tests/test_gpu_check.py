"""benchmarks/gpu_check.sh and .py: without a GPU the check stops with one line; its steps run on the CPU
(--device cpu --quick). What it reports on a GPU has not been run here: no GPU was lent to this project's
sessions so far (README, "The GPU check")."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from tvexplorer.core.cache import Cache

ROOT = Path(__file__).resolve().parents[1]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_the_check_stops_with_one_line():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}  # no GPU, even on a machine that has one
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == load_gpu_check().NO_GPU_EXIT and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("gpu_check: no CUDA GPU here")


def test_every_step_runs_on_the_cpu(quick_demo, tmp_path, capsys):
    gpu_check = load_gpu_check()
    def rounds(folder):
        return len(Cache.open(folder).manifest.atm_rounds("standard"))
    rounds_before = rounds(quick_demo)
    report = gpu_check.main(["--device", "cpu", "--quick", "--cache", str(quick_demo), "--json", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text()) == report
    assert report["machine"]["device"] == "cpu" and report["demo_cache"] == {"copied_from": str(quick_demo)}
    assert report["atm"]["rounds"] == 1 and len(report["atm"]["per_round"]) == 1 and report["atm"]["seconds"] > 0
    # the copy got the round; the source cache did not
    assert rounds(quick_demo) == rounds_before
    assert report["slider"]["median"] > 0 and report["slider"]["images"] > 0
    assert report["moved_evaluator"]["device"] == "cpu" and report["moved_evaluator"]["largest_difference_to_cpu"] == 0
    assert report["tower"]["float32_images_per_second"] > 0 and "bfloat16_images_per_second" not in report["tower"]
    assert all(report["merges"][f"{m}_seconds"] > 0 for m in gpu_check.MERGES)
    assert "slider_cpu" not in report and "merges_cpu" not in report  # the CPU baselines are for a GPU run
    out = capsys.readouterr().out
    assert out.startswith("machine: ") and all(f"\n{step}: " in out for step in ("atm", "slider", "moved_evaluator", "tower", "merges"))
