"""Copy-on-write work folders for caches that the app must not write into.

A Space's files, a read-only mount or the bundled demo stay untouched: new ATM rounds go to a work
folder that holds a copy of the manifest and of every small file, and hard links (or, across file
systems, symbolic links; on a mount that has neither, copies) to the large tensor files. The cache code never writes into an existing
file (it writes a temporary file and renames it into place), so a linked file is never changed.

The folder's name is derived from the source folder and the exact files its manifest lists, so a
restarted app finds the rounds it saved before, and a changed source gets a fresh folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from .cache import Cache
from .errors import CacheError
from .files import WriteError
from .manifest import MANIFEST

SMALL_FILE = 1 << 20          # files up to this size are copied, larger ones linked
MARKER = ".tvexplorer-workcopy.json"
SHIPPED_DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo"  # under version control


def is_writable(root: Path) -> bool:
    """Whether new files can be created in `root` (tried, not guessed from permission bits).

    A manifest that is a symbolic link (a Hugging Face hub snapshot, for example) counts as
    read-only: the link target belongs to someone else's store."""
    root = Path(root)
    if (root / MANIFEST).is_symlink():
        return False
    try:
        fd, probe = tempfile.mkstemp(dir=root, prefix=".tvexplorer-write-probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def protected(root: Path) -> str | None:
    """Why the cache at `root` must not be written, or None when it may be: the demo shipped with the
    code, any cache on a Hugging Face Space or while $TVEXPLORER_READ_ONLY is set, a folder that
    cannot be written. The app and the commands that record results write into a work copy instead."""
    if Path(root).resolve() == SHIPPED_DEMO:
        return "the shipped demo"
    if os.environ.get("SPACE_ID"):
        return "on a Hugging Face Space"
    if os.environ.get("TVEXPLORER_READ_ONLY", "").lower() in ("1", "true", "yes"):
        return "read-only ($TVEXPLORER_READ_ONLY)"
    if not is_writable(root):
        return "read-only"
    return None


def default_base() -> Path:
    """Where work folders live: $TVEXPLORER_WORKDIR, else the temp dir. Spaces have no persistent disk of
    their own any more: to keep work across restarts, mount a Storage Bucket and point
    TVEXPLORER_WORKDIR into it (`python -m tvexplorer space --bucket` does both)."""
    env = os.environ.get("TVEXPLORER_WORKDIR")
    if env:
        return Path(env).expanduser()
    return Path(tempfile.gettempdir()) / "tvexplorer-work"


def work_folder(source: Cache, base: Path | None = None) -> Path:
    """The work folder for `source` under `base` (not created)."""
    root = Path(source.root).resolve()
    files = json.dumps({rel: e.to_json() for rel, e in source.manifest.files.items()}, sort_keys=True)
    key = hashlib.sha256((str(root) + "\n" + files).encode()).hexdigest()[:12]
    return Path(base or default_base()) / f"{root.name or 'cache'}-{key}"


def open_existing(folder: Path) -> Cache | None:
    """A work copy made earlier, or None when there is none (or it is unreadable)."""
    if not (folder / MARKER).is_file():
        return None
    try:
        return Cache.open(folder)
    except CacheError:
        return None


def _link_or_copy(src: Path, dst: Path) -> None:
    if src.stat().st_size <= SMALL_FILE:
        shutil.copy2(src, dst)
        return
    target = src.resolve()
    try:
        os.link(target, dst)
    except OSError:  # another file system, or hard links to others' files not allowed
        try:
            os.symlink(target, dst)
        except OSError:  # a mount without links (a Storage Bucket, for one)
            shutil.copy2(target, dst)


def make_work_copy(source: Cache, folder: Path) -> Cache:
    """Open the work copy of `source` at `folder`, making it first if needed; a file that cannot be
    written (a full disk) raises WriteError and leaves no half-made copy."""
    folder = Path(folder)
    existing = open_existing(folder)
    if existing is not None:
        return existing
    if folder.exists():
        if not (folder / MARKER).is_file():
            raise CacheError(f"{folder}: exists and is not a tvexplorer work folder; choose another TVEXPLORER_WORKDIR")
        shutil.rmtree(folder)  # our own, unreadable work copy: start again
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    except OSError as e:
        raise WriteError.of(folder, e) from e
    try:
        src_root = Path(source.root)
        for dirpath, dirnames, filenames in os.walk(src_root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = Path(dirpath).relative_to(src_root)
            (tmp / rel_dir).mkdir(parents=True, exist_ok=True)
            for name in filenames:
                if name.startswith(".") or (rel_dir == Path(".") and name == MANIFEST):
                    continue
                _link_or_copy(Path(dirpath) / name, tmp / rel_dir / name)
        (tmp / MARKER).write_text(json.dumps({"source": str(src_root.resolve()), "created": time.time()}))
        shutil.copy2(src_root / MANIFEST, tmp / MANIFEST)  # last: the copy is complete once it is there
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process made it meanwhile
            if open_existing(folder) is None:
                raise
    except OSError as e:
        # shutil's fast copy names the source in `filename` and the file it was writing in `filename2`
        raise WriteError.of(Path(e.filename2 or e.filename or folder), e) from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Cache.open(folder)
