"""This user's record of verified files: a file whose sha256 matched, stamped with its size, mtime and
inode, is not hashed again by later processes until it changes (`info --verify` still checks all)."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

from .files import WriteError, atomic_write, sha256_file


RECENT_S = 2.0  # files changed this recently are hashed but not stamped (see file_sha256)
_RECORD_VERSION = 2
_record_unwritable = False


def _verified_record() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "tvexplorer" / "verified.json"


def read_record() -> dict:
    """This user's record of verified files: {"files": {resolved path: [size, mtime_ns, inode, sha256]},
    "folders": {resolved folder of a downloaded cache: sha256 of the manifest it was verified with}}."""
    try:
        record = json.loads(_verified_record().read_text())
    except (OSError, ValueError):
        record = {}
    if not isinstance(record, dict) or record.get("version") != _RECORD_VERSION:  # version 1 held folders only
        folders = {k: v for k, v in record.items() if isinstance(v, str)} if isinstance(record, dict) else {}
        record = {"version": _RECORD_VERSION, "files": {}, "folders": folders}
    return record


def _stat_key(path: str) -> list | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def remember(files: dict | None = None, folders: dict | None = None) -> None:
    """Add stamps to the record, dropping those that can no longer match (files changed or gone).

    The record only saves time: two processes that update it at once may lose a stamp (the file is
    hashed again), and one that cannot be written is a note, not an error."""
    global _record_unwritable
    record = read_record()
    record["files"].update(files or {})
    record["folders"].update(folders or {})
    record["files"] = {p: s for p, s in record["files"].items() if _stat_key(p) == s[:3]}
    record["folders"] = {f: d for f, d in record["folders"].items() if os.path.isdir(f)}
    text = json.dumps(record)
    try:
        atomic_write(_verified_record(), lambda tmp: tmp.write_text(text))
    except WriteError as e:
        if not _record_unwritable:
            print(f"note: {e}; files will be hashed again on their next use", file=sys.stderr, flush=True)
        _record_unwritable = True


def file_sha256(path: Path, trust_stamps: bool = True) -> str:
    """The sha256 of a file. With `trust_stamps`, taken from this user's record when the file is
    unchanged since it was hashed (same resolved path, size, mtime and inode), else hashed now and
    recorded. Caches replace files by renaming new ones into place, which changes the inode.

    A file changed less than RECENT_S before it is hashed is not recorded: file systems keep mtime in
    coarse ticks (FAT in 2 s), so a rewrite in the same tick could leave size and mtime as they were."""
    real = os.path.realpath(path)
    key = _stat_key(real)  # before hashing: a change while hashing then shows as a different stat
    if trust_stamps and key is not None:
        stamp = read_record()["files"].get(real)
        if stamp is not None and stamp[:3] == key:
            return stamp[3]
    digest = sha256_file(path)
    if key is not None and time.time() - key[1] / 1e9 > RECENT_S:
        remember(files={real: [*key, digest]})
    return digest


def verify_once(folder: Path, manifest: Path, verify: Callable[[], None]) -> None:
    """Run `verify` (a check of every file of a downloaded cache) once per manifest: a later open of the
    same download is then as cheap as a local one."""
    key, digest = str(folder.resolve()), sha256_file(manifest)
    if read_record()["folders"].get(key) == digest:
        return
    verify()
    remember(folders={key: digest})
