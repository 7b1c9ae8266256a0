"""Where the app writes: the cache itself, or, for a read-only cache (the shipped demo, a hub snapshot, a
Space), a copy-on-write work folder made on first need (small files copied, tensor files linked; see
core/workcopy.py). ATM rounds, tuning records, the results table's rows and RegMean's Grams all go there,
never into a read-only cache."""
from __future__ import annotations

import threading
from pathlib import Path

from ..core import workcopy
from ..core.cache import Cache
from ..core.errors import CacheError
from ..core.manifest import MANIFEST


class Workspace:
    """The source cache and the cache the app writes to, re-opened when its manifest changes on disk."""

    def __init__(self, source: Cache, read_only: bool | None = None, workdir: Path | None = None):
        self.source = source
        self.read_only = (not workcopy.is_writable(source.root)) if read_only is None else bool(read_only)
        self.work_folder = workcopy.work_folder(source, workdir) if self.read_only else None
        self.root = Path(source.root)
        if self.work_folder is not None and workcopy.open_existing(self.work_folder) is not None:
            self.root = self.work_folder  # what an earlier session saved
        self._cache: Cache | None = source if self.root == Path(source.root) else None
        self._stamp = None
        self._lock = threading.Lock()

    @property
    def cache(self) -> Cache:
        """The cache holding what the app saved (and everything of the source)."""
        try:
            st = (self.root / MANIFEST).stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        with self._lock:
            if self._cache is None or stamp != self._stamp:
                first_look_at_source = self._cache is self.source and self._stamp is None
                if not first_look_at_source:
                    try:
                        self._cache = Cache.open(self.root)
                    except CacheError:
                        if self._cache is None:
                            raise
                self._stamp = stamp
            return self._cache

    def writable_root(self) -> Path:
        """The folder the app may write into, making the work copy on first need."""
        if self.read_only and self.root != self.work_folder:
            workcopy.make_work_copy(self.source, self.work_folder)
            with self._lock:
                self.root, self._cache, self._stamp = self.work_folder, None, None
        return self.root

    def writable_cache(self) -> Cache:
        self.writable_root()
        return self.cache

    def where_saved(self) -> str:
        if not self.read_only:
            return f"ATM rounds are saved into the cache itself: {self.root}"
        return (f"The cache {Path(self.source.root).resolve()} is treated as read-only; ATM rounds are saved to the "
                f"copy-on-write work folder {self.work_folder} (small files copied, tensor files linked; "
                "set TVEXPLORER_WORKDIR to choose another place).")
