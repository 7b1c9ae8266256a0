"""Caches on the Hugging Face Hub: `hf://[datasets/]ORG/REPO[/SUBFOLDER][@REVISION]` is downloaded
into the hub's own cache folder, verified once per manifest, and used offline when the network fails."""
from __future__ import annotations

import sys
from pathlib import Path

from .cache import Cache
from .errors import CacheError, described
from .manifest import MANIFEST
from .stamps import verify_once

HF_PREFIX = "hf://"


class HubUnavailable(ValueError):
    """A repository that could not be downloaded and was not downloaded before either."""


def fetch_snapshot(repo_id: str, label: str, **where) -> Path:
    """`huggingface_hub.snapshot_download(repo_id, **where)`: files already complete in the hub's cache
    folder are not fetched again (huggingface_hub resumes a dropped connection within a run; a file cut
    off by an interrupted run starts again); without a network (or when the hub refuses), the copy
    downloaded earlier is used and a line on stderr says so. `label` names the download in messages."""
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(repo_id, **where))
    except Exception as e:  # network, authentication, unknown repository
        reason = described(e)
        try:
            local = snapshot_download(repo_id, local_files_only=True, **where)
        except Exception:
            raise HubUnavailable(f"{label}: could not download {repo_id} ({reason}), and no copy was downloaded before") from None
    print(f"note: {label}: offline ({reason}); using the copy of {repo_id} downloaded earlier at {local}", file=sys.stderr, flush=True)
    return Path(local)


def resolve_location(location) -> Path:
    """A cache folder from a path, or from `hf://[datasets/]ORG/REPO[/SUBFOLDER][@REVISION]`: downloaded
    with huggingface_hub into its cache folder and verified against the manifest; offline, the copy
    downloaded earlier is used, and a line on stderr says so."""
    text = str(location)
    if not text.startswith(HF_PREFIX):
        return Path(text).expanduser()
    rest, _, revision = text[len(HF_PREFIX):].partition("@")
    repo_type = "model"
    for prefix, kind in (("datasets/", "dataset"), ("spaces/", "space"), ("models/", "model")):
        if rest.startswith(prefix):
            repo_type, rest = kind, rest[len(prefix):]
    parts = [p for p in rest.split("/") if p]
    if len(parts) < 2:
        raise CacheError(f"{text}: expected hf://[datasets/]ORG/REPO[/SUBFOLDER][@REVISION]")
    repo_id, sub = "/".join(parts[:2]), "/".join(parts[2:])
    where = dict(repo_type=repo_type, revision=revision or None, allow_patterns=[f"{sub}/**"] if sub else None)
    try:
        local = fetch_snapshot(repo_id, text, **where)
    except HubUnavailable as e:
        raise CacheError(str(e)) from None
    folder = Path(local) / sub if sub else Path(local)
    verify_once(folder, folder / MANIFEST, lambda: Cache.open(folder).verify())
    return folder
