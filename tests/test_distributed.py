"""Ray scale-out (pipeline/distributed.py) on a local 2-CPU cluster: a build and an ATM round give
exactly the files of the serial run; a worker killed in the middle of a task is retried and the
cache is still right; a killed driver resumes with the same command without redoing finished tasks."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
import torch

from tvexplorer.cli import main
from tvexplorer.core.cache import Cache

TASKS = "digits,signs,textures"


def build_args(quick_demo, out, *extra):
    """A small build of the quick demo's tasks (with the multi-task baseline): seconds per task."""
    return ["build", "--out", str(out), "--model", f"local-dir:{quick_demo / 'model'}", "--tasks", f"demo:{TASKS}",
            "--n-train", "64", "--n-test", "20", "--n-eval", "20", "--n-val", "10", "--epochs", "2", "--batch-size", "16",
            "--lr", "1e-3", "--multitask", "--device", "cpu", *extra]


def result_hashes(out: Path) -> dict:
    """sha256 of every task-vector file and of the multi-task delta, as the manifest records them."""
    files = json.loads((out / "manifest.json").read_text())["files"]
    return {rel: e["sha256"] for rel, e in files.items() if rel.startswith("vectors/") or rel == "multitask.safetensors"}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Serial runs in this process use one torch thread, as Ray's one-CPU workers do: float sums
    split over another number of threads differ in their last bits, so only like and like compare."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs for this module; its address lets a CLI subprocess join it."""
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def serial_build(quick_demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "cache"
    assert main(build_args(quick_demo, out)) == 0
    return out


def test_ray_build_gives_the_serial_files(cluster, quick_demo, serial_build, tmp_path):
    out = tmp_path / "cache"
    assert main(build_args(quick_demo, out, "--ray")) == 0
    hashes = result_hashes(out)
    assert len(hashes) == 4 and hashes == result_hashes(serial_build)
    assert Cache.open(out).manifest.metrics.finetuned == Cache.open(serial_build).manifest.metrics.finetuned


def test_ray_atm_round_gives_the_serial_round(cluster, quick_demo, tmp_path):
    caches = []
    for name, extra in (("serial", []), ("ray", ["--ray"])):
        shutil.copytree(quick_demo, tmp_path / name)
        done = len(Cache.open(tmp_path / name).manifest.atm_rounds("standard"))
        assert main(["atm", str(tmp_path / name), "--rounds", "1", "--device", "cpu", *extra]) == 0
        caches.append(Cache.open(tmp_path / name))
        assert len(caches[-1].manifest.atm_rounds("standard")) == done + 1
    serial, parallel = caches
    last, parallel_last = serial.manifest.atm_rounds("standard")[-1], parallel.manifest.atm_rounds("standard")[-1]
    assert parallel.manifest.files[last.file].sha256 == serial.manifest.files[last.file].sha256
    assert parallel_last.accuracy == last.accuracy


def workers_running(function: str) -> list[int]:
    """Pids of the Ray workers now running `function` (a busy worker titles itself ray::FUNCTION)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(f"ray::{function}".encode()):
                pids.append(int(cmdline.parent.name))
        except OSError:  # the process ended while we looked
            pass
    return pids


def kill_first_worker(function: str, after_s: float, killed: list) -> threading.Thread:
    """Kill (SIGKILL) the first Ray worker seen running `function`, `after_s` seconds into it."""
    def watch():
        deadline = time.time() + 120
        while time.time() < deadline:
            for pid in workers_running(function)[:1]:
                time.sleep(after_s)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_killed_worker_is_retried_and_the_cache_is_right(cluster, quick_demo, serial_build, tmp_path):
    killed = []
    watcher = kill_first_worker("_build_task", 0.5, killed)
    out = tmp_path / "cache"
    assert main(build_args(quick_demo, out, "--ray")) == 0
    watcher.join()
    assert len(killed) == 1  # that task's only way to its file was a retry in a new worker
    assert result_hashes(out) == result_hashes(serial_build)


def test_a_killed_driver_resumes_without_redoing_finished_tasks(cluster, quick_demo, serial_build, tmp_path):
    out = tmp_path / "cache"
    command = [sys.executable, "-m", "tvexplorer", *build_args(quick_demo, out, "--ray", cluster)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / ".build/state.json"

    def tasks_finished() -> list[str]:  # beside them, the multi-task baseline may be recorded too
        return [t for t in json.loads(state.read_text())["done"] if t in TASKS.split(",")] if state.is_file() else []

    deadline = time.time() + 240
    while not tasks_finished() and time.time() < deadline:
        assert driver.poll() is None, "the build ended before any task was saved"
        time.sleep(0.05)
    driver.kill()
    driver.wait()
    finished, tasks = json.loads(state.read_text())["done"], tasks_finished()
    assert tasks and not (out / "manifest.json").exists()
    mtimes = {rel: (out / rel).stat().st_mtime_ns for r in finished.values() for rel in r["files"]}

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming: {len(tasks)} of 3 tasks already built" in rerun.stderr
    assert {rel: (out / rel).stat().st_mtime_ns for rel in mtimes} == mtimes  # saved once, never rewritten
    assert result_hashes(out) == result_hashes(serial_build)


def test_ray_import_gives_the_serial_vectors_and_one_line_errors(cluster, quick_demo, tmp_path, capsys):
    from test_build import save_open_clip_checkpoint
    source = Cache.open(quick_demo)
    tasks = source.tasks[:2]
    for t in tasks:
        save_open_clip_checkpoint(tmp_path / f"{t}.pt", source.layout.unflatten(source.base() + source.vector(t).float()))
    args = ["import", "--model", f"local-dir:{quick_demo / 'model'}", "--tasks", "demo:" + ",".join(tasks),
            "--n-train", "64", "--n-test", "20", "--n-eval", "20", "--n-val", "10", "--checkpoint-dir", str(tmp_path), "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "serial")]) == 0
    assert main([*args, "--out", str(tmp_path / "ray"), "--ray"]) == 0
    assert result_hashes(tmp_path / "ray") == result_hashes(tmp_path / "serial") and len(result_hashes(tmp_path / "ray")) == 2

    bad = source.layout.unflatten(source.base())
    bad["conv1.weight"] = bad["conv1.weight"][:, :, :2]  # another patch size
    save_open_clip_checkpoint(tmp_path / f"{tasks[1]}.pt", bad)
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "bad"), "--ray"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "conv1.weight" in errors[0] and "Traceback" not in errors[0]
