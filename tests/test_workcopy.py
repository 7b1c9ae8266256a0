"""Where work folders go on a Space now that Spaces have no persistent /data of their own, and a work copy on
a mount that takes no links (a Storage Bucket)."""
import os
import shutil
import tempfile
from pathlib import Path

from tvexplorer.core import workcopy
from tvexplorer.core.cache import Cache

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo"


def test_a_space_works_in_the_temp_folder_unless_told_otherwise(monkeypatch, tmp_path):
    monkeypatch.setenv("SPACE_ID", "someone/explorer")
    monkeypatch.delenv("TVEXPLORER_WORKDIR", raising=False)
    monkeypatch.setattr(os.path, "isdir", lambda p: True)  # even where a /data folder is there and writable
    monkeypatch.setattr(os, "access", lambda p, mode: True)
    assert workcopy.default_base() == Path(tempfile.gettempdir()) / "tvexplorer-work"
    monkeypatch.setenv("TVEXPLORER_WORKDIR", str(tmp_path / "bucket" / "tvexplorer-work"))
    assert workcopy.default_base() == tmp_path / "bucket" / "tvexplorer-work"


def test_a_mount_without_links_gets_copies(monkeypatch, tmp_path):
    source = tmp_path / "demo"
    shutil.copytree(DEMO, source)

    def refused(*args, **kwargs):
        raise OSError(1, "Operation not permitted")
    monkeypatch.setattr(os, "link", refused)
    monkeypatch.setattr(os, "symlink", refused)
    work = workcopy.make_work_copy(Cache.open(source), tmp_path / "bucket" / "work")
    big = [p for p in Path(work.root).rglob("*.safetensors") if p.stat().st_size > workcopy.SMALL_FILE]
    assert big and not [p for p in big if p.is_symlink() or p.stat().st_nlink > 1]
    for p in big:
        assert p.read_bytes() == (source / p.relative_to(work.root)).read_bytes()
    assert work.tasks == Cache.open(source).tasks
