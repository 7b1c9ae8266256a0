"""The cache folder: round trip, memory mapping, atomic writes, clear errors on bad input, a manifest
that points outside its folder, and the record of verified files."""
import json
import os
import time
from pathlib import Path

import pytest
import torch

from tvexplorer.core.cache import Cache
from tvexplorer.core.errors import CacheError
from tvexplorer.core.files import atomic_write, mmap_tensors, write_tensors
from tvexplorer.core.manifest import MANIFEST


def test_open_reads_manifest_and_maps_vectors(quick_demo):
    cache = Cache.open(quick_demo)
    assert cache.tasks == ["digits", "signs", "textures"]
    tau = cache.vector("digits", "tau")
    assert tau.shape == (cache.layout.numel,) and tau.dtype == torch.float32
    assert cache.base().shape == tau.shape
    heads, scale = cache.heads()
    assert heads["signs"].shape[1] == len(cache.manifest.task("signs").classnames)
    assert scale > 0
    split = cache.eval_split("textures")
    assert split.images.dtype == torch.uint8 and len(split) == cache.manifest.task("textures").sizes.test
    cache.verify()


def test_vectors_are_memory_mapped_copy_on_write(quick_demo, tmp_path):
    rel = "x.safetensors"
    write_tensors(tmp_path, rel, {"v": torch.arange(10, dtype=torch.float32)})
    t = mmap_tensors(tmp_path / rel, rel)["v"]
    t += 1  # a private page: the file must not change
    assert torch.equal(mmap_tensors(tmp_path / rel, rel)["v"], torch.arange(10, dtype=torch.float32))


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip":
        path.write_bytes(data[:-8] + bytes(b ^ 0xFF for b in data[-8:]))


def test_missing_file_is_named(demo_copy):
    (demo_copy / "vectors" / "signs.safetensors").unlink()
    with pytest.raises(CacheError, match=r"vectors/signs.safetensors: missing"):
        Cache.open(demo_copy)


def test_truncated_file_is_named(demo_copy):
    _damage(demo_copy / "vectors" / "digits.safetensors", "truncate")
    with pytest.raises(CacheError, match=r"vectors/digits.safetensors: truncated"):
        Cache.open(demo_copy)


def test_hash_mismatch_is_named_on_first_use(demo_copy):
    _damage(demo_copy / "vectors" / "textures.safetensors", "flip")
    cache = Cache.open(demo_copy)  # sizes still agree: opening stays cheap
    cache.vector("digits")
    with pytest.raises(CacheError, match=r"vectors/textures.safetensors: sha256 does not match"):
        cache.vector("textures")


def test_unknown_schema_version(demo_copy):
    manifest = json.loads((demo_copy / MANIFEST).read_text())
    manifest["schema_version"] = 99
    (demo_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="schema version 99"):
        Cache.open(demo_copy)


def test_shapes_that_do_not_match_the_base_model(demo_copy):
    manifest = json.loads((demo_copy / MANIFEST).read_text())
    rel = "vectors/signs.safetensors"
    manifest["files"][rel] = write_tensors(demo_copy, rel, {k: torch.zeros(7) for k in ("tau", "tau1", "g0")}).to_json()
    (demo_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match=r"vectors/signs.safetensors: (tau|tau1|g0) has shape \(7,\)"):
        Cache.open(demo_copy)


def test_not_a_cache(tmp_path):
    with pytest.raises(CacheError, match="missing"):
        Cache.open(tmp_path)
    with pytest.raises(CacheError, match="no such cache folder"):
        Cache.open(tmp_path / "nope")
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(CacheError, match="not valid JSON"):
        Cache.open(tmp_path)


def test_interrupted_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def crash(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, crash)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]  # no temporary file left behind


def test_interrupted_atm_round_keeps_the_cache_loadable(demo_copy, monkeypatch):
    cache = Cache.open(demo_copy)
    before = json.loads((demo_copy / MANIFEST).read_text())
    import tvexplorer.core.cache as cache_module

    def crash(root, manifest):
        raise KeyboardInterrupt  # killed after the round's file, before the manifest
    monkeypatch.setattr(cache_module, "write_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.add_atm_round("standard", {}, next_round(cache, "standard"), torch.zeros(cache.layout.numel))
    reopened = Cache.open(demo_copy)
    assert reopened.manifest.to_json() == before
    assert len(reopened.manifest.atm_rounds("standard")) == len(before["atm"]["standard"]["rounds"])


def next_round(cache: Cache, variant: str) -> dict:
    """What run_atm records for a round (here: the last saved one's numbers again), but its number and file."""
    last = cache.manifest.atm_rounds(variant)[-1].to_json()
    return {k: v for k, v in last.items() if k not in ("round", "file")}


# ---------------------------------------------------------------- a manifest that points outside its folder

@pytest.mark.parametrize("rel", ["../../etc/hostname", "/etc/hostname", "a/../../x"])
def test_files_outside_the_cache_folder_are_refused_before_they_are_touched(demo_copy, rel, monkeypatch):
    manifest = json.loads((demo_copy / MANIFEST).read_text())
    manifest["files"][rel] = {"size": 1, "sha256": "0" * 64}
    (demo_copy / MANIFEST).write_text(json.dumps(manifest))
    looked_at = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **kw: looked_at.append(os.fspath(path)) or real_stat(path, *a, **kw))
    with pytest.raises(CacheError) as refused:
        Cache.open(demo_copy)
    assert repr(rel) in str(refused.value) and "not inside the cache folder" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not [p for p in looked_at if p.endswith(rel.rpartition("/")[2])]  # refused before any stat


def test_a_symlink_to_a_file_elsewhere_still_opens(demo_copy, tmp_path):
    """As in a Hugging Face hub snapshot, whose files are links into the hub's blob store."""
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for rel in ("vectors/digits.safetensors", "heads.safetensors"):
        blob = blobs / rel.replace("/", "-")
        (demo_copy / rel).rename(blob)
        (demo_copy / rel).symlink_to(blob)
    cache = Cache.open(demo_copy)
    assert cache.vector("digits").shape == (cache.layout.numel,)
    cache.verify()


# ---------------------------------------------------------------- verified stamps

@pytest.fixture
def hash_counter(tmp_path, monkeypatch):
    """The files that sha256_file hashes, with a private record of verified files."""
    import tvexplorer.core.stamps as stamps_module
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    hashed = []
    real = stamps_module.sha256_file
    monkeypatch.setattr(stamps_module, "sha256_file", lambda path: hashed.append(Path(path).name) or real(path))
    return hashed


def _written_earlier(path):
    """Files are stamped only when they did not change in the last RECENT_S seconds."""
    hour_ago = time.time() - 3600
    os.utime(path, (hour_ago, hour_ago))


def test_a_verified_file_is_not_hashed_again_until_it_changes(demo_copy, hash_counter):
    path = demo_copy / "vectors" / "signs.safetensors"
    _written_earlier(path)
    Cache.open(demo_copy).vector("signs")
    assert hash_counter == ["signs.safetensors"]
    Cache.open(demo_copy).vector("signs")  # another opening, as in a later process
    assert hash_counter == ["signs.safetensors"]

    _damage(path, "flip")  # same size, new mtime
    with pytest.raises(CacheError, match=r"vectors/signs.safetensors: sha256 does not match"):
        Cache.open(demo_copy).vector("signs")
    assert hash_counter == ["signs.safetensors"] * 2


def test_verify_hashes_every_file_whatever_the_stamps(demo_copy, hash_counter):
    cache = Cache.open(demo_copy)
    for rel in cache.manifest.files:
        _written_earlier(demo_copy / rel)
    cache.verify()
    hash_counter.clear()
    Cache.open(demo_copy).verify()
    assert sorted(hash_counter) == sorted(Path(rel).name for rel in cache.manifest.files)


def test_a_file_changed_just_before_it_was_hashed_is_not_stamped(demo_copy, hash_counter):
    path = demo_copy / "vectors" / "digits.safetensors"
    os.utime(path)  # now: a rewrite in the same clock tick could leave size and mtime unchanged
    Cache.open(demo_copy).vector("digits")
    Cache.open(demo_copy).vector("digits")
    assert hash_counter == ["digits.safetensors"] * 2


def test_a_process_forked_while_another_thread_reads_the_cache_can_read_it_too(quick_demo):
    """A ZeroGPU call runs in a process forked from the app, perhaps while another thread holds a cache's lock
    (reading and hash-checking a file): the child must not wait for a thread that does not exist there."""
    import os
    import signal
    import threading
    cache = Cache.open(quick_demo)
    held, release = threading.Event(), threading.Event()

    def hold():
        with cache._lock:
            held.set()
            release.wait()
    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    pid = os.fork()
    if pid == 0:  # the child: read a file through the cache, or be killed after 20 s
        signal.alarm(20)
        os._exit(0 if len(cache.eval_split(cache.tasks[0])) > 0 else 1)
    release.set()
    holder.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
