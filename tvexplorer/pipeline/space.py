"""A Hugging Face Space made from this source checkout: the app, the package and one cache, pushed with
`huggingface_hub.upload_folder` (which stores binary files with LFS/Xet itself, so the hub's refusal of
plain binaries over 1 MB never comes up).

The Space gets its own README.md (the project's, under Space front matter: Gradio SDK at the version
requirements.txt pins, app.py, the suggested hardware) and its own requirements.txt:

- `cpu`: the project's pins, with torch's CPU-only wheels from download.pytorch.org instead of the
  CUDA build of over 2 GB that PyPI serves.
- `zerogpu`: ZeroGPU runs only the Python and torch versions the hub lists. Its documentation
  (https://huggingface.co/docs/hub/spaces-zerogpu, "Supported Versions", as stored in December 2026)
  says: Gradio 4+, PyTorch 2.1.0 to 2.8.0 (a listed set), Python 3.10.13. So the Space asks for Python
  3.10.13 and torch 2.8.0, and the pins that publish no Python 3.10 wheels are replaced by the newest
  releases that do (checked with `pip download --python-version 3.10`).

The cache goes to assets/demo, where app.py looks by default, so the Space needs no variables.
"""
from __future__ import annotations

import fnmatch
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.utils import validate_repo_id

from ..core.cache import Cache
from ..core.errors import first_line
from ..models.clip import LOCAL_DIR

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CODE = ("app.py", "tvexplorer", "docs", ".gitattributes")  # what the Space runs and shows, relative to the project root
CACHE_IN_SPACE = "assets/demo"
# Never uploaded: dot files (lock files, build state), bytecode. The staging folder holds none of them
# already; the patterns guard whatever the hub library would otherwise pick up.
IGNORE_PATTERNS = [".*", "**/.*", "**/.*/**", "__pycache__", "**/__pycache__/**", "*.pyc", "**/*.pyc"]
# Files of an earlier push that this one no longer has are deleted under these folders only.
DELETE_PATTERNS = ["tvexplorer/**", "assets/**"]
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
HARDWARE = {
    "cpu": {"suggested_hardware": "cpu-basic", "python_version": "3.11", "pins": {}},
    "zerogpu": {"suggested_hardware": "zero-a10g", "python_version": "3.10.13",
                "pins": {"torch": "2.8.0", "torchvision": "0.23.0", "numpy": "2.2.6", "pandas": "2.3.3",
                         "scikit-learn": "1.7.2"}},
}
LFS_ALWAYS_BYTES = 10_000_000  # the hub stores every file this large with LFS/Xet
LFS_BINARY_BYTES = 1_000_000   # and every binary file this large


@dataclass(frozen=True)
class PlannedFile:
    path: str                   # in the Space
    size: int
    lfs: bool
    source: Path | None = None  # a file to copy, or
    text: str | None = None     # generated content


def plan(cache: Cache, hardware: str = "cpu", root: Path = PROJECT_ROOT) -> list[PlannedFile]:
    """Every file the Space gets, in upload order."""
    if hardware not in HARDWARE:
        raise ValueError(f"unknown hardware {hardware!r}; choose one of: {', '.join(HARDWARE)}")
    if not (root / "app.py").is_file():
        raise ValueError(f"{root} is not a source checkout (no app.py beside the tvexplorer package); "
                         "clone the repository to make a Space from it")
    _check_self_contained(cache)
    patterns = lfs_patterns(root / ".gitattributes")
    files = [_generated("README.md", space_readme(root, hardware)),
             _generated("requirements.txt", space_requirements(root, hardware))]
    for name in CODE:
        files += [_copied(rel, path, patterns) for rel, path in _walk(root / name, name)]
    return files + [_copied(rel, path, patterns) for rel, path in _walk(Path(cache.root), CACHE_IN_SPACE)]


def _check_self_contained(cache: Cache) -> None:
    """The Space gets the cache folder only: a local-dir model must lie inside it."""
    name = cache.manifest.model.name
    if name.startswith(LOCAL_DIR):
        model = (Path(cache.root) / name[len(LOCAL_DIR):]).resolve()
        if not model.is_relative_to(Path(cache.root).resolve()):
            raise ValueError(f"the cache's model folder {model} lies outside the cache {cache.root}; copy it into the "
                             "cache and name it local-dir:<relative path> in the manifest, or the Space cannot load it")


def _generated(path: str, text: str) -> PlannedFile:
    return PlannedFile(path, len(text.encode()), False, text=text)


def _walk(path: Path, rel: str):
    """(path in the Space, file) under `path`, skipping dot files and bytecode at any depth."""
    if path.is_file():
        yield rel, path
        return
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        for name in sorted(filenames):
            if not name.startswith(".") and not name.endswith(".pyc"):
                full = Path(dirpath) / name
                yield f"{rel}/{full.relative_to(path).as_posix()}", full


def _copied(rel: str, path: Path, patterns: list[str]) -> PlannedFile:
    size = path.stat().st_size
    return PlannedFile(rel, size, stored_with_lfs(path, size, patterns), source=path)


def lfs_patterns(gitattributes: Path) -> list[str]:
    if not gitattributes.is_file():
        return []
    return [line.split()[0] for line in gitattributes.read_text().splitlines()
            if "filter=lfs" in line and not line.lstrip().startswith("#")]


def stored_with_lfs(path: Path, size: int, patterns: list[str]) -> bool:
    """Whether the hub stores this file with LFS/Xet: .gitattributes says so, or its size and content do."""
    if any(fnmatch.fnmatch(path.name, p) for p in patterns) or size > LFS_ALWAYS_BYTES:
        return True
    return size > LFS_BINARY_BYTES and is_binary(path)


def is_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\0" in f.read(8192)


def pinned(requirements: str, package: str) -> str | None:
    found = re.search(rf"^{re.escape(package)}==(\S+)", requirements, re.MULTILINE)
    return found[1] if found else None


def space_requirements(root: Path, hardware: str) -> str:
    source = (root / "requirements.txt").read_text()
    pins = HARDWARE[hardware]["pins"]
    lines = [f"# written by `python -m tvexplorer space --hardware {hardware}` from the project's requirements.txt"]
    if hardware == "cpu":
        lines += ["# torch's CPU-only wheels, not PyPI's CUDA build", f"--extra-index-url {PYTORCH_CPU_INDEX}"]
    else:
        lines += ["# ZeroGPU's supported Python and torch versions: https://huggingface.co/docs/hub/spaces-zerogpu"]
    for line in source.splitlines():
        name, sep, version = line.partition("==")
        if not sep or line.startswith("#"):
            continue
        version = pins.get(name, version)
        if hardware == "cpu" and name in ("torch", "torchvision"):
            version += "+cpu"
        lines.append(f"{name}=={version}")
    return "\n".join(lines) + "\n"


def space_readme(root: Path, hardware: str) -> str:
    """The project README under Space front matter (its own front matter's keys, overridden)."""
    text = (root / "README.md").read_text()
    front, body = {}, text
    match = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    if match:
        front = dict(line.split(":", 1) for line in match[1].splitlines() if ":" in line)
        front = {k.strip(): v.strip() for k, v in front.items()}
        body = text[match.end():]
    gradio = pinned((root / "requirements.txt").read_text(), "gradio")
    if gradio is None:
        raise ValueError(f"{root / 'requirements.txt'} pins no gradio version (gradio==X), which the Space's sdk_version needs")
    setup = HARDWARE[hardware]
    front.update({"sdk": "gradio", "sdk_version": gradio, "python_version": f'"{setup["python_version"]}"',
                  "app_file": "app.py", "suggested_hardware": setup["suggested_hardware"]})
    return "---\n" + "".join(f"{k}: {v}\n" for k, v in front.items()) + "---\n" + body


def stage(files: list[PlannedFile], folder: Path) -> None:
    """Lay the planned files out in `folder`: hard links where the file system allows, else copies."""
    for f in files:
        target = folder / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if f.text is not None:
            target.write_text(f.text)
            continue
        try:
            os.link(f.source, target)
        except OSError:
            shutil.copy2(f.source, target)


def push(repo_id: str, files: list[PlannedFile], folder: Path) -> str:
    """Create the Space if needed and upload the staged `folder` with one upload_folder call; returns the Space's URL."""
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="space", space_sdk="gradio", exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="space",
                          ignore_patterns=IGNORE_PATTERNS, delete_patterns=DELETE_PATTERNS,
                          commit_message=f"tvexplorer: app, package and cache ({len(files)} files)")
    except Exception as e:  # the hub's errors: no token, no rights, network
        raise ValueError(f"could not push to the Space {repo_id}: {first_line(e)} (log in with `hf auth login` or set HF_TOKEN)") from None
    return f"https://huggingface.co/spaces/{repo_id}"


def check_space_id(repo_id: str) -> str:
    if repo_id.count("/") != 1:
        raise ValueError(f"expected a Space id ORG/NAME, got {repo_id!r}")
    validate_repo_id(repo_id)  # raises a one-line ValueError for bad characters
    return repo_id


def make_space(repo_id: str, cache: Cache, hardware: str = "cpu", dry_run: bool = False) -> dict:
    """Plan the Space's files and, unless `dry_run`, stage them in a temporary folder and push them."""
    check_space_id(repo_id)
    files = plan(cache, hardware)
    summary = {"space": repo_id, "hardware": hardware, "dry_run": dry_run, "cache": str(cache.root),
               "files": [{"path": f.path, "size": f.size, "lfs": f.lfs} for f in files],
               "total_bytes": sum(f.size for f in files), "url": None}
    if not dry_run:
        with tempfile.TemporaryDirectory(prefix="tvexplorer-space-") as folder:
            stage(files, Path(folder))
            summary["url"] = push(repo_id, files, Path(folder))
    return summary
