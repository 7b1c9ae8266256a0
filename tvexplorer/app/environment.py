"""Where the app runs, and what follows from it: which cache it opens by default, when it treats the cache
as read-only, and where it evaluates."""
from __future__ import annotations

import os
from pathlib import Path

from ..core.hub import resolve_location
from ..core.workcopy import SHIPPED_DEMO as DEMO
from ..core.workcopy import protected


def on_zero_gpu() -> bool:
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")


def default_cache_path() -> Path | str:
    """$TVEXPLORER_CACHE (a folder, or hf://... for resolve_location), else the demo cache committed with
    the repository (assets/demo)."""
    return os.environ.get("TVEXPLORER_CACHE") or DEMO


def policy(path: Path, read_only: bool | None = None, device: str | None = None) -> dict:
    """read_only and device for the cache at `path`: a cache that workcopy.protected names (the bundled
    demo, any cache on a Hugging Face Space or when $TVEXPLORER_READ_ONLY=1, a folder that cannot be
    written) is read-only, so that the app never changes files under version control; on ZeroGPU
    evaluation stays on the CPU (the GPU is lent only inside @spaces.GPU calls)."""
    if read_only is None and protected(path):
        read_only = True
    if device is None and on_zero_gpu():
        device = "cpu"
    return {"read_only": read_only, "device": device}


def location(path=None) -> Path:
    return resolve_location(path or default_cache_path())
