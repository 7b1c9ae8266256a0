"""The undo record of an added task, and `remove_task`, which uses it (pipeline/addtask.py adds).

Before add-task changes a manifest, the manifest as it was and every file the change replaces or
drops are kept under added/<task>/ (hard links where possible), listed in the manifest like any
file, and the manifest's added-task record (core.additions.AddedTask) names them. Removing the task
puts them back, deletes every file the cache gained since, and writes the old manifest's bytes back:
the cache is then byte for byte what it was before the task was added.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from ..core.cache import Cache
from ..core.files import atomic_write, sha256_file
from ..core.manifest import MANIFEST, Manifest
from ..data.imagesource import BadSource

UNDO = "added"               # added/<task>/: the manifest before <task> and the files it replaced or dropped
WORK = ".addtask"            # .addtask/<task>/: a fine-tuned task not yet in the manifest (hidden: work copies skip it)


def link_file(src: Path, dst: Path) -> None:
    """dst becomes the same file as src: a hard link, the same symbolic link (a work copy's link to a
    file elsewhere), or a copy where neither can be made."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def remove_empty(root: Path, folders: list[Path]) -> None:
    """Remove each folder and its parents up to (not including) root while they are empty."""
    for folder in folders:
        while folder != root and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent


def reread(cache: Cache) -> None:
    """Make `cache` use the manifest now on disk (taking the writer lock again, which this thread holds)."""
    with cache.writing():
        pass


def remove_task(cache: Cache, name: str) -> dict:
    """Undo `add_task`: the files it replaced or set aside come back, everything the cache gained
    since goes, and the manifest is again the one before, byte for byte."""
    root = cache.root
    with cache.writing():
        added = cache.manifest.added_tasks
        if name not in cache.tasks:
            raise BadSource(f"task {name!r} is not in {root}; its tasks: {', '.join(cache.tasks)}")
        if name not in added:
            raise BadSource(f"task {name!r} was built with the cache, not added with add-task; only added tasks "
                            f"can be removed ({', '.join(added) or 'none here'})")
        later = list(added)[list(added).index(name) + 1:]
        if later:
            raise BadSource(f"task {name!r} was added before {', '.join(later)}; remove {later[-1]} first "
                            "(added tasks come off in the reverse order)")
        record = added[name]
        previous_bytes = (root / record.undo).read_bytes()
        if hashlib.sha256(previous_bytes).hexdigest() != cache.manifest.files[record.undo].sha256:
            raise BadSource(f"{record.undo}: changed since {name} was added; the cache cannot be restored from it")
        previous = Manifest.from_json(json.loads(previous_bytes))
        for rel, aside in record.set_aside.items():
            expected = previous.files[rel].sha256
            if (root / aside).exists() or (root / aside).is_symlink():
                if sha256_file(root / aside) != expected:
                    raise BadSource(f"{aside}: changed since {name} was added; the cache cannot be restored from it")
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(root / aside, root / rel)
            elif not ((root / rel).is_file() and sha256_file(root / rel) == expected):
                raise BadSource(f"{aside}: missing, so {rel} cannot be restored; rebuild the cache")
        gained = [rel for rel in cache.manifest.files if rel not in previous.files]
        atomic_write(root / MANIFEST, lambda tmp: tmp.write_bytes(previous_bytes))
        reread(cache)
        for rel in gained:
            (root / rel).unlink(missing_ok=True)
        shutil.rmtree(root / WORK / name, ignore_errors=True)
        remove_empty(root, [(root / rel).parent for rel in gained] + [root / WORK])
    return {"cache": str(root), "removed": name, "tasks": cache.tasks, "restored": sorted(record.set_aside),
            "deleted": sorted(gained)}
