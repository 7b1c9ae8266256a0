"""Writers of a cache: two processes take turns on its lock, and a full disk is one line, not a traceback."""
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import SafetensorError

import apphelpers  # first: it turns gradio analytics off before gradio is imported
import tvexplorer.core.files as files_module
from tvexplorer.app import runs, work
from tvexplorer.cli import main
from tvexplorer.core import workcopy
from tvexplorer.core.cache import Cache
from tvexplorer.core.files import WriteError, writer_lock
from tvexplorer.core.manifest import MANIFEST
from test_cache import next_round

ROOT = Path(__file__).resolve().parent.parent


def _rounds(root: Path, variant: str = "standard") -> list[dict]:
    return json.loads((root / MANIFEST).read_text())["atm"][variant]["rounds"]


def _leftovers(root: Path) -> list[str]:
    return [p.name for p in root.rglob(".*tmp*")]


# ---------------------------------------------------------------- the writer lock

def test_two_atm_processes_take_turns_and_lose_no_round(demo_copy, tmp_path):
    before = [r["round"] for r in _rounds(demo_copy)]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "tvexplorer", "atm", str(demo_copy), "--rounds", "2", "--device", "cpu", "--json"]
    runs = []
    # This process holds the lock until both runs wait for it, so that they certainly overlap.
    with writer_lock(demo_copy):
        for name in ("a", "b"):
            out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
            with open(out, "w") as o, open(err, "w") as e:
                runs.append((subprocess.Popen(command, stdout=o, stderr=e, env=env, cwd=ROOT), out, err))
        deadline = time.time() + 300
        while not all("waiting:" in err.read_text() for _, _, err in runs):
            assert time.time() < deadline and all(p.poll() is None for p, _, _ in runs), [e.read_text() for *_, e in runs]
            time.sleep(0.2)
    reports = []
    for proc, out, err in runs:
        assert proc.wait(timeout=300) == 0, err.read_text()
        assert err.read_text().count("waiting:") == 1  # said once, not once per poll
        reports.append(json.loads(out.read_text()))

    saved = _rounds(demo_copy)
    assert [r["round"] for r in saved] == before + [len(before) + i for i in range(1, 5)]
    assert len({r["file"] for r in saved}) == len(saved) and all((demo_copy / r["file"]).is_file() for r in saved)
    new = sorted(k for r in reports for k in r["new_rounds"])
    assert new == [len(before) + i for i in range(1, 5)]  # two runs of two rounds each, none reported twice
    by_round = {r["round"]: r for r in saved}
    for report in reports:
        first = report["new_rounds"][0]
        assert report["new_rounds"] == [first, first + 1]  # a run's rounds continue each other
        for r in report["rounds"]:
            assert r["average"] == by_round[r["round"]]["average"]
    Cache.open(demo_copy).verify()


def test_an_app_job_counts_only_its_own_rounds(demo_copy):
    """A round that another writer saves while the job waits for the lock is not the job's."""
    apphelpers.wait_idle()
    cache = Cache.open(demo_copy)
    start = len(cache.manifest.atm_rounds("standard"))
    run = cache.manifest.atm["standard"].settings()
    with writer_lock(demo_copy):
        job = runs.start("atm", "one round", work.atm_work(str(demo_copy), 1, "standard"))
        time.sleep(0.5)  # let the job's thread reach the lock and wait
        cache.add_atm_round("standard", run, next_round(cache, "standard"), torch.zeros(cache.layout.numel))
    job.finished.wait(120)
    assert job.error is None and sum(job.outputs) == 1 and job.state == "finished"
    assert len(_rounds(demo_copy)) == start + 2


# ---------------------------------------------------------------- a full disk

def test_a_full_disk_is_one_line_and_exit_status_1(demo_copy, monkeypatch, capsys):
    manifest = (demo_copy / MANIFEST).read_bytes()

    def full_disk(tensors, path):  # as safetensors reports it: its own exception, the OS error in the text
        Path(path).write_bytes(b"half a file")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    monkeypatch.setattr(files_module, "save_file", full_disk)
    monkeypatch.setattr(files_module.shutil, "disk_usage", lambda path: SimpleNamespace(free=1500))

    assert main(["atm", str(demo_copy), "--rounds", "1", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: could not write ") and "atm/standard/round_0002.safetensors" in line
    assert "No space left on device" in line and "1.5 KB free there" in line and "free some space" in line
    assert (demo_copy / MANIFEST).read_bytes() == manifest and _leftovers(demo_copy) == []
    Cache.open(demo_copy).verify()


@contextlib.contextmanager
def _small_disk(where: Path, size: int):
    """A tmpfs of `size` bytes at `where`; skips the test where it cannot be mounted (not root)."""
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _disk_bytes(root: Path) -> int:
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in root.rglob("*") if p.is_file())


def test_a_real_full_disk_leaves_the_cache_intact(quick_demo, tmp_path):
    # Room for the cache and its lock file, not for one more ATM round (a full-length vector).
    delta_bytes = 4 * Cache.open(quick_demo).layout.numel
    with _small_disk(tmp_path / "disk", _disk_bytes(quick_demo) + delta_bytes // 2) as disk:
        root = disk / "cache"
        shutil.copytree(quick_demo, root)
        manifest = (root / MANIFEST).read_bytes()
        cache = Cache.open(root)
        run = cache.manifest.atm["standard"].settings()
        with pytest.raises(WriteError) as failed:
            cache.add_atm_round("standard", run, next_round(cache, "standard"), torch.zeros(cache.layout.numel))
        message = str(failed.value)
        assert "\n" not in message and str(root / "atm/standard/round_0002.safetensors") in message
        assert "No space left on device" in message and "free there" in message
        assert (root / MANIFEST).read_bytes() == manifest and _leftovers(root) == []
        Cache.open(root).verify()


def test_a_work_copy_on_a_full_disk_is_one_line_and_leaves_nothing(quick_demo, tmp_path):
    with _small_disk(tmp_path / "disk", 256 * 1024) as disk:
        with pytest.raises(WriteError) as failed:
            workcopy.make_work_copy(Cache.open(quick_demo), disk / "work")
        message = str(failed.value)
        assert "\n" not in message and str(disk / ".work.tmp-") in message
        assert "No space left on device" in message and "free there" in message
        assert list(disk.iterdir()) == []
