"""add-task and remove-task: a person's own images become a task of a cache and go again, and bad
input is refused in one line before anything is written."""
import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagesets import make_image_set, zip_folder
from tvexplorer.cli import main
from tvexplorer.core import workcopy
from tvexplorer.core.cache import Cache
from tvexplorer.core.files import LOCK
from tvexplorer.data import imagesource
from tvexplorer.data.imagesource import BadSource, SourceLimits, inspect_source
from tvexplorer.data.sources import load_task, task_spec
from tvexplorer.pipeline.addtask import Cancelled, add_task, fine_tune_task
from tvexplorer.science.atm import run_atm
from tvexplorer.science.preview import Preview, compute_preview


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root (the lock file holds the last writer's pid, not cache content)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != LOCK}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    folder = tmp_path / "work"
    monkeypatch.setenv("TVEXPLORER_WORKDIR", str(folder))
    return folder


def test_add_then_remove_gives_the_original_cache_back_file_for_file(demo_copy, tmp_path, workdir, capsys):
    source = zip_folder(make_image_set(tmp_path / "discs"), tmp_path / "discs.zip", wrap="my_discs")
    before = snapshot(demo_copy)
    assert main(["add-task", str(demo_copy), "discs", str(source), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    cache = Cache.open(demo_copy)
    assert cache.tasks[-1] == "discs"
    assert cache.manifest.task("discs").classnames == ("amber disc", "azure disc", "jade disc", "ruby disc")
    m = cache.manifest.metrics
    assert m.finetuned["discs"] >= m.zero_shot["discs"] + 0.25, (m.zero_shot["discs"], m.finetuned["discs"])
    assert summary["accuracy"]["finetuned"] == m.finetuned["discs"]
    assert set(m.linear_probe) == set(m.one_epoch) == set(m.zero_shot) == set(cache.tasks)
    assert m.average("zero_shot") == pytest.approx(sum(m.zero_shot.values()) / len(cache.tasks))
    assert "task_arithmetic" in m.merges and "ties" not in m.merges and not cache.manifest.atm  # recomputed / set aside
    assert cache.manifest.added_tasks["discs"].finished
    preview = Preview.open(cache)
    assert preview is not None and preview.vectors == cache.tasks
    assert preview.accuracy(scaling=0.0)["discs"] == pytest.approx(m.zero_shot["discs"])  # scaling 0 is exact
    cache.verify()
    rebuilt = tmp_path / "rebuilt"  # the extended preview is what a preview of the new task set from scratch holds
    shutil.copytree(demo_copy, rebuilt)
    compute_preview(Cache.open(rebuilt), "cpu")
    for t in cache.tasks:
        extended, fresh = cache.tensors(f"preview/{t}.safetensors"), Cache.open(rebuilt).tensors(f"preview/{t}.safetensors")
        assert extended.keys() == fresh.keys()
        for key in extended:
            torch.testing.assert_close(extended[key].float(), fresh[key].float(), rtol=1e-3, atol=1e-4)
    task = load_task(task_spec(cache, "discs"))  # what ATM and RegMean load
    assert len(task.train) + len(task.val) == 160 and len(task.test) == 40
    assert not (demo_copy / ".addtask").exists() and not workdir.exists()
    # ATM trains on the added task's stored images; its round 1 takes the path of the set-aside round 1
    [record] = run_atm(cache, 1, "standard")
    assert set(record["accuracy"]) == set(cache.tasks)

    assert main(["remove-task", str(demo_copy), "discs"]) == 0
    assert snapshot(demo_copy) == before


def test_a_cancelled_add_leaves_the_cache_as_it_was(demo_copy, tmp_path):
    source = make_image_set(tmp_path / "discs", n_train=8, n_test=2)
    before = snapshot(demo_copy)
    with pytest.raises(Cancelled):
        add_task(Cache.open(demo_copy), "discs", source, should_stop=lambda: True)
    assert snapshot(demo_copy) == before
    assert Cache.open(demo_copy).tasks == ["digits", "signs", "textures"]
    assert not (demo_copy / "data").exists() and not (demo_copy / ".addtask").exists()


def test_fine_tuning_first_then_adding_is_one_add(demo_copy, tmp_path):
    """The app's two GPU calls: the fine-tuned task waits, unlisted, until add_task lists it without training again."""
    source = make_image_set(tmp_path / "discs", n_train=8, n_test=2)
    manifest = (demo_copy / "manifest.json").read_bytes()
    fine_tune_task(Cache.open(demo_copy), "discs", source)
    assert (demo_copy / "manifest.json").read_bytes() == manifest and (demo_copy / ".addtask" / "discs").is_dir()
    steps = []
    summary = add_task(Cache.open(demo_copy), "discs", source, progress=lambda done, total, what: steps.append(what))
    assert "fine-tuning (g0, tau1, tau)" not in steps and "task arithmetic (scaling chosen on validation)" in steps
    assert Cache.open(demo_copy).tasks[-1] == "discs" and set(summary["accuracy"]) >= {"zero_shot", "finetuned"}
    assert not (demo_copy / ".addtask").exists()


def test_only_added_tasks_come_off(demo_copy, capsys):
    assert main(["remove-task", str(demo_copy), "digits"]) == 2
    assert "built with the cache" in capsys.readouterr().err


def test_a_shipped_cache_is_never_written_by_the_library(demo_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(workcopy, "SHIPPED_DEMO", demo_copy.resolve())
    before = snapshot(demo_copy)
    with pytest.raises(BadSource, match="the shipped demo"):
        add_task(Cache.open(demo_copy), "discs", make_image_set(tmp_path / "discs", n_train=5, n_test=1))
    assert snapshot(demo_copy) == before


def test_inspect_holds_out_a_seeded_test_split_from_class_folders(tmp_path):
    folder = make_image_set(tmp_path / "plain", n_train=9, n_test=3, split=False)
    source = inspect_source(folder)
    assert not source.given_split and source.counts()["ruby disc"] == {"train": 10, "test": 2}
    assert inspect_source(folder).files == source.files  # seeded: the same split every time
    assert "4 classes" in source.line()


# ------------------------------------------------------------------ bad input: one line, nothing written

def _zip(path: Path, entries: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            z.writestr(info, "/etc/passwd")
    return path


def _png(size=(32, 32)) -> bytes:
    import io
    out = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(out, "PNG")
    return out.getvalue()


def _good_entries(prefix="") -> dict[str, bytes]:
    return {f"{prefix}{split}/{c}/{i}.png": _png() for split, n in (("train", 5), ("test", 1)) for c in ("cat", "dog")
            for i in range(n)}


def _declares_less(path: Path) -> Path:
    """A zip whose first entry holds more bytes than its headers declare."""
    _zip(path, {"train/cat/0.png": b"x" * 4000, **_good_entries()})
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # uncompressed size in each header
        at = data.index(signature)
        data[at + offset:at + offset + 4] = (100).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def _with(folder: Path, rel: str, data: bytes) -> Path:
    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
    (folder / rel).write_bytes(data)
    return folder


def _good(tmp: Path) -> Path:
    return make_image_set(tmp / "good", n_train=5, n_test=1, classes={"cat": (200, 0, 0), "dog": (0, 0, 200)})


BAD = {  # name: (make SOURCE under tmp, task name, limits or None, words the one line must hold)
    "dotdot": (lambda t: _zip(t / "a.zip", {"../evil.png": _png(), **_good_entries()}), "mine", None, "outside the folder"),
    "absolute": (lambda t: _zip(t / "a.zip", {"/abs/evil.png": _png(), **_good_entries()}), "mine", None, "outside the folder"),
    "zip symlink": (lambda t: _zip(t / "a.zip", _good_entries(), symlink="train/cat/link.png"), "mine", None, "symbolic link"),
    "folder symlink": (lambda t: (os.symlink("/etc/passwd", _good(t) / "train" / "cat" / "x.png"), t / "good")[1],
                       "mine", None, "symbolic link"),
    "not an image": (lambda t: _with(_good(t), "train/cat/notes.txt", b"hello"), "mine", None, "not an image"),
    "does not decode": (lambda t: _with(_good(t), "train/cat/cut.png", _png()[:60]), "mine", None, "does not decode"),
    "one class": (lambda t: make_image_set(t / "one", classes={"cat": (200, 0, 0)}), "mine", None, "at least 2 classes"),
    "too few images": (lambda t: make_image_set(t / "few", n_train=3, n_test=1, classes={"a": (0, 0, 0), "b": (9, 9, 9)}),
                       "mine", None, "needs at least 5"),
    "image too large": (lambda t: _good(t), "mine", SourceLimits(max_image_bytes=100), "per image"),
    "too many pixels": (lambda t: _good(t), "mine", SourceLimits(max_image_pixels=1000), "pixels per image"),
    "archive too large": (lambda t: _zip(t / "a.zip", _good_entries()), "mine", SourceLimits(max_archive_bytes=1000),
                          "the archive is"),
    "too many files": (lambda t: _zip(t / "a.zip", _good_entries()), "mine", SourceLimits(max_files=5), "entries, over"),
    "zip bomb (declared)": (lambda t: _zip(t / "a.zip", {"train/cat/big.png": bytes(300_000), **_good_entries()}), "mine",
                            SourceLimits(max_total_bytes=200_000), "would unpack to"),
    "zip bomb (actual)": (lambda t: _declares_less(t / "a.zip"), "mine", None, "declares"),
    "name exists": (lambda t: _good(t), "digits", None, "already has a task"),
    "unsafe name": (lambda t: _good(t), "../x", None, "task name"),
    "clashing classes": (lambda t: make_image_set(t / "clash", classes={"a_b": (0, 0, 0), "a b": (250, 250, 250)}),
                         "mine", None, "both give the class name"),
    "train without test": (lambda t: (shutil.rmtree(_good(t) / "test"), t / "good")[1], "mine", None, "no test/"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_in_one_line_before_anything_is_written(case, demo_copy, tmp_path, workdir, monkeypatch,
                                                                     capsys):
    make, name, limits, words = BAD[case]
    source = make(tmp_path)
    if limits is not None:
        monkeypatch.setattr(imagesource, "DEFAULT_LIMITS", limits)
    manifest, before = (demo_copy / "manifest.json").read_bytes(), snapshot(demo_copy)
    capsys.readouterr()
    assert main(["add-task", str(demo_copy), name, str(source)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert (demo_copy / "manifest.json").read_bytes() == manifest and snapshot(demo_copy) == before
    assert not workdir.exists()


def test_library_refusals_raise_bad_source(tmp_path):
    with pytest.raises(BadSource, match="no such folder"):
        inspect_source(tmp_path / "missing")


def test_bad_input_for_a_shipped_cache_makes_no_work_copy(demo_copy, tmp_path, workdir, monkeypatch, capsys):
    monkeypatch.setattr(workcopy, "SHIPPED_DEMO", demo_copy.resolve())
    source = _zip(tmp_path / "a.zip", {"../evil.png": _png(), **_good_entries()})
    assert main(["add-task", str(demo_copy), "mine", str(source)]) == 2
    assert "outside the folder" in capsys.readouterr().err
    assert not workdir.exists()
